// The job runner: one claim thread (claims, lease renewal, reaping) and a
// thread per running job that feeds the engine or the worker pool and
// commits results in batches while the work goes on.
#include "server/jobs/runner.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "fetchd/v1/jobs.pb.h"
#include "server/jobs/work.h"

namespace fetchd::jobs {
namespace {

// A store that is down: how long a job waits before trying again.
constexpr absl::Duration kStoreRetry = absl::Seconds(1);

// The API's status message, for a JobResult's error.
void SetError(const absl::Status& status, v1::Status* out) {
  out->set_code(static_cast<int>(status.code()));
  out->set_message(std::string(status.message()));
}

// TODO(webhook merge): webhook.h's versions replace these two.
bool ProgressDue(absl::Time last, absl::Time now, absl::Duration interval) {
  return now - last >= interval;
}
std::string WebhookEventBody(absl::string_view event, const Job& job,
                             absl::Time now) {
  return absl::StrCat(R"({"type":")", event, R"(","job":{"id":")", job.id,
                      R"("},"created":)", absl::ToUnixSeconds(now), "}");
}

}  // namespace

// One job this replica runs: its thread, its buffer of uncommitted results
// and how it stops.
class RunningJob {
 public:
  RunningJob(Runner::Impl* runner, Job job)
      : runner_(runner), job_(std::move(job)) {}

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  // Stops the work: `release` (a graceful stop: give the job back) or not
  // (the lease is lost, or the job was cancelled or deleted). Thread-safe.
  void Stop(bool release) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    release_ = release;
    if (on_stop_) on_stop_();
  }

  bool finished() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return thread_done_;
  }
  bool wants_release() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return release_;
  }
  const std::string& id() const { return job_.id; }

 private:
  void Run();
  // Kinds of work. Each returns the job's end: its terminal state and
  // error, or nothing when it stopped without an end (stop or lost lease).
  struct End {
    State state;
    absl::Status error;
  };
  std::optional<End> RunBatch(const v1::SubmitRequest& request);
  std::optional<End> RunWalk(v1::SubmitRequest& request);
  std::optional<End> RunCompute(const v1::SubmitRequest& request);

  // Adds a result; on the I/O thread or a worker, so it never waits. What
  // the buffer holds is bounded by the memory budget: each row keeps its
  // reservation until it is committed.
  void Buffer(ResultRow row, memory::Reservation memory)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Commits buffered rows until the work is done (`done` set under mu_)
  // or the job stops; returns false if the lease was lost.
  bool CommitLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // Commits what is buffered now; false if the lease was lost. Retries
  // while the store is down (unless stopping).
  bool CommitNow(std::optional<int64_t> total = std::nullopt,
                 std::string checkpoint = "") ABSL_LOCKS_EXCLUDED(mu_);
  bool StopRequested() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return stop_;
  }
  std::optional<Delivery> ProgressDelivery();
  std::optional<Delivery> EndDelivery(State state, const absl::Status& error);

  Runner::Impl* const runner_;
  Job job_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool release_ ABSL_GUARDED_BY(mu_) = false;
  bool thread_done_ ABSL_GUARDED_BY(mu_) = false;
  bool work_done_ ABSL_GUARDED_BY(mu_) = false;  // no more rows will come
  // What cancels the engine's or pool's part (set while it runs).
  absl::AnyInvocable<void()> on_stop_ ABSL_GUARDED_BY(mu_);
  std::vector<ResultRow> buffer_ ABSL_GUARDED_BY(mu_);
  std::vector<memory::Reservation> buffer_memory_ ABSL_GUARDED_BY(mu_);
  absl::Time first_buffered_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  // Walks: the checkpoint and page count that go with the buffered rows.
  std::string checkpoint_ ABSL_GUARDED_BY(mu_);
  int64_t pages_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status first_failure_ ABSL_GUARDED_BY(mu_);  // fail_fast
  absl::Time last_progress_ = absl::InfinitePast();  // job thread only
};

class Runner::Impl {
 public:
  Impl(JobStore* store, request::Services services,
       compute::KernelRunner* kernels, RunnerOptions options,
       absl::AnyInvocable<void(const std::string&)> on_change,
       absl::AnyInvocable<void()> on_delivery)
      : store_(store),
        services_(services),
        kernels_(kernels),
        options_(std::move(options)),
        job_config_(JobFetchConfig(*services.config, options_.max_job_items)),
        on_change_(std::move(on_change)),
        on_delivery_(std::move(on_delivery)) {
    services_.config = &job_config_;
  }

