// The engine under a memory budget (server/fetch/engine_memory.cc), against
// the real test origin: admission waits at the budget and wakes on a
// release, bodies reserve as they arrive, a body that cannot fit fails
// RESOURCE_EXHAUSTED naming the budget, and every byte comes back.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/fetch/fetch.h"
#include "server/memory/memory.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd::fetch {
namespace {

using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::Origin;
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

FetchSpec Get(const std::string& url) {
  FetchSpec spec;
  spec.url = url;
  return spec;
}

std::unique_ptr<Engine> NewEngine(memory::Budget* budget) {
  Engine::Options options;
  options.memory_budget = budget;
  auto engine = Engine::Start(std::move(options));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

// What a test keeps of a result: never the result itself, whose bytes
// would stay reserved (unless `keep` holds them on purpose).
struct Seen {
  absl::Status status;
  size_t body_bytes = 0;
  int64_t reserved = 0;  // what the result held against the budget
};

struct Run {
  absl::Mutex mu;
  std::vector<Seen> seen ABSL_GUARDED_BY(mu);
  std::vector<FetchResult> kept ABSL_GUARDED_BY(mu);
  absl::Notification done;
};

// Submits `specs`; results are dropped as they arrive (their bytes go
// back at once) unless `keep`.
std::unique_ptr<Run> Submit(Engine& engine, std::vector<FetchSpec> specs,
                            int concurrency, bool keep = false) {
  auto run = std::make_unique<Run>();
  {
    absl::MutexLock lock(&run->mu);
    run->seen.resize(specs.size());
  }
  Run* r = run.get();
  engine.Submit(
      std::move(specs), {.max_concurrency = concurrency},
      [r, keep](size_t i, FetchResult result) {
        absl::MutexLock lock(&r->mu);
        r->seen[i] = {result.status, result.body.size(), result.memory.bytes()};
        if (keep) r->kept.push_back(std::move(result));
      },
      [r] { r->done.Notify(); });
  return run;
}

TEST(EngineMemoryTest, BodiesLargerTogetherThanTheBudgetWaitAndAllSucceed) {
  Origin origin;
  memory::Budget budget(1 << 20);  // 1 MiB
  auto engine = NewEngine(&budget);
  ASSERT_NE(engine, nullptr);
  // 16 x 200 KB = 3.2 MB at once, each of which fits alone.
  constexpr int kItems = 16;
  constexpr int kBody = 200'000;
  std::vector<FetchSpec> specs;
  for (int i = 0; i < kItems; ++i) {
    specs.push_back(Get(origin.Url(absl::StrCat("/bytes/", kBody))));
  }
  auto run = Submit(*engine, std::move(specs), kItems);
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kEventTimeout));
  absl::MutexLock lock(&run->mu);
  for (int i = 0; i < kItems; ++i) {
    EXPECT_TRUE(run->seen[i].status.ok()) << i << ": " << run->seen[i].status;
    EXPECT_EQ(run->seen[i].body_bytes, static_cast<size_t>(kBody)) << i;
    // The result carried its body's cost (Content-Length: reserved once,
    // exactly, at kBodyMemoryFactor bytes per byte).
    EXPECT_GE(run->seen[i].reserved, kBodyMemoryFactor * kBody) << i;
    EXPECT_LT(run->seen[i].reserved, kBodyMemoryFactor * kBody + 4096) << i;
  }
  EXPECT_LE(budget.peak(), budget.limit());
  EXPECT_GT(budget.peak(), kBody);
  EXPECT_TRUE(WaitFor([&] { return budget.reserved() == 0; }, kEventTimeout,
                      "every byte back"));
}

TEST(EngineMemoryTest, ABodyLargerThanTheBudgetFailsNamingIt) {
  Origin origin;
  memory::Budget budget(100'000);
  auto engine = NewEngine(&budget);
  ASSERT_NE(engine, nullptr);
  FetchSpec big = Get(origin.Url("/bytes/300000"));
  big.retry.max_attempts = 3;  // not retried: it would never fit
  big.retry.initial_backoff = absl::Milliseconds(10);
  auto run = Submit(*engine, {big, Get(origin.Url("/bytes/1000"))}, 2);
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kEventTimeout));
  absl::MutexLock lock(&run->mu);
  const absl::Status& status = run->seen[0].status;
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(),
              HasSubstr("memory budget of 100000 bytes is spent"));
  EXPECT_THAT(status.message(), HasSubstr("--memory_budget_bytes"));
  EXPECT_EQ(run->seen[0].body_bytes, 0u);
  EXPECT_TRUE(run->seen[1].status.ok()) << run->seen[1].status;
  EXPECT_EQ(origin.requests(), 2);  // the big one was not retried
  EXPECT_LE(budget.peak(), budget.limit());
  EXPECT_TRUE(WaitFor([&] { return budget.reserved() == 0; }, kEventTimeout,
                      "every byte back"));
}

