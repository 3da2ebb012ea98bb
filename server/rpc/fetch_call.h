// Fetch.BatchFetch and Fetch.StreamBatchFetch: one call-state object per
// RPC (internal to rpc/). Both run a BatchPlan through a BatchDriver; they
// differ only in where a finished item goes (the unary response, or the
// stream).
#ifndef FETCHD_SERVER_RPC_FETCH_CALL_H_
#define FETCHD_SERVER_RPC_FETCH_CALL_H_

#include <atomic>
#include <memory>

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

// Runs one plan: rejected items first, then the engine's results, each
// processed if asked, converted, and handed to `deliver` exactly once per
// item. `deliver` may run on the caller's thread, the engine's I/O thread or
// a worker, possibly concurrently; `finished` runs once, after the last
// `deliver` returned.
class BatchDriver {
 public:
  using Deliver = absl::AnyInvocable<void(v1::FetchResult)>;
  using Finished = absl::AnyInvocable<void()>;

  explicit BatchDriver(const FetchServices& services) : services_(services) {}

  void Start(BatchPlan plan, Deliver deliver, Finished finished);
  // Cancels the engine's part (the rest still reports, as CANCELLED).
  void Cancel();

 private:
  void OnFetched(size_t spec_index, fetch::FetchResult result);
  void Complete(v1::FetchResult result);

  const FetchServices services_;
  BatchPlan plan_;
  Deliver deliver_;
  Finished finished_;
  std::vector<std::string> url_of_spec_;  // the item URLs, for results
  std::atomic<size_t> remaining_{0};
  std::shared_ptr<fetch::BatchHandle> handle_;
};

class BatchFetchCall final
    : public UnaryCall<v1::BatchFetchRequest, v1::BatchFetchResponse> {
 public:
  BatchFetchCall(const FetchServices& services, CqLoop* loop)
      : UnaryCall(loop), services_(services), driver_(services) {}

 private:
  void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) override;
  void Spawn() override;
  void OnStart() override;
  void OnCancel() override { driver_.Cancel(); }
  void OnResult(v1::FetchResult result) ABSL_LOCKS_EXCLUDED(mu_);
  void OnAllDone() ABSL_LOCKS_EXCLUDED(mu_);

  const FetchServices services_;
  BatchDriver driver_;
  absl::Mutex mu_;
  bool fail_fast_ = false;
  int64_t body_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status first_failure_ ABSL_GUARDED_BY(mu_);
};

class StreamBatchFetchCall final
    : public ServerStreamCall<v1::BatchFetchRequest, v1::FetchResult> {
 public:
  StreamBatchFetchCall(const FetchServices& services, CqLoop* loop)
      : ServerStreamCall(loop), services_(services), driver_(services) {}

 private:
  void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) override;
  void Spawn() override;
  void OnStart() override;
  void OnCancel() override { driver_.Cancel(); }
  void OnResult(v1::FetchResult result) ABSL_LOCKS_EXCLUDED(mu_);
  void OnAllDone() ABSL_LOCKS_EXCLUDED(mu_);

  const FetchServices services_;
  BatchDriver driver_;
  absl::Mutex mu_;
  bool fail_fast_ = false;
  absl::Status first_failure_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_FETCH_CALL_H_