  void Start() {
    thread_ = std::thread([this] { Loop(); });
  }

  void Wake() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    wake_ = true;
  }

  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
    // The claim thread is gone: no job starts any more.
    std::vector<std::unique_ptr<RunningJob>> jobs;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [id, job] : running_) jobs.push_back(std::move(job));
      running_.clear();
    }
    std::vector<std::string> release;
    for (auto& job : jobs) job->Stop(/*release=*/true);
    for (auto& job : jobs) {
      job->Join();
      if (job->wants_release()) release.push_back(job->id());
    }
    if (!release.empty()) {
      store_->Release(options_.replica, release, absl::Now()).IgnoreError();
    }
  }

  int running() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(running_.size());
  }

  JobStore* store() const { return store_; }
  const request::Services& services() const { return services_; }
  compute::KernelRunner* kernels() const { return kernels_; }
  const RunnerOptions& options() const { return options_; }
  void Changed(const std::string& job_id) { on_change_(job_id); }
  void Enqueued() { on_delivery_(); }

  std::atomic<int64_t> finished_{0};
  std::atomic<int64_t> results_{0};

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::Time next_renew = absl::Now() + options_.lease / 3;
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithDeadline(
            absl::Condition(
                +[](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->mu_) {
                  return impl->stopping_ || impl->wake_;
                },
                this),
            std::min(next_renew, absl::Now() + options_.poll_interval));
        if (stopping_) return;
        wake_ = false;
      }
      Reap();
      // A wake may mean a cancel here: renew at once to learn of it.
      Renew();
      next_renew = absl::Now() + options_.lease / 3;
      ClaimMore();
    }
  }

  // Joins the jobs whose threads ended.
  void Reap() ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::unique_ptr<RunningJob>> done;
    {
      absl::MutexLock lock(&mu_);
      for (auto it = running_.begin(); it != running_.end();) {
        if (it->second->finished()) {
          done.push_back(std::move(it->second));
          running_.erase(it++);
        } else {
          ++it;
        }
      }
    }
    for (auto& job : done) job->Join();
  }

  void Renew() ABSL_LOCKS_EXCLUDED(mu_) {
    std::vector<std::string> ids;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, job] : running_) ids.push_back(id);
    }
    if (ids.empty()) return;
    absl::StatusOr<std::vector<std::string>> lost =
        store_->Renew(options_.replica, ids, options_.lease, absl::Now());
    if (!lost.ok()) return;  // the store is down: the jobs go on, unrenewed
    absl::MutexLock lock(&mu_);
    for (const std::string& id : *lost) {
      auto it = running_.find(id);
      if (it != running_.end()) it->second->Stop(/*release=*/false);
    }
  }

  void ClaimMore() ABSL_LOCKS_EXCLUDED(mu_) {
    int free;
    {
      absl::MutexLock lock(&mu_);
      free = options_.max_jobs_running - static_cast<int>(running_.size());
    }
    if (free <= 0) return;
    absl::StatusOr<std::vector<Job>> claimed =
        store_->Claim(options_.replica, free, options_.lease, absl::Now());
    if (!claimed.ok()) return;
    for (Job& job : *claimed) {
      const std::string id = job.id;
      auto running = std::make_unique<RunningJob>(this, std::move(job));
      RunningJob* raw = running.get();
      {
        absl::MutexLock lock(&mu_);
        running_[id] = std::move(running);
      }
      on_change_(id);
      raw->Start();
    }
  }

  JobStore* const store_;
  request::Services services_;
  compute::KernelRunner* const kernels_;
  const RunnerOptions options_;
  const request::FetchConfig job_config_;
  absl::AnyInvocable<void(const std::string&)> on_change_;
  absl::AnyInvocable<void()> on_delivery_;
  std::thread thread_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, std::unique_ptr<RunningJob>> running_
      ABSL_GUARDED_BY(mu_);
};

// --- RunningJob -------------------------------------------------------------