TEST(EngineMemoryTest, AtTheBudgetNewTransfersWaitUntilARelease) {
  Origin origin;
  memory::Budget budget(100'000);
  auto engine = NewEngine(&budget);
  ASSERT_NE(engine, nullptr);
  // A result held by its consumer keeps 80 KB of the budget (a 40 KB body
  // at kBodyMemoryFactor)...
  auto first = Submit(*engine, {Get(origin.Url("/bytes/40000"))}, 1,
                      /*keep=*/true);
  ASSERT_TRUE(first->done.WaitForNotificationWithTimeout(kEventTimeout));
  EXPECT_GE(budget.reserved(), 80'000);
  // ...so the next transfer cannot take its first bytes, and waits.
  auto second = Submit(*engine, {Get(origin.Url("/bytes/5000"))}, 1);
  ASSERT_TRUE(WaitFor(
      [&] { return engine->stats().waiting == 1 && engine->stats().batches; },
      kEventTimeout, "the second item waiting"));
  EXPECT_FALSE(second->done.HasBeenNotified());
  EXPECT_EQ(origin.requests(), 1);
  // The consumer lets go: the loop wakes and the transfer runs.
  {
    absl::MutexLock lock(&first->mu);
    first->kept.clear();
  }
  ASSERT_TRUE(second->done.WaitForNotificationWithTimeout(kEventTimeout));
  absl::MutexLock lock(&second->mu);
  EXPECT_TRUE(second->seen[0].status.ok()) << second->seen[0].status;
  EXPECT_EQ(second->seen[0].body_bytes, 5000u);
  EXPECT_TRUE(WaitFor([&] { return budget.reserved() == 0; }, kEventTimeout,
                      "every byte back"));
}

// A big body waiting for room does not stop small fetches: bodies never grow
// into the last eighth of the budget, which is kept for first bytes.
TEST(EngineMemoryTest, APausedBigBodyDoesNotHoldUpSmallFetches) {
  Origin origin;
  memory::Budget budget(1 << 20);  // 1 MiB, 128 KiB of it headroom
  auto engine = NewEngine(&budget);
  ASSERT_NE(engine, nullptr);
  // Held by its consumer: 400 KB at kBodyMemoryFactor, 800 KB.
  auto holder = Submit(*engine, {Get(origin.Url("/bytes/400000"))}, 1,
                       /*keep=*/true);
  ASSERT_TRUE(holder->done.WaitForNotificationWithTimeout(kEventTimeout));
  // Needs 600 KB more than is free: it waits for room...
  FetchSpec big = Get(origin.Url("/bytes/300000"));
  big.timeout = absl::Seconds(20);
  auto waiting = Submit(*engine, {big}, 1);
  // ...while small fetches still start and finish.
  auto small = Submit(
      *engine, {Get(origin.Url("/bytes/1000")), Get(origin.Url("/bytes/1000"))},
      2);
  ASSERT_TRUE(small->done.WaitForNotificationWithTimeout(kEventTimeout));
  {
    absl::MutexLock lock(&small->mu);
    for (int i = 0; i < 2; ++i) {
      EXPECT_TRUE(small->seen[i].status.ok()) << small->seen[i].status;
      EXPECT_EQ(small->seen[i].body_bytes, 1000u);
    }
  }
  EXPECT_FALSE(waiting->done.HasBeenNotified());
  // The holder lets go: the big body resumes and completes.
  {
    absl::MutexLock lock(&holder->mu);
    holder->kept.clear();
  }
  ASSERT_TRUE(waiting->done.WaitForNotificationWithTimeout(kEventTimeout));
  absl::MutexLock lock(&waiting->mu);
  EXPECT_TRUE(waiting->seen[0].status.ok()) << waiting->seen[0].status;
  EXPECT_EQ(waiting->seen[0].body_bytes, 300000u);
  EXPECT_LE(budget.peak(), budget.limit());
}

TEST(EngineMemoryTest, AnItemThatCannotStartWithinItsTimeoutFails) {
  Origin origin;
  memory::Budget budget(100'000);
  auto engine = NewEngine(&budget);
  ASSERT_NE(engine, nullptr);
  auto holder = Submit(*engine, {Get(origin.Url("/bytes/40000"))}, 1,
                       /*keep=*/true);
  ASSERT_TRUE(holder->done.WaitForNotificationWithTimeout(kEventTimeout));
  FetchSpec waiting = Get(origin.Url("/bytes/10"));
  waiting.timeout = absl::Milliseconds(300);
  const absl::Time start = absl::Now();
  auto run = Submit(*engine, {waiting}, 1);
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kEventTimeout));
  // Shed once blocked for its timeout (the loop looks at least each second).
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(300));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  absl::MutexLock lock(&run->mu);
  EXPECT_EQ(run->seen[0].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(run->seen[0].status.message(),
              HasSubstr("memory budget of 100000 bytes is spent"));
  EXPECT_EQ(origin.requests(), 1);  // never sent
}

TEST(EngineMemoryTest, KeptHeadersAndPageItemsCount) {
  Origin origin;
  memory::Budget budget(1 << 20);
  auto engine = NewEngine(&budget);
  ASSERT_NE(engine, nullptr);
  FetchSpec spec = Get(origin.Url("/headers/4/1000"));
  spec.keep_headers = {"x-h-0", "x-h-1", "x-h-2", "x-h-3"};
  auto run = Submit(*engine, {spec}, 1, /*keep=*/true);
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kEventTimeout));
  {
    absl::MutexLock lock(&run->mu);
    ASSERT_TRUE(run->seen[0].status.ok()) << run->seen[0].status;
    ASSERT_EQ(run->kept.size(), 1u);
    EXPECT_EQ(run->kept[0].headers.size(), 4u);
    // Four kept header lines of 1000 characters each, plus the body.
    EXPECT_GE(run->seen[0].reserved,
              4 * 1000 + static_cast<int64_t>(run->seen[0].body_bytes));
    const int64_t held = run->seen[0].reserved;
    EXPECT_TRUE(WaitFor([&] { return budget.reserved() == held; },
                        kEventTimeout, "only the kept result reserved"));
    run->kept.clear();
  }
  EXPECT_TRUE(WaitFor([&] { return budget.reserved() == 0; }, kEventTimeout,
                      "every byte back"));

  // A walk's split items are held with their page until it is let go.
  PageStrategy strategy;
  strategy.items_pointer = "/items";
  strategy.split_items = true;
  FetchSpec first = Get(origin.Url("/pn/memory?page=1&last=3&pad=2000"));
  absl::Mutex mu;
  std::vector<Page> pages;
  absl::Notification done;
  absl::Status end;
  // A window wider than the walk: it runs to its end unread.
  auto walk = engine->Walk(
      first, strategy, Paginator(strategy, first.url).StartPosition(),
      {.prefetch = 8},
      [&](Page page) {
        absl::MutexLock lock(&mu);
        pages.push_back(std::move(page));
      },
      [&](absl::Status s) {
        end = std::move(s);
        done.Notify();
      });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kEventTimeout));
  EXPECT_TRUE(end.ok()) << end;
  absl::MutexLock lock(&mu);
  ASSERT_EQ(pages.size(), 3u);
  int64_t held = 0;
  for (const Page& page : pages) {
    int64_t items = 0;
    for (const std::string& item : page.items) items += item.size();
    EXPECT_GT(items, 0);
    EXPECT_GE(page.result.memory.bytes(),
              items + static_cast<int64_t>(page.result.body.size()));
    held += page.result.memory.bytes();
  }
  // The walk's last (empty, undelivered) page goes just after done.
  EXPECT_TRUE(WaitFor([&] { return budget.reserved() == held; }, kEventTimeout,
                      "the delivered pages' bytes reserved"));
  pages.clear();
  EXPECT_TRUE(WaitFor([&] { return budget.reserved() == 0; }, kEventTimeout,
                      "every byte back"));
}

}  // namespace
}  // namespace fetchd::fetch
