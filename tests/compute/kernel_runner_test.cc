#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "absl/synchronization/notification.h"
#include "server/compute/compute.h"
#include "tests/support/test_server.h"

namespace fetchd::compute {
namespace {

using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

// Lets a kernel run for ~15 minutes: only a stop ends it.
constexpr KernelLimits kHugeLimits{.max_n = 1'000'000'000'000};

// Collects the one callback a run makes.
struct Outcome {
  absl::Notification done;
  absl::StatusOr<ComputeResult> result = absl::UnknownError("not called");
  ComputeCallback Callback() {
    return [this](absl::StatusOr<ComputeResult> r) {
      result = std::move(r);
      done.Notify();
    };
  }
};

// Starts a kernel only a stop ends, on a one-worker pool, and waits until
// it runs.
::testing::AssertionResult RunEndless(WorkerPool& pool, KernelRunner& runner,
                                      const StopSource& stop, Outcome& out) {
  absl::Status queued =
      runner.Run(SqrtSum{kHugeLimits.max_n}, stop.token(), out.Callback());
  if (!queued.ok()) return ::testing::AssertionFailure() << queued;
  return WaitFor([&] { return pool.stats().running == 1; }, kEventTimeout,
                 "the endless kernel to run");
}

TEST(KernelRunnerTest, RunsTheKernelAndReportsTimings) {
  absl::Notification release;  // outlives the pool's worker
  WorkerPool pool({.workers = 1, .max_queued_tasks = 4});
  KernelRunner runner(&pool, KernelLimits{});
  ASSERT_TRUE(pool.Submit([&](absl::Status) {
                    release.WaitForNotificationWithTimeout(kEventTimeout);
                  })
                  .ok());
  ASSERT_TRUE(WaitFor([&] { return pool.stats().running == 1; }, kEventTimeout,
                      "the blocker to run"));
  Outcome out;
  const absl::Time before = absl::Now();
  ASSERT_TRUE(runner.Run(CountPrimes{1000}, StopToken(), out.Callback()).ok());
  const absl::Time queued = absl::Now();
  // Holds the kernel in the queue for a known time (a delay to measure, not
  // a synchronisation).
  absl::SleepFor(absl::Milliseconds(20));
  const absl::Time released = absl::Now();
  release.Notify();
  ASSERT_TRUE(out.done.WaitForNotificationWithTimeout(kEventTimeout));
  const absl::Duration elapsed = absl::Now() - before;
  ASSERT_TRUE(out.result.ok()) << out.result.status();
  EXPECT_EQ(std::get<2>(out.result->value), 168);
  // Queued by the time Run returned, started only after the release.
  EXPECT_GE(out.result->queue_wait, released - queued);
  EXPECT_GT(out.result->run_time, absl::ZeroDuration());
  EXPECT_LE(out.result->queue_wait + out.result->run_time, elapsed);
}

TEST(KernelRunnerTest, InvalidKernelIsRejectedWithoutCallingBack) {
  WorkerPool pool({.workers = 1, .max_queued_tasks = 4});
  KernelRunner runner(&pool, KernelLimits{.max_n = 10});
  bool called = false;
  absl::Status s =
      runner.Run(SqrtSum{11}, StopToken(),
                 [&](absl::StatusOr<ComputeResult>) { called = true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("sqrt_sum.n"));
  pool.Shutdown();
  EXPECT_FALSE(called);
}

TEST(KernelRunnerTest, TaskStoppedWhileQueuedDoesNotRun) {
  absl::Notification release;  // outlives the pool's worker
  WorkerPool pool({.workers = 1, .max_queued_tasks = 4});
  KernelRunner runner(&pool, KernelLimits{});
  ASSERT_TRUE(
      pool.Submit([&](absl::Status) { release.WaitForNotification(); }).ok());
  ASSERT_TRUE(WaitFor([&] { return pool.stats().running == 1; }, kEventTimeout,
                      "the blocker to run"));
  StopSource stop;
  Outcome out;
  // n = 1 never polls the token, so CANCELLED proves the kernel was skipped.
  ASSERT_TRUE(runner.Run(SqrtSum{1}, stop.token(), out.Callback()).ok());
  stop.RequestStop();
  release.Notify();
  ASSERT_TRUE(out.done.WaitForNotificationWithTimeout(kEventTimeout));
  EXPECT_EQ(out.result.status().code(), absl::StatusCode::kCancelled);
}

TEST(KernelRunnerTest, FullPoolIsResourceExhausted) {
  WorkerPool pool({.workers = 1, .max_queued_tasks = 0});
  KernelRunner runner(&pool, kHugeLimits);
  StopSource stop;
  Outcome first;
  ASSERT_TRUE(RunEndless(pool, runner, stop, first));
  absl::Status s =
      runner.Run(SqrtSum{1}, StopToken(), [](absl::StatusOr<ComputeResult>) {});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  stop.RequestStop();
  ASSERT_TRUE(first.done.WaitForNotificationWithTimeout(kEventTimeout));
  EXPECT_EQ(first.result.status().code(), absl::StatusCode::kCancelled);
}

TEST(KernelRunnerTest, PoolShutdownCancelsQueuedRuns) {
  WorkerPool pool({.workers = 1, .max_queued_tasks = 4});
  KernelRunner runner(&pool, kHugeLimits);
  StopSource stop;
  Outcome running, queued;
  ASSERT_TRUE(RunEndless(pool, runner, stop, running));
  ASSERT_TRUE(runner.Run(SqrtSum{5}, StopToken(), queued.Callback()).ok());
  std::thread stopper([&] { pool.Shutdown(); });
  // The queued run is cancelled while the first still runs.
  ASSERT_TRUE(queued.done.WaitForNotificationWithTimeout(kEventTimeout));
  EXPECT_EQ(queued.result.status().code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(running.done.HasBeenNotified());
  stop.RequestStop();
  stopper.join();
  ASSERT_TRUE(running.done.HasBeenNotified());
  EXPECT_EQ(running.result.status().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace fetchd::compute
