#include "server/memory/memory.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace fetchd::memory {
namespace {

TEST(BudgetTest, TryReserveUpToTheLimitAndNoFurther) {
  Budget budget(100);
  std::optional<Reservation> a = budget.TryReserve(60);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->bytes(), 60);
  EXPECT_EQ(budget.reserved(), 60);
  EXPECT_EQ(budget.available(), 40);
  EXPECT_FALSE(budget.TryReserve(41).has_value());
  EXPECT_EQ(budget.reserved(), 60);  // a failed try takes nothing
  std::optional<Reservation> b = budget.TryReserve(40);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(budget.reserved(), 100);
  EXPECT_FALSE(budget.TryReserve(1).has_value());
  EXPECT_TRUE(budget.TryReserve(0).has_value());  // nothing always fits
  a.reset();
  EXPECT_EQ(budget.reserved(), 40);
  b.reset();
  EXPECT_EQ(budget.reserved(), 0);
  EXPECT_EQ(budget.peak(), 100);
}

TEST(BudgetTest, ReservationGrowsShrinksAndReleasesOnDestruction) {
  Budget budget(100);
  {
    Reservation r = budget.Empty();
    EXPECT_EQ(r.budget(), &budget);
    EXPECT_TRUE(r.TryGrow(30));
    EXPECT_TRUE(r.TryGrowTo(80));
    EXPECT_EQ(r.bytes(), 80);
    EXPECT_TRUE(r.TryGrowTo(50));  // already holds that much
    EXPECT_EQ(r.bytes(), 80);
    EXPECT_FALSE(r.TryGrow(21));
    EXPECT_EQ(r.bytes(), 80);
    EXPECT_EQ(budget.reserved(), 80);
    r.ShrinkTo(10);
    EXPECT_EQ(r.bytes(), 10);
    EXPECT_EQ(budget.reserved(), 10);
    r.ShrinkTo(50);  // never grows
    EXPECT_EQ(r.bytes(), 10);
  }
  EXPECT_EQ(budget.reserved(), 0);
}

TEST(BudgetTest, MovingHandsTheBytesOnOnce) {
  Budget budget(100);
  Reservation a = *budget.TryReserve(70);
  Reservation b = std::move(a);
  EXPECT_EQ(a.bytes(), 0);  // NOLINT(bugprone-use-after-move): moved-from
  EXPECT_EQ(b.bytes(), 70);
  EXPECT_EQ(budget.reserved(), 70);
  Reservation c = *budget.TryReserve(20);
  c = std::move(b);  // c's own 20 go back
  EXPECT_EQ(c.bytes(), 70);
  EXPECT_EQ(budget.reserved(), 70);
  c.Release();
  EXPECT_EQ(budget.reserved(), 0);
}

TEST(BudgetTest, MergeTakesTheOthersBytes) {
  Budget budget(100);
  Reservation all;  // empty: adopts the budget of what it merges
  Reservation a = *budget.TryReserve(30);
  Reservation b = *budget.TryReserve(40);
  all.Merge(std::move(a));
  all.Merge(std::move(b));
  EXPECT_EQ(all.bytes(), 70);
  EXPECT_EQ(all.budget(), &budget);
  EXPECT_EQ(a.bytes() + b.bytes(), 0);  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(budget.reserved(), 70);
  all.Release();
  EXPECT_EQ(budget.reserved(), 0);
}

TEST(BudgetTest, AReservationWithoutABudgetHasNoLimit) {
  Reservation r;
  EXPECT_TRUE(r.TryGrow(int64_t{1} << 40));
  EXPECT_EQ(r.bytes(), int64_t{1} << 40);
  r.Release();
  EXPECT_EQ(r.bytes(), 0);
}

TEST(BudgetTest, AnArmedWakeupRunsOnceOnTheNextRelease) {
  Budget budget(10);
  std::atomic<int> woken{0};
  const int id = budget.AddWaker([&] { woken.fetch_add(1); });
  Reservation r = *budget.TryReserve(10);
  {
    Reservation other = budget.Empty();
    EXPECT_TRUE(other.TryGrow(0));
  }
  r.ShrinkTo(5);
  EXPECT_EQ(woken.load(), 0);  // not armed
  budget.WakeOnRelease();
  r.ShrinkTo(2);
  EXPECT_EQ(woken.load(), 1);
  r.ShrinkTo(1);
  EXPECT_EQ(woken.load(), 1);  // one-shot
  budget.WakeOnRelease();
  budget.RemoveWaker(id);
  r.Release();
  EXPECT_EQ(woken.load(), 1);  // removed
}

