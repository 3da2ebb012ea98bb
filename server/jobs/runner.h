// The job runner (internal to jobs/): claims jobs from the store and runs
// them on the engine / worker pool as the identity that submitted them,
// committing results in transactions of many items while the engine keeps
// fetching. Crash safety comes from the store: a job whose replica died is
// claimed again once its lease ends; a batch resumes with the items that
// have no result, a walk from its last committed resume token, a compute
// task from the start. Fetches may repeat (items in flight at the crash);
// results never do (the store keeps the first per index).
#ifndef FETCHD_SERVER_JOBS_RUNNER_H_
#define FETCHD_SERVER_JOBS_RUNNER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "server/compute/compute.h"
#include "server/jobs/store.h"
#include "server/request/request.h"

namespace fetchd::jobs {

struct RunnerOptions {
  std::string replica;                       // owner name in leases
  int max_jobs_running = 2;                  // jobs run at once on this replica
  absl::Duration lease = absl::Seconds(30);  // renewed every lease / 3
  absl::Duration poll_interval = absl::Milliseconds(500);  // claim poll
  int64_t max_job_items = 1'000'000;
  // A commit happens at this many results, or this long after the first
  // uncommitted one, whichever comes first.
  int commit_rows = 1000;
  absl::Duration commit_interval = absl::Milliseconds(200);
  // Webhooks: at most one job.progress per interval per job.
  absl::Duration webhook_progress_interval = absl::Seconds(10);
};

class Runner {
 public:
  // `on_change(job_id)`: the job's state or counts changed (watchers);
  // `on_delivery()`: a webhook delivery was enqueued. Both must not block.
  Runner(JobStore* store, request::Services services,
         compute::KernelRunner* kernels, RunnerOptions options,
         absl::AnyInvocable<void(const std::string& job_id)> on_change,
         absl::AnyInvocable<void()> on_delivery);
  ~Runner();  // Shutdown()

  void Start();
  // A job was submitted or cancelled on this replica: look now.
  void Wake();
  // Stops claiming, stops the running jobs (their engine work is
  // cancelled, what finished is committed) and releases their leases so
  // another runner takes them at once. Joins every thread. Idempotent.
  void Shutdown();

  int running() const;
  int64_t finished() const;  // jobs ended since start
  int64_t results() const;   // results committed since start

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace fetchd::jobs

#endif  // FETCHD_SERVER_JOBS_RUNNER_H_
