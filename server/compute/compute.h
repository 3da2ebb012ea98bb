// compute/: CPU work off the RPC threads (the seed's ProcessPoolExecutor).
//
// What this module offers:
//   StopSource/StopToken  cancellation + deadline, polled by running kernels
//   WorkerPool            W threads behind a bounded FIFO queue
//   Kernel*, RunKernel    the named kernels (sqrt_sum, sha256_chain, ...)
//   KernelRunner          validate -> queue on the pool -> run -> time it
//
// No gRPC and no curl in here: the module is tested without a server.
#ifndef FETCHD_SERVER_COMPUTE_COMPUTE_H_
#define FETCHD_SERVER_COMPUTE_COMPUTE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fetchd::compute {

// A read-only view of a stop request: stops when the owner calls
// StopSource::RequestStop() or when the deadline passes. Cheap to copy;
// thread-safe. A default-constructed token never stops.
class StopToken {
 public:
  StopToken() = default;

  bool stop_requested() const;
  // OK while running; CANCELLED after RequestStop(); DEADLINE_EXCEEDED once
  // the deadline has passed (cancellation wins if both hold).
  absl::Status status() const;
  absl::Time deadline() const;

 private:
  friend class StopSource;
  struct State;
  explicit StopToken(std::shared_ptr<const State> state)
      : state_(std::move(state)) {}
  std::shared_ptr<const State> state_;
};

// The owning side of a StopToken. Thread-safe.
class StopSource {
 public:
  explicit StopSource(absl::Time deadline = absl::InfiniteFuture());
  void RequestStop();
  StopToken token() const;

 private:
  std::shared_ptr<StopToken::State> state_;
};

// W threads running tasks from a bounded FIFO queue. A full queue is an
// error at Submit time (RESOURCE_EXHAUSTED), never a growing backlog.
class WorkerPool {
 public:
  struct Options {
    int workers = 1;           // >= 1
    int max_queued_tasks = 1;  // tasks waiting for a busy worker, >= 0
  };
  struct Stats {
    int queued = 0;
    int running = 0;
  };
  // Invoked exactly once: on a worker with OK, or with CANCELLED on the
  // thread calling Shutdown() if the pool stops before the task started.
  using Task = absl::AnyInvocable<void(absl::Status) &&>;

  explicit WorkerPool(Options options);
  ~WorkerPool();  // Shutdown()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues `task`. RESOURCE_EXHAUSTED (naming --max_queued_tasks) when the
  // queue is full, UNAVAILABLE after Shutdown(); `task` is then dropped
  // without being invoked.
  absl::Status Submit(Task task) ABSL_LOCKS_EXCLUDED(mu_);

  // Stops accepting, cancels queued tasks, waits for running ones (their
  // owners stop them through their StopTokens) and joins the threads.
  // Idempotent; every caller returns only once the threads are joined.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  Stats stats() const ABSL_LOCKS_EXCLUDED(mu_);
  const Options& options() const { return options_; }

 private:
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  bool HasWorkOrStopping() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return stopping_ || !queue_.empty();
  }

  void Stop() ABSL_LOCKS_EXCLUDED(mu_);  // Shutdown's body, run once

  const Options options_;
  absl::once_flag stop_once_;
  mutable absl::Mutex mu_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // touched only by ctor and Shutdown()
};

// --- Kernels ----------------------------------------------------------------
// Each polls its StopToken at least every ~1 ms of work and returns the
// token's status when asked to stop.

struct SqrtSum {
  int64_t n = 0;
};
struct Sha256Chain {
  std::string data;
  int64_t rounds = 1;
};
struct CountPrimes {
  int64_t limit = 0;
};
using Kernel = std::variant<SqrtSum, Sha256Chain, CountPrimes>;
// Same alternative index as the Kernel it came from: the sum, the 32-byte
// digest, the prime count.
using KernelValue = std::variant<double, std::string, int64_t>;

// Σ √i for 0 <= i < n (double).
absl::StatusOr<double> RunSqrtSum(int64_t n, const StopToken& stop);
// sha256 applied `rounds` times; returns the raw 32-byte digest.
absl::StatusOr<std::string> RunSha256Chain(absl::string_view data,
                                           int64_t rounds,
                                           const StopToken& stop);
// The number of primes < limit (segmented sieve).
absl::StatusOr<int64_t> RunCountPrimes(int64_t limit, const StopToken& stop);

absl::StatusOr<KernelValue> RunKernel(const Kernel& kernel,
                                      const StopToken& stop);

// The bounds every request is checked against (server flags). The size
// caps keep the largest request of each kernel well inside max_time on a
// 2-core x86 VM (notes: sqrt_sum n=1e10 ~12 s, count_primes 1e10 ~8 s,
// sha256_chain 1e8 rounds ~9 s).
struct KernelLimits {
  int64_t max_n = 10'000'000'000;    // --max_compute_n
  int64_t max_data_bytes = 1 << 20;  // --max_compute_data_bytes
  int64_t max_rounds = 100'000'000;  // --max_compute_rounds
  // A server-side deadline for every Compute call, from its start, even
  // when the caller sets none (--max_compute_time; zero: none).
  absl::Duration max_time = absl::Seconds(60);
};
// INVALID_ARGUMENT naming the API field and the limit, or OK.
absl::Status ValidateKernel(const Kernel& kernel, const KernelLimits& limits);

// The API name of the kernel ("sqrt_sum", ...).
const char* KernelName(const Kernel& kernel);

struct ComputeResult {
  KernelValue value;
  absl::Duration queue_wait;
  absl::Duration run_time;
};
using ComputeCallback =
    absl::AnyInvocable<void(absl::StatusOr<ComputeResult>) &&>;

// Validates kernels and runs them on a WorkerPool it does not own.
// Thread-safe.
class KernelRunner {
 public:
  KernelRunner(WorkerPool* pool, KernelLimits limits)
      : pool_(pool), limits_(limits) {}

  // Validates and queues `kernel`. On error (INVALID_ARGUMENT,
  // RESOURCE_EXHAUSTED, UNAVAILABLE) returns it and never calls `done`.
  // Otherwise `done` is called exactly once, on a worker thread (or on the
  // thread shutting the pool down), with the result or with the stop
  // token's status. A task whose token stopped while it was queued does not
  // run. `done` must not block.
  absl::Status Run(Kernel kernel, StopToken stop, ComputeCallback done);

  const KernelLimits& limits() const { return limits_; }

 private:
  WorkerPool* const pool_;
  const KernelLimits limits_;
};

}  // namespace fetchd::compute

#endif  // FETCHD_SERVER_COMPUTE_COMPUTE_H_