void RunningJob::Run() {
  v1::SubmitRequest request;
  std::optional<End> end;
  if (!request.ParseFromString(job_.request)) {
    end = End{State::kFailed,
              absl::DataLossError("the stored request is unreadable")};
  } else {
    switch (job_.kind) {
      case Kind::kBatchFetch:
        end = RunBatch(request);
        break;
      case Kind::kFetchPages:
        end = RunWalk(request);
        break;
      case Kind::kCompute:
        end = RunCompute(request);
        break;
    }
  }
  if (end.has_value() && !StopRequested()) {
    const absl::Time now = absl::Now();
    std::optional<Delivery> delivery = EndDelivery(end->state, end->error);
    absl::Status finished;
    // The store may be down: the end is retried until it is written or
    // the job stops (then another runner finds the results and ends it).
    while (!(finished = runner_->store()->Finish(
                 job_.id, runner_->options().replica, end->state, end->error,
                 delivery, now))
                .ok() &&
           absl::IsUnavailable(finished) && !StopRequested()) {
      absl::SleepFor(kStoreRetry);
    }
    if (finished.ok()) {
      runner_->finished_.fetch_add(1);
      if (delivery.has_value()) runner_->Enqueued();
    }
    runner_->Changed(job_.id);
  }
  {
    absl::MutexLock lock(&mu_);
    thread_done_ = true;
  }
  runner_->Wake();  // reaps this thread (runner's lock, after ours)
}

void RunningJob::Buffer(ResultRow row, memory::Reservation memory) {
  absl::MutexLock lock(&mu_);
  if (buffer_.empty()) first_buffered_ = absl::Now();
  buffer_.push_back(std::move(row));
  buffer_memory_.push_back(std::move(memory));
}

bool RunningJob::CommitNow(std::optional<int64_t> total,
                           std::string checkpoint) {
  Commit commit{.job_id = job_.id, .replica = runner_->options().replica};
  std::vector<memory::Reservation> memory;
  {
    absl::MutexLock lock(&mu_);
    commit.rows.swap(buffer_);
    memory.swap(buffer_memory_);
    first_buffered_ = absl::InfiniteFuture();
    if (checkpoint.empty()) checkpoint = checkpoint_;
    if (!total.has_value() && job_.kind == Kind::kFetchPages) total = pages_;
  }
  if (commit.rows.empty() && checkpoint.empty()) return true;
  commit.total = total;
  commit.checkpoint = std::move(checkpoint);
  const int64_t rows = static_cast<int64_t>(commit.rows.size());
  for (;;) {
    commit.now = absl::Now();
    commit.delivery = ProgressDelivery();
    absl::Status status = runner_->store()->CommitResults(commit);
    if (status.ok()) {
      runner_->results_.fetch_add(rows);
      if (commit.delivery.has_value()) {
        last_progress_ = commit.now;
        runner_->Enqueued();
      }
      runner_->Changed(job_.id);
      return true;
    }
    if (absl::IsFailedPrecondition(status)) return false;  // lease lost
    if (StopRequested()) return true;  // not written: another runner redoes it
    absl::SleepFor(kStoreRetry);       // the store is down: the rows wait
  }
}

bool RunningJob::CommitLoop() {
  const RunnerOptions& options = runner_->options();
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this, &options]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || work_done_ ||
               static_cast<int>(buffer_.size()) >= options.commit_rows;
      };
      while (!ready()) {
        const absl::Time due = first_buffered_ + options.commit_interval;
        if (absl::Now() >= due) break;
        mu_.AwaitWithDeadline(
            absl::Condition(
                +[](RunningJob* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(job->mu_) {
                  return job->stop_ || job->work_done_ ||
                         static_cast<int>(job->buffer_.size()) >=
                             job->runner_->options().commit_rows;
                },
                this),
            std::min(due, absl::Now() + options.commit_interval));
      }
    }
    const bool done = [this] {
      absl::MutexLock lock(&mu_);
      return work_done_;
    }();
    if (!CommitNow()) return false;
    if (done) return true;
    if (StopRequested()) return true;
  }
}

