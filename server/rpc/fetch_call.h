// Fetch.BatchFetch and Fetch.StreamBatchFetch: one call-state object per
// RPC (internal to rpc/). Both run a request::BatchPlan through a
// request::BatchDriver (server/request/); they differ only in where a
// finished item goes (the unary response, or the stream).
#ifndef FETCHD_SERVER_RPC_FETCH_CALL_H_
#define FETCHD_SERVER_RPC_FETCH_CALL_H_

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fetchd/v1/fetch.grpc.pb.h"
#include "server/fetch/fetch.h"
#include "server/process/process.h"
#include "server/request/request.h"
#include "server/rpc/call.h"

namespace fetchd::rpc {

// What every fetch call needs from the server: its gRPC service, and what
// running the request needs (the same for a job, without gRPC).
struct FetchServices {
  v1::Fetch::AsyncService* service;
  request::Services request;
};

// What both fetch RPCs share: plan the request, run it through a
// request::BatchDriver, cancel it with the client, and with fail_fast end on
// the first failure. `Base` is UnaryCall or ServerStreamCall; both offer
// Finish(grpc::Status) from any thread.
template <typename Base>
class FetchCall : public Base {
 public:
  FetchCall(const FetchServices& services, CqLoop* loop)
      : Base(loop), services_(services), driver_(services.request) {}

 protected:
  // A finished item, on any thread (see request::BatchDriver).
  virtual void OnResult(request::ItemOutcome outcome) = 0;
  // Before the first result: the planned batch.
  virtual void OnPlanned(const request::BatchPlan& /*plan*/) {}

  // With fail_fast, records the first real failure. Returns false for a
  // result that comes after it (the rest were cancelled because of it).
  bool NoteFailure(const request::ItemOutcome& outcome)
      ABSL_LOCKS_EXCLUDED(mu_);
  bool drop_body() const { return drop_body_; }

  const FetchServices services_;

 private:
  int64_t items() const override { return this->request_.items_size(); }
  int64_t retries() const override {
    return retries_.load(std::memory_order_relaxed);
  }
  void OnStart() override;
  void OnCancel() override { driver_.Cancel(); }
  void OnAllDone() ABSL_LOCKS_EXCLUDED(mu_);

  request::BatchDriver driver_;
  std::atomic<int64_t> retries_{0};  // summed over the items' attempts
  bool fail_fast_ = false;           // set in OnStart, before any result
  bool drop_body_ = false;
  absl::Mutex mu_;
  absl::Status first_failure_ ABSL_GUARDED_BY(mu_);
};

class BatchFetchCall final
    : public FetchCall<
          UnaryCall<v1::BatchFetchRequest, v1::BatchFetchResponse>> {
 public:
  using FetchCall::FetchCall;

 private:
  void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) override;
  void Spawn() override;
  absl::string_view method() const override { return "Fetch.BatchFetch"; }
  void OnPlanned(const request::BatchPlan& plan) override;
  void OnResult(request::ItemOutcome outcome) override
      ABSL_LOCKS_EXCLUDED(response_mu_);

  absl::Mutex response_mu_;  // results arrive on several threads
  int64_t body_bytes_ ABSL_GUARDED_BY(response_mu_) = 0;
  // The response's bytes against the memory budget, released with the call
  // (after the response is sent).
  memory::Reservation held_ ABSL_GUARDED_BY(response_mu_);
};

class StreamBatchFetchCall final
    : public FetchCall<ServerStreamCall<v1::StreamBatchFetchRequest,
                                        v1::StreamBatchFetchResponse>> {
 public:
  using FetchCall::FetchCall;

 private:
  void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) override;
  void Spawn() override;
  absl::string_view method() const override { return "Fetch.StreamBatchFetch"; }
  void OnResult(request::ItemOutcome outcome) override;
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_FETCH_CALL_H_