// Many threads reserving and releasing at once: never past the limit, and
// every byte comes back.
TEST(BudgetTest, ConcurrentReservationsNeverPassTheLimit) {
  constexpr int64_t kLimit = 1000;
  Budget budget(kLimit);
  std::vector<std::thread> threads;
  std::atomic<int64_t> granted{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20000; ++i) {
        Reservation r = budget.Empty();
        if (r.TryGrow(1 + (i + t) % 300)) {
          granted.fetch_add(1, std::memory_order_relaxed);
          r.TryGrow(7);
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_GT(granted.load(), 0);
  EXPECT_LE(budget.peak(), kLimit);
  EXPECT_EQ(budget.reserved(), 0);
}

TEST(ParseCgroupMemoryLimitTest, NumbersMaxAndAbsurdValues) {
  EXPECT_EQ(ParseCgroupMemoryLimit("536870912\n"), int64_t{536870912});
  EXPECT_EQ(ParseCgroupMemoryLimit("1073741824"), int64_t{1} << 30);
  EXPECT_EQ(ParseCgroupMemoryLimit("max\n"), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit(""), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit("\n"), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit("0\n"), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit("-1\n"), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit("12abc"), std::nullopt);
  // cgroup v1's "no limit": 2^63 rounded down to a 4 KiB page.
  EXPECT_EQ(ParseCgroupMemoryLimit("9223372036854771712\n"), std::nullopt);
  EXPECT_EQ(ParseCgroupMemoryLimit("18446744073709551615"), std::nullopt);
}

TEST(ChooseBudgetTest, TheFlagWinsOverEverything) {
  const BudgetChoice c = ChooseBudget(12345, "1000000\n", "2000000\n");
  EXPECT_EQ(c.bytes, 12345);
  EXPECT_EQ(c.source, "flag");
}

TEST(ChooseBudgetTest, SixtyPercentOfTheCgroupV2Limit) {
  const BudgetChoice c = ChooseBudget(0, "1073741824\n", "4096\n");
  EXPECT_EQ(c.bytes, 644245094);  // 60% of 1 GiB
  EXPECT_EQ(c.source, "60% of cgroup v2 memory.max=1073741824");
}

TEST(ChooseBudgetTest, CgroupV1WhenV2HasNoLimit) {
  BudgetChoice c = ChooseBudget(0, "max\n", "524288000\n");
  EXPECT_EQ(c.bytes, 314572800);
  EXPECT_EQ(c.source, "60% of cgroup v1 memory.limit_in_bytes=524288000");
  c = ChooseBudget(0, std::nullopt, "524288000\n");
  EXPECT_EQ(c.bytes, 314572800);
}

TEST(ChooseBudgetTest, TheDefaultWithoutALimit) {
  BudgetChoice c = ChooseBudget(0, "max\n", "9223372036854771712\n");
  EXPECT_EQ(c.bytes, kDefaultBudgetBytes);
  EXPECT_EQ(c.source, "default");
  c = ChooseBudget(0, std::nullopt, std::nullopt, 777);
  EXPECT_EQ(c.bytes, 777);
  EXPECT_EQ(c.source, "default");
}

TEST(ChooseBudgetTest, LargeLimitsDoNotOverflow) {
  const int64_t limit = (int64_t{1} << 60) - 1;
  const BudgetChoice c = ChooseBudget(0, std::to_string(limit), std::nullopt);
  EXPECT_GT(c.bytes, limit / 100 * 59);
  EXPECT_LE(c.bytes, limit / 100 * 61);
}

TEST(ChooseBudgetTest, ThisProcessGetsAPositiveBudget) {
  EXPECT_EQ(ChooseBudgetForThisProcess(4096).bytes, 4096);
  const BudgetChoice c = ChooseBudgetForThisProcess(0);
  EXPECT_GT(c.bytes, 0);
  EXPECT_FALSE(c.source.empty());
}

}  // namespace
}  // namespace fetchd::memory