std::optional<RunningJob::End> RunningJob::RunBatch(
    const v1::SubmitRequest& request) {
  const request::Services& services = runner_->services();
  absl::StatusOr<request::BatchPlan> plan = request::PlanBatch(
      request.batch_fetch(), *services.config, request::Caller{job_.identity},
      absl::InfiniteFuture());
  if (!plan.ok()) return End{State::kFailed, plan.status()};
  const bool fail_fast = plan->options.fail_fast;
  const bool drop_body = plan->drop_body;
  // A resumed job: only the items with no result yet.
  if (job_.counts.done > 0) {
    absl::StatusOr<std::vector<int64_t>> done =
        runner_->store()->ResultIndexes(job_.id);
    if (!done.ok()) return std::nullopt;  // the store is down: try later
    const absl::flat_hash_set<int64_t> have(done->begin(), done->end());
    request::BatchPlan rest;
    rest.options = plan->options;
    rest.drop_body = plan->drop_body;
    for (size_t i = 0; i < plan->specs.size(); ++i) {
      if (have.contains(plan->request_index[i])) continue;
      rest.specs.push_back(std::move(plan->specs[i]));
      rest.request_index.push_back(plan->request_index[i]);
      rest.processors.push_back(std::move(plan->processors[i]));
    }
    for (auto& rejected : plan->rejected) {
      if (!have.contains(rejected.index)) {
        rest.rejected.push_back(std::move(rejected));
      }
    }
    rest.item_count = rest.specs.size() + rest.rejected.size();
    *plan = std::move(rest);
  }
  if (plan->item_count == 0) return End{State::kSucceeded, absl::OkStatus()};

  request::BatchDriver driver(services);
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return std::nullopt;
    on_stop_ = [&driver] { driver.Cancel(); };
  }
  driver.Start(
      *std::move(plan),
      [this, drop_body, fail_fast, &driver](request::ItemOutcome outcome) {
        const absl::Status status = outcome.status();
        if (!status.ok()) {
          absl::MutexLock lock(&mu_);
          // Items cancelled by a stop are not results: another runner (or
          // this one, later) fetches them.
          if (stop_ && absl::IsCancelled(status)) return;
          if (fail_fast) {
            if (!first_failure_.ok()) return;  // cancelled by the first
            first_failure_ = absl::Status(
                status.code(),
                absl::StrCat("item ", outcome.index, ": ", status.message()));
            driver.Cancel();
          }
        }
        v1::JobResult result;
        result.set_index(outcome.index);
        ResultRow row{.index = outcome.index, .failed = !status.ok()};
        memory::Reservation memory =
            std::move(outcome).ToProto(drop_body, result.mutable_fetch());
        row.body_bytes = result.fetch().body_bytes();
        row.data = result.SerializeAsString();
        // Runs on the I/O thread or a worker: never waits here.
        Buffer(std::move(row), std::move(memory));
      },
      [this] {
        absl::MutexLock lock(&mu_);
        work_done_ = true;
      });
  const bool lease_held = CommitLoop();
  if (!lease_held || StopRequested()) {
    driver.Cancel();
  }
  // The driver's callbacks end before it goes.
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&work_done_));
    on_stop_ = nullptr;
  }
  if (!lease_held) return std::nullopt;
  if (StopRequested()) {
    CommitNow();  // what finished before the stop is kept
    return std::nullopt;
  }
  if (!CommitNow()) return std::nullopt;
  absl::MutexLock lock(&mu_);
  if (!first_failure_.ok()) return End{State::kFailed, first_failure_};
  return End{State::kSucceeded, absl::OkStatus()};
}

