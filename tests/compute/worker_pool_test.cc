#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "server/compute/compute.h"
#include "tests/support/test_server.h"

namespace fetchd::compute {
namespace {

using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

// Occupies a worker until Release().
class Gate {
 public:
  WorkerPool::Task Task() {
    return [this](absl::Status status) {
      start_status_ = status;
      released_.WaitForNotification();
    };
  }
  void Release() { released_.Notify(); }
  absl::Status start_status() const { return start_status_; }

 private:
  absl::Notification released_;
  absl::Status start_status_ = absl::UnknownError("not run");
};

TEST(WorkerPoolTest, RunsEveryTaskExactlyOnceOnWorkers) {
  WorkerPool pool({.workers = 4, .max_queued_tasks = 200});
  constexpr int kTasks = 200;
  std::atomic<int> ran{0};
  absl::BlockingCounter done(kTasks);
  const auto caller = std::this_thread::get_id();
  std::atomic<int> on_caller_thread{0};
  for (int i = 0; i < kTasks; ++i) {
    ASSERT_TRUE(pool.Submit([&](absl::Status status) {
                      EXPECT_TRUE(status.ok());
                      if (std::this_thread::get_id() == caller) {
                        ++on_caller_thread;
                      }
                      ++ran;
                      done.DecrementCount();
                    })
                    .ok());
  }
  done.Wait();
  EXPECT_EQ(ran.load(), kTasks);
  EXPECT_EQ(on_caller_thread.load(), 0);
}

TEST(WorkerPoolTest, FullQueueIsResourceExhaustedNamingTheFlag) {
  Gate gate;  // outlives the pool: a worker may still be inside it
  WorkerPool pool({.workers = 1, .max_queued_tasks = 2});
  ASSERT_TRUE(pool.Submit(gate.Task()).ok());
  ASSERT_TRUE(WaitFor([&] { return pool.stats().running == 1; }, kEventTimeout,
                      "the gate task to run"));
  absl::BlockingCounter queued_done(2);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(
        pool.Submit([&](absl::Status) { queued_done.DecrementCount(); }).ok());
  }
  EXPECT_EQ(pool.stats().queued, 2);

  bool rejected_ran = false;
  absl::Status rejected =
      pool.Submit([&](absl::Status) { rejected_ran = true; });
  EXPECT_EQ(rejected.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(rejected.message(), HasSubstr("--max_queued_tasks=2"));

  gate.Release();
  queued_done.Wait();
  EXPECT_FALSE(rejected_ran);
  // Room again once the queue drained.
  absl::Notification again;
  ASSERT_TRUE(pool.Submit([&](absl::Status) { again.Notify(); }).ok());
  EXPECT_TRUE(again.WaitForNotificationWithTimeout(kEventTimeout));
}

TEST(WorkerPoolTest, ZeroQueueAcceptsOnlyWhatIdleWorkersTake) {
  Gate gate;  // outlives the pool: a worker may still be inside it
  WorkerPool pool({.workers = 1, .max_queued_tasks = 0});
  ASSERT_TRUE(pool.Submit(gate.Task()).ok());  // the idle worker takes it
  ASSERT_TRUE(WaitFor([&] { return pool.stats().running == 1; }, kEventTimeout,
                      "the gate task to run"));
  EXPECT_EQ(pool.Submit([](absl::Status) {}).code(),
            absl::StatusCode::kResourceExhausted);
  gate.Release();
}

TEST(WorkerPoolTest, RunsQueuedTasksInFifoOrder) {
  Gate gate;  // outlives the pool: a worker may still be inside it
  WorkerPool pool({.workers = 1, .max_queued_tasks = 10});
  ASSERT_TRUE(pool.Submit(gate.Task()).ok());
  std::vector<int> order;  // written by the one worker only
  absl::BlockingCounter done(5);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(pool.Submit([&, i](absl::Status) {
                      order.push_back(i);
                      done.DecrementCount();
                    })
                    .ok());
  }
  gate.Release();
  done.Wait();
  EXPECT_THAT(order, ::testing::ElementsAre(0, 1, 2, 3, 4));
}

TEST(WorkerPoolTest, ShutdownCancelsQueuedTasksAndWaitsForRunningOnes) {
  Gate gate;  // outlives the pool: a worker may still be inside it
  WorkerPool pool({.workers = 1, .max_queued_tasks = 10});
  ASSERT_TRUE(pool.Submit(gate.Task()).ok());
  ASSERT_TRUE(WaitFor([&] { return pool.stats().running == 1; }, kEventTimeout,
                      "the gate task to run"));
  std::vector<absl::Status> queued(3);
  absl::BlockingCounter cancelled(3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(pool.Submit([&, i](absl::Status status) {
                      queued[i] = status;
                      cancelled.DecrementCount();
                    })
                    .ok());
  }
  std::atomic<bool> shutdown_returned{false};
  std::thread stopper([&] {
    pool.Shutdown();
    shutdown_returned = true;
  });
  cancelled.Wait();  // queued tasks are told before the running one ends
  for (const absl::Status& s : queued) {
    EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
  }
  EXPECT_FALSE(shutdown_returned.load());  // still waiting for the gate
  gate.Release();
  stopper.join();
  EXPECT_TRUE(gate.start_status().ok());
  EXPECT_EQ(pool.Submit([](absl::Status) {}).code(),
            absl::StatusCode::kUnavailable);
}

// A second, concurrent Shutdown (the destructor racing an explicit call)
// also waits for the running task: it must not return while a worker may
// still touch what the caller is about to free.
TEST(WorkerPoolTest, EveryShutdownCallerWaitsForRunningTasks) {
  Gate gate;  // outlives the pool: a worker may still be inside it
  WorkerPool pool({.workers = 1, .max_queued_tasks = 1});
  ASSERT_TRUE(pool.Submit(gate.Task()).ok());
  ASSERT_TRUE(WaitFor([&] { return pool.stats().running == 1; }, kEventTimeout,
                      "the gate task to run"));
  std::jthread first([&] { pool.Shutdown(); });
  ASSERT_TRUE(WaitFor(
      [&] {
        return pool.Submit([](absl::Status) {}).code() ==
               absl::StatusCode::kUnavailable;
      },
      kEventTimeout, "the first Shutdown to begin"));
  absl::Notification second_returned;
  std::jthread second([&] {
    pool.Shutdown();
    second_returned.Notify();
  });
  EXPECT_FALSE(
      second_returned.WaitForNotificationWithTimeout(absl::Milliseconds(50)))
      << "a second Shutdown returned while a task was still running";
  gate.Release();
  EXPECT_TRUE(second_returned.WaitForNotificationWithTimeout(kEventTimeout));
}

TEST(WorkerPoolTest, StatsCountQueuedAndRunning) {
  Gate a, b, c;  // outlive the pool
  WorkerPool pool({.workers = 2, .max_queued_tasks = 5});
  ASSERT_TRUE(pool.Submit(a.Task()).ok());
  ASSERT_TRUE(pool.Submit(b.Task()).ok());
  ASSERT_TRUE(pool.Submit(c.Task()).ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        auto s = pool.stats();
        return s.running == 2 && s.queued == 1;
      },
      kEventTimeout, "2 running and 1 queued"));
  a.Release();
  b.Release();
  c.Release();
  EXPECT_TRUE(WaitFor(
      [&] {
        auto s = pool.stats();
        return s.running == 0 && s.queued == 0;
      },
      kEventTimeout, "an idle pool"));
}

}  // namespace
}  // namespace fetchd::compute
