// WorkerPool: W threads, one bounded FIFO, absl::Mutex conditions.
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/compute/compute.h"

namespace fetchd::compute {

WorkerPool::WorkerPool(Options options) : options_(options) {
  const int workers = options_.workers < 1 ? 1 : options_.workers;
  threads_.reserve(workers);
  for (int i = 0; i < workers; ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

WorkerPool::~WorkerPool() { Shutdown(); }

absl::Status WorkerPool::Submit(Task task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("worker pool is shutting down");
  // Idle workers take tasks at once; the limit is on tasks that must wait.
  const int idle_workers = static_cast<int>(threads_.size()) - running_;
  if (static_cast<int>(queue_.size()) >=
      options_.max_queued_tasks + idle_workers) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "compute queue is full: ", queue_.size(), " tasks waiting for ",
        threads_.size(),
        " workers (--max_queued_tasks=", options_.max_queued_tasks, ")"));
  }
  queue_.push_back(std::move(task));
  return absl::OkStatus();
}

void WorkerPool::WorkerLoop() {
  for (;;) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &WorkerPool::HasWorkOrStopping));
      if (queue_.empty()) return;  // stopping and nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    std::move(task)(absl::OkStatus());
    absl::MutexLock lock(&mu_);
    --running_;
  }
}

void WorkerPool::Shutdown() {
  absl::call_once(stop_once_, &WorkerPool::Stop, this);
}

void WorkerPool::Stop() {
  std::deque<Task> cancelled;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    cancelled.swap(queue_);
  }
  for (Task& task : cancelled) {
    std::move(task)(absl::CancelledError("worker pool shut down"));
  }
  for (std::thread& thread : threads_) thread.join();
}

WorkerPool::Stats WorkerPool::stats() const {
  absl::MutexLock lock(&mu_);
  return Stats{static_cast<int>(queue_.size()), running_};
}

}  // namespace fetchd::compute