std::optional<RunningJob::End> RunningJob::RunWalk(v1::SubmitRequest& request) {
  const request::Services& services = runner_->services();
  v1::FetchPagesRequest& walk = *request.mutable_fetch_pages();
  if (!job_.checkpoint.empty()) walk.set_resume_token(job_.checkpoint);
  absl::StatusOr<request::WalkPlan> plan =
      request::PlanWalk(walk, *services.config, request::Caller{job_.identity},
                        absl::InfiniteFuture());
  if (!plan.ok()) return End{State::kFailed, plan.status()};
  if (plan->from.done()) return End{State::kSucceeded, absl::OkStatus()};
  {
    absl::MutexLock lock(&mu_);
    pages_ = job_.counts.total;
  }
  // Pages come in order; a processor may finish them out of order, so they
  // wait in `slots` and go to the buffer in order.
  struct Slot {
    fetch::Page page;
    v1::JobResult result;
    memory::Reservation memory;
    bool ready = false;
  };
  struct Walk {
    absl::Mutex mu;
    std::deque<std::shared_ptr<Slot>> slots ABSL_GUARDED_BY(mu);
    std::optional<absl::Status> end ABSL_GUARDED_BY(mu);
    // Set once Walk returned; pages consumed before that are counted.
    std::shared_ptr<fetch::WalkHandle> handle ABSL_GUARDED_BY(mu);
    int64_t consumed_early ABSL_GUARDED_BY(mu) = 0;
  };
  auto state = std::make_shared<Walk>();
  const request::WalkPlan& walk_plan = *plan;
  auto flush = [this, state](Slot* ready) {
    absl::MutexLock lock(&state->mu);
    if (ready != nullptr) ready->ready = true;
    while (!state->slots.empty() && state->slots.front()->ready) {
      Slot& slot = *state->slots.front();
      ResultRow row{.index = slot.page.index,
                    .failed = slot.result.page().result().has_error(),
                    .body_bytes = slot.result.page().result().body_bytes()};
      std::string token = slot.result.page().resume_token();
      row.data = slot.result.SerializeAsString();
      {
        absl::MutexLock job_lock(&mu_);
        checkpoint_ = std::move(token);
        pages_ = slot.page.index + 1;
      }
      Buffer(std::move(row), std::move(slot.memory));
      if (state->handle != nullptr) {
        state->handle->Consumed();
      } else {
        ++state->consumed_early;
      }
      state->slots.pop_front();
    }
    if (state->slots.empty() && state->end.has_value()) {
      absl::MutexLock job_lock(&mu_);
      work_done_ = true;
    }
  };
  auto convert = [&walk_plan, &services](
                     Slot& slot, const absl::StatusOr<std::string>* processed) {
    slot.result.set_index(slot.page.index);
    slot.memory =
        request::ToProtoPage(*services.config, walk_plan, std::move(slot.page),
                             processed, slot.result.mutable_page());
    slot.page.index = slot.result.index();
  };
  if (StopRequested()) return std::nullopt;
  // NOTE: no lock held: the engine may call back before Walk returns.
  std::shared_ptr<fetch::WalkHandle> handle = services.engine->Walk(
      plan->first, plan->strategy, plan->from, plan->options,
      [state, flush, convert, &walk_plan, &services](fetch::Page page) {
        auto slot = std::make_shared<Slot>();
        slot->page = std::move(page);
        {
          absl::MutexLock lock(&state->mu);
          state->slots.push_back(slot);
        }
        if (walk_plan.processor.kind == process::Processor::Kind::kNone ||
            !slot->page.result.status.ok()) {
          convert(*slot, nullptr);
          return flush(slot.get());
        }
        services.processor->Run(
            walk_plan.processor, slot->page.result.body,
            [slot, flush, convert](absl::StatusOr<std::string> output) {
              request::HoldProcessed(slot->page.result, output);
              convert(*slot, &output);
              flush(slot.get());
            });
      },
      [state, flush](absl::Status status) {
        {
          absl::MutexLock lock(&state->mu);
          state->end = std::move(status);
        }
        flush(nullptr);
      });
  {
    absl::MutexLock lock(&state->mu);
    state->handle = handle;
    for (; state->consumed_early > 0; --state->consumed_early) {
      handle->Consumed();
    }
  }
  {
    absl::MutexLock lock(&mu_);
    on_stop_ = [handle] { handle->Cancel(); };
    if (stop_) handle->Cancel();
  }
  const bool lease_held = CommitLoop();
  if (!lease_held || StopRequested()) handle->Cancel();
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&work_done_));
    on_stop_ = nullptr;
  }
  if (!lease_held) return std::nullopt;
  if (!CommitNow() || StopRequested()) return std::nullopt;
  absl::Status end;
  {
    absl::MutexLock lock(&state->mu);
    end = *state->end;
  }
  if (!end.ok()) return End{State::kFailed, end};
  return End{State::kSucceeded, absl::OkStatus()};
}

