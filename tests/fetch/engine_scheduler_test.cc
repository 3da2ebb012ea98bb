// The engine's admission and scheduling (engine_scheduler.cc): what the
// per-host cap counts, and how transfer slots are shared.
#include "server/fetch/engine_scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/fetch/fetch.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd::fetch {
namespace {

using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::Origin;
using internal::HostKey;

TEST(HostKeyTest, OneKeyPerHostAndPortWhateverTheSpelling) {
  EXPECT_EQ(HostKey("http://example.com/a"), "example.com:80");
  EXPECT_EQ(HostKey("https://example.com/a"), "example.com:443");
  EXPECT_EQ(HostKey("http://EXAMPLE.Com/a"), "example.com:80");
  EXPECT_EQ(HostKey("http://example.com./a"), "example.com:80");
  EXPECT_EQ(HostKey("HTTP://example.com:80/a?b#c"), "example.com:80");
  EXPECT_EQ(HostKey("http://example.com:8080"), "example.com:8080");
  EXPECT_EQ(HostKey("https://Example.COM.:443/x"), "example.com:443");
  EXPECT_EQ(HostKey("http://10.0.0.1:81/"), "10.0.0.1:81");
  EXPECT_EQ(HostKey("http://0x0a.0.0.1/"), "10.0.0.1:80");
  EXPECT_EQ(HostKey("http://167772161/"), "10.0.0.1:80");
  EXPECT_EQ(HostKey("http://[2001:DB8:0::1]:8443/"), "2001:db8::1:8443");
  EXPECT_EQ(HostKey("https://[::1]/"), "::1:443");
  EXPECT_NE(HostKey("http://example.com:81/"), HostKey("http://example.com/"));
}

std::unique_ptr<Engine> NewEngine(Engine::Options options) {
  auto engine = Engine::Start(std::move(options));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

FetchSpec Get(const std::string& url) {
  FetchSpec spec;
  spec.url = url;
  return spec;
}

// Letter case and a trailing dot are no way around --max_per_host.
TEST(EngineSchedulerTest, PerHostCapKeysOnTheNormalizedHost) {
  Origin origin;
  const std::string port = absl::StrCat(origin.port());
  Engine::Options options;
  options.max_per_host = 2;
  for (const char* name : {"origin.test", "ORIGIN.test", "Origin.Test",
                           "origin.test.", "ORIGIN.TEST."}) {
    options.resolve.push_back(absl::StrCat(name, ":", port, ":127.0.0.1"));
  }
  auto engine = NewEngine(options);
  std::vector<FetchSpec> specs;
  for (int i = 0; i < 4; ++i) {
    for (const char* name :
         {"origin.test", "ORIGIN.test", "Origin.Test", "origin.test."}) {
      specs.push_back(
          Get(absl::StrCat("http://", name, ":", port, "/delay/100")));
    }
  }
  std::vector<FetchResult> results(specs.size());
  absl::Notification done;
  engine->Submit(
      std::move(specs), {.max_concurrency = 16},
      [&](size_t i, FetchResult result) { results[i] = std::move(result); },
      [&] { done.Notify(); });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kEventTimeout));
  for (const FetchResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(origin.requests(), 16);
  EXPECT_EQ(origin.peak_concurrency(), 2);
}

// Completions in the order the engine reported them (callbacks run on its
// one I/O thread).
struct Completions {
  absl::Mutex mu;
  std::vector<std::string> order ABSL_GUARDED_BY(mu);  // "A" or "B"
  std::atomic<int> batches_done{0};
};

void SubmitAs(Engine& engine, const std::string& identity,
              std::vector<FetchSpec> specs, Completions& seen) {
  engine.Submit(
      std::move(specs), {.max_concurrency = 64, .identity = identity},
      [&seen, identity](size_t, FetchResult result) {
        EXPECT_TRUE(result.status.ok()) << result.status;
        absl::MutexLock lock(&seen.mu);
        seen.order.push_back(identity);
      },
      [&seen] { ++seen.batches_done; });
}

// Caller A queues 8 batches of 8 items before caller B asks for 4: with
// slots shared per batch, B would get 1/9 of them and finish near the end;
// shared per identity, B gets every other freed slot.
TEST(EngineSchedulerTest, SlotsAreSharedRoundRobinAcrossIdentities) {
  Origin origin;
  auto engine = NewEngine({.max_inflight = 2});
  Completions seen;
  for (int b = 0; b < 8; ++b) {
    SubmitAs(*engine, "A",
             std::vector<FetchSpec>(8, Get(origin.Url("/delay/20"))), seen);
  }
  SubmitAs(*engine, "B",
           std::vector<FetchSpec>(4, Get(origin.Url("/delay/20"))), seen);
  ASSERT_TRUE(::fetchd::testing::WaitFor([&] { return seen.batches_done == 9; },
                                         kEventTimeout, "every batch"));
  absl::MutexLock lock(&seen.mu);
  ASSERT_EQ(seen.order.size(), 68u);
  int a_before_last_b = 0, b_seen = 0;
  for (const std::string& who : seen.order) {
    if (who == "B" && ++b_seen == 4) break;
    if (who == "A") ++a_before_last_b;
  }
  EXPECT_EQ(b_seen, 4);
  // Alternating from B's arrival: at most the two A transfers running when
  // B came, plus one A per B, plus slack for A's transfers that started
  // before B's batch was taken in.
  EXPECT_LE(a_before_last_b, 10);
  EXPECT_EQ(origin.peak_concurrency(), 2);
}

TEST(EngineSchedulerTest, MaxInflightPerIdentityCapsOneCaller) {
  Origin origin;
  auto engine = NewEngine({.max_inflight = 16, .max_inflight_per_identity = 3});
  Completions seen;
  SubmitAs(*engine, "A",
           std::vector<FetchSpec>(12, Get(origin.Url("/delay/50"))), seen);
  SubmitAs(*engine, "A",
           std::vector<FetchSpec>(12, Get(origin.Url("/delay/50"))), seen);
  ASSERT_TRUE(::fetchd::testing::WaitFor([&] { return seen.batches_done == 2; },
                                         kEventTimeout, "both batches"));
  EXPECT_EQ(origin.requests(), 24);
  EXPECT_EQ(origin.peak_concurrency(), 3);
  // Another identity has its own 3 beside A's.
  origin.ResetCounters();
  SubmitAs(*engine, "A",
           std::vector<FetchSpec>(12, Get(origin.Url("/delay/50"))), seen);
  SubmitAs(*engine, "B",
           std::vector<FetchSpec>(12, Get(origin.Url("/delay/50"))), seen);
  ASSERT_TRUE(::fetchd::testing::WaitFor([&] { return seen.batches_done == 4; },
                                         kEventTimeout, "all four batches"));
  EXPECT_EQ(origin.peak_concurrency(), 6);
  EXPECT_EQ(engine->stats().inflight, 0);
}

}  // namespace
}  // namespace fetchd::fetch
