// jobs/: background jobs (the create_task and Queue-worker patterns as a
// service). A job is a BatchFetchRequest, a FetchPagesRequest or a
// RunRequest stored in a JobStore (store.h), run by a Runner on the same
// engine, worker pool and limits as live RPCs, as the identity that
// submitted it, with its results committed in batches as they come.
//
// JobsService is what rpc/ calls: every operation runs on its own store
// threads (the store blocks; completion-queue threads must not) and answers
// through a callback. No gRPC here: requests and answers are the API's
// protobuf messages, errors are absl::Status (rpc/ maps them).
#ifndef FETCHD_SERVER_JOBS_JOBS_H_
#define FETCHD_SERVER_JOBS_JOBS_H_

#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fetchd/v1/jobs.pb.h"
#include "server/compute/compute.h"
#include "server/jobs/store.h"
#include "server/metrics/metrics.h"
#include "server/request/request.h"

namespace fetchd::jobs {

struct JobsConfig {
  // --job_store: sqlite:PATH or postgres://...; empty: no Jobs service.
  std::string store;
  // Names this process in leases ("host-pid-random" when empty).
  std::string replica;
  int max_jobs_running = 2;     // --max_jobs_running, on this replica
  int max_jobs_queued = 100;    // --max_jobs_queued, per identity (0: no cap)
  int64_t max_store_bytes = 0;  // --max_store_bytes (0: no cap)
  int64_t max_job_items = 1'000'000;             // --max_job_items, batch items
  absl::Duration lease = absl::Seconds(30);      // --job_lease
  absl::Duration default_ttl = absl::Hours(24);  // --default_job_ttl
  absl::Duration max_ttl = absl::Hours(24 * 7);  // --max_job_ttl
  // How often a replica looks for queued jobs it was not told of (another
  // replica's submits) and for other replicas' progress (watchers).
  absl::Duration poll_interval = absl::Milliseconds(500);
  absl::Duration sweep_interval = absl::Minutes(1);
  int sweep_batch = 500;       // jobs deleted per sweeper transaction
  int store_threads = 2;       // threads running RPCs' store calls
  int max_pending_ops = 1024;  // RPC store calls waiting for a thread
  int max_watchers = 1024;     // Watch streams open at once
  // Webhooks (server/jobs/webhook.h).
  std::string webhook_secrets_file;
  absl::Duration webhook_progress_interval = absl::Seconds(10);
  int webhook_max_attempts = 8;
  absl::Duration webhook_timeout = absl::Seconds(10);
};

// OK or INVALID_ARGUMENT naming the flag.
absl::Status ValidateJobsConfig(const JobsConfig& config);

// Watch's side of a stream: events go to `on_event` (one at a time, in seq
// order, on the watch thread; it must not block), then `on_end` once: OK
// after the terminal event, NOT_FOUND, UNAVAILABLE, CANCELLED on Cancel or
// shutdown.
class Watch {
 public:
  virtual ~Watch() = default;
  // No more events; on_end runs (CANCELLED) unless it already has.
  virtual void Cancel() = 0;
};

class JobsService {
 public:
  template <typename T>
  using Done = absl::AnyInvocable<void(absl::StatusOr<T>)>;

  // Opens the store (migrations applied), starts the store threads, the
  // runner, the watch thread, the sweeper and the webhook sender. The
  // engine and processor in `services` and `kernels` (compute jobs)
  // outlive the service.
  static absl::StatusOr<std::unique_ptr<JobsService>> Start(
      JobsConfig config, request::Services services,
      compute::KernelRunner* kernels);
  ~JobsService();  // Shutdown()

  // Each runs on a store thread and calls `done` there (exactly once; at
  // once with RESOURCE_EXHAUSTED when --max_pending_ops are waiting, or
  // UNAVAILABLE after Shutdown). `identity` is the caller's (the one fair
  // shares and quotas use).
  void Submit(std::string identity, v1::SubmitRequest request,
              Done<v1::SubmitResponse> done);
  void Get(std::string identity, v1::GetRequest request,
           Done<v1::GetResponse> done);
  void Cancel(std::string identity, v1::CancelRequest request,
              Done<v1::CancelResponse> done);
  void List(std::string identity, v1::ListRequest request,
            Done<v1::ListResponse> done);
  void ListResults(std::string identity, v1::ListResultsRequest request,
                   Done<v1::ListResultsResponse> done);
  void Delete(std::string identity, v1::DeleteRequest request,
              Done<v1::DeleteResponse> done);

  // Starts watching; see Watch. RESOURCE_EXHAUSTED past --max_watchers.
  absl::StatusOr<std::unique_ptr<Watch>> StartWatch(
      std::string identity, v1::WatchRequest request,
      absl::AnyInvocable<void(v1::WatchResponse)> on_event,
      absl::AnyInvocable<void(absl::Status)> on_end);

  // Whether the store answers (the Jobs health status follows it).
  bool healthy() const;
  // Told when healthy() changes (on the upkeep thread).
  void OnHealthChange(absl::AnyInvocable<void(bool healthy)> callback);

  // Reads --webhook_secrets_file again (SIGHUP); on an error the secrets
  // in force stay.
  absl::Status Reload();

  // The start of a stop: ends every watch (UNAVAILABLE: watch again on
  // another replica with from_seq) and stops the runner (running jobs go
  // back to QUEUED). Store calls are still answered. Idempotent.
  void Drain();

  // Stops taking work, stops the runner (running jobs go back to QUEUED
  // for another replica or the next start), ends every watch, joins every
  // thread. Idempotent.
  void Shutdown();

  struct Stats {
    int running = 0;       // jobs this replica runs now
    int64_t finished = 0;  // jobs it ended since start
    int64_t results = 0;   // results it committed since start
    int watchers = 0;
  };
  Stats stats() const;
  // fetchd_jobs_running, fetchd_jobs_finished_total,
  // fetchd_job_results_total, fetchd_job_watchers, fetchd_job_store_up.
  void Render(metrics::Exposition& out) const;

  class Impl;

 private:
  explicit JobsService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fetchd::jobs

#endif  // FETCHD_SERVER_JOBS_JOBS_H_
