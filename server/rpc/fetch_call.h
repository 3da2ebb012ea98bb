// Fetch.BatchFetch and Fetch.StreamBatchFetch: one call-state object per
// RPC (internal to rpc/). Both run a BatchPlan through a BatchDriver; they
// differ only in where a finished item goes (the unary response, or the
// stream).
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
#include "server/rpc/call.h"
#include "server/rpc/fetch_plan.h"

namespace fetchd::rpc {

// What every fetch call needs from the server.
struct FetchServices {
  v1::Fetch::AsyncService* service;
  fetch::Engine* engine;
  process::ProcessRunner* processor;
  const FetchConfig* config;
};

// One finished item before conversion: the fetch result and, when a
// processor ran, its output.
struct ItemOutcome {
  uint32_t index = 0;
  const std::string* url = nullptr;  // owned by the driver, outlives the call
  fetch::FetchResult result;
  std::optional<absl::StatusOr<std::string>> processed;
  bool body_over_budget = false;  // --max_response_bytes: send no body

  // The item's status: the fetch's, else the processor's.
  absl::Status status() const;
  // Into the API's FetchResult. Returns what the message holds against the
  // memory budget (the body's bytes are released when it is dropped).
  memory::Reservation ToProto(bool drop_body, v1::FetchResult* out) &&;
};

// Counts a processor's `output` in the result's reservation; when the
// memory budget has no room for it, it becomes RESOURCE_EXHAUSTED naming
// the budget (and is freed).
void HoldProcessed(fetch::FetchResult& result,
                   absl::StatusOr<std::string>& output);

// Runs one plan: rejected items first, then the engine's results, each
// processed if asked and handed to `deliver` exactly once per item. `deliver`
// may run on the caller's thread, the engine's I/O thread or a worker, possibly
// concurrently; `finished` runs once, after the last `deliver` returned.
class BatchDriver {
 public:
  using Deliver = absl::AnyInvocable<void(ItemOutcome)>;
  using Finished = absl::AnyInvocable<void()>;

  explicit BatchDriver(const FetchServices& services) : services_(services) {}

  void Start(BatchPlan plan, Deliver deliver, Finished finished);
  // Cancels the engine's part (the rest still reports, as CANCELLED).
  void Cancel();

 private:
  void OnFetched(size_t spec_index, fetch::FetchResult result);
  void Complete(ItemOutcome outcome);

  const FetchServices services_;
  BatchPlan plan_;
  Deliver deliver_;
  Finished finished_;
  std::vector<std::string> url_of_spec_;  // the item URLs, for results
  std::vector<std::string> url_of_rejected_;
  std::atomic<size_t> remaining_{0};
  std::shared_ptr<fetch::BatchHandle> handle_;
};

// What both fetch RPCs share: plan the request, run it through a
// BatchDriver, cancel it with the client, and with fail_fast end on the
// first failure. `Base` is UnaryCall or ServerStreamCall; both offer
// Finish(grpc::Status) from any thread.
template <typename Base>
class FetchCall : public Base {
 public:
  FetchCall(const FetchServices& services, CqLoop* loop)
      : Base(loop), services_(services), driver_(services) {}

 protected:
  // A finished item, on any thread (see BatchDriver).
  virtual void OnResult(ItemOutcome outcome) = 0;
  // Before the first result: the planned batch.
  virtual void OnPlanned(const BatchPlan& /*plan*/) {}

  // With fail_fast, records the first real failure. Returns false for a
  // result that comes after it (the rest were cancelled because of it).
  bool NoteFailure(const ItemOutcome& outcome) ABSL_LOCKS_EXCLUDED(mu_);
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

  BatchDriver driver_;
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
  void OnPlanned(const BatchPlan& plan) override;
  void OnResult(ItemOutcome outcome) override ABSL_LOCKS_EXCLUDED(response_mu_);

  absl::Mutex response_mu_;  // results arrive on several threads
  int64_t body_bytes_ ABSL_GUARDED_BY(response_mu_) = 0;
  // The response's bytes against the memory budget, released with the call
  // (after the response is sent).
  memory::Reservation held_ ABSL_GUARDED_BY(response_mu_);
};

class StreamBatchFetchCall final
    : public FetchCall<
          ServerStreamCall<v1::BatchFetchRequest, v1::FetchResult>> {
 public:
  using FetchCall::FetchCall;

 private:
  void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) override;
  void Spawn() override;
  absl::string_view method() const override { return "Fetch.StreamBatchFetch"; }
  void OnResult(ItemOutcome outcome) override;
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_FETCH_CALL_H_