std::optional<RunningJob::End> RunningJob::RunCompute(
    const v1::SubmitRequest& request) {
  absl::StatusOr<compute::Kernel> kernel =
      request::KernelFromProto(request.compute());
  if (!kernel.ok()) return End{State::kFailed, kernel.status()};
  compute::KernelRunner* kernels = runner_->kernels();
  const absl::Duration max_time = kernels->limits().max_time;
  struct Outcome {
    absl::Mutex mu;
    std::optional<absl::StatusOr<compute::ComputeResult>> result
        ABSL_GUARDED_BY(mu);
  };
  // The pool's queue may be full of live RPCs' tasks: a job waits its turn.
  for (absl::Duration backoff = absl::Milliseconds(50);;
       backoff = std::min(backoff * 2, absl::Seconds(2))) {
    auto outcome = std::make_shared<Outcome>();
    compute::StopSource stop(max_time > absl::ZeroDuration()
                                 ? absl::Now() + max_time
                                 : absl::InfiniteFuture());
    {
      absl::MutexLock lock(&mu_);
      if (stop_) return std::nullopt;
      on_stop_ = [stop]() mutable { stop.RequestStop(); };
    }
    absl::Status queued =
        kernels->Run(*kernel, stop.token(),
                     [outcome](absl::StatusOr<compute::ComputeResult> result) {
                       absl::MutexLock lock(&outcome->mu);
                       outcome->result = std::move(result);
                     });
    if (absl::IsResourceExhausted(queued)) {
      absl::MutexLock lock(&mu_);
      on_stop_ = nullptr;
      mu_.AwaitWithTimeout(absl::Condition(&stop_), backoff);
      continue;
    }
    if (!queued.ok()) return End{State::kFailed, queued};
    absl::StatusOr<compute::ComputeResult> result = [&] {
      absl::MutexLock lock(&outcome->mu);
      outcome->mu.Await(absl::Condition(
          +[](Outcome* o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(o->mu) {
            return o->result.has_value();
          },
          outcome.get()));
      return *std::move(outcome->result);
    }();
    {
      absl::MutexLock lock(&mu_);
      on_stop_ = nullptr;
    }
    if (StopRequested()) return std::nullopt;
    v1::JobResult row_result;
    ResultRow row{.index = 0, .failed = !result.ok()};
    if (result.ok()) {
      request::ToProtoCompute(*std::move(result), row_result.mutable_compute());
    } else {
      SetError(result.status(), row_result.mutable_error());
    }
    row.data = row_result.SerializeAsString();
    Buffer(std::move(row), memory::Reservation());
    if (!CommitNow()) return std::nullopt;
    if (!result.ok()) return End{State::kFailed, result.status()};
    return End{State::kSucceeded, absl::OkStatus()};
  }
}

std::optional<Delivery> RunningJob::ProgressDelivery() {
  if (job_.webhook.url.empty() || !job_.webhook.progress) return std::nullopt;
  const absl::Time now = absl::Now();
  if (!ProgressDue(last_progress_, now,
                   runner_->options().webhook_progress_interval)) {
    return std::nullopt;
  }
  Job snapshot = job_;
  snapshot.state = State::kRunning;
  return Delivery{.job_id = job_.id,
                  .event = "job.progress",
                  .body = WebhookEventBody("job.progress", snapshot, now)};
}

std::optional<Delivery> RunningJob::EndDelivery(State state,
                                                const absl::Status& error) {
  if (job_.webhook.url.empty()) return std::nullopt;
  const absl::Time now = absl::Now();
  Job snapshot = job_;
  snapshot.state = state;
  snapshot.finished_at = now;
  snapshot.expires_at = now + job_.ttl;
  snapshot.error_code = static_cast<int>(error.code());
  snapshot.error_message = std::string(error.message());
  const char* event =
      state == State::kSucceeded ? "job.completed" : "job.failed";
  return Delivery{.job_id = job_.id,
                  .event = event,
                  .body = WebhookEventBody(event, snapshot, now)};
}

// --- Runner -----------------------------------------------------------------

Runner::Runner(JobStore* store, request::Services services,
               compute::KernelRunner* kernels, RunnerOptions options,
               absl::AnyInvocable<void(const std::string& job_id)> on_change,
               absl::AnyInvocable<void()> on_delivery)
    : impl_(std::make_unique<Impl>(store, services, kernels, std::move(options),
                                   std::move(on_change),
                                   std::move(on_delivery))) {}

Runner::~Runner() { Shutdown(); }
void Runner::Start() { impl_->Start(); }
void Runner::Wake() { impl_->Wake(); }
void Runner::Shutdown() { impl_->Shutdown(); }
int Runner::running() const { return impl_->running(); }
int64_t Runner::finished() const { return impl_->finished_.load(); }
int64_t Runner::results() const { return impl_->results_.load(); }

}  // namespace fetchd::jobs
