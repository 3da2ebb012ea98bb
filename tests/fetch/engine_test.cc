// The fetch engine against a real local HTTP origin: no mocks of libcurl.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <atomic>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/fetch/fetch.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd::fetch {
namespace {

using ::fetchd::testing::Origin;
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

constexpr absl::Duration kWait = absl::Seconds(20);

struct BatchRun {
  std::vector<FetchResult> results;
  std::vector<size_t> order;  // indices in completion order
  absl::Notification done;
  std::shared_ptr<BatchHandle> handle;
};

// Submits and returns at once; wait on run->done.
std::unique_ptr<BatchRun> Start(Engine& engine, std::vector<FetchSpec> specs,
                                BatchOptions options = {}) {
  auto run = std::make_unique<BatchRun>();
  run->results.resize(specs.size());
  BatchRun* r = run.get();
  r->handle = engine.Submit(
      std::move(specs), options,
      [r](size_t i, FetchResult result) {
        r->order.push_back(i);
        r->results[i] = std::move(result);
      },
      [r] { r->done.Notify(); });
  return run;
}

std::vector<FetchResult> RunAll(Engine& engine, std::vector<FetchSpec> specs,
                                BatchOptions options = {}) {
  auto run = Start(engine, std::move(specs), options);
  EXPECT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  return std::move(run->results);
}

FetchSpec Get(const std::string& url) {
  FetchSpec spec;
  spec.url = url;
  return spec;
}

FetchSpec Retrying(const std::string& url, int attempts,
                   absl::Duration backoff = absl::Milliseconds(50)) {
  FetchSpec spec = Get(url);
  spec.retry.max_attempts = attempts;
  spec.retry.initial_backoff = backoff;
  spec.retry.max_backoff = absl::Seconds(5);
  spec.retry.jitter = false;
  return spec;
}

std::unique_ptr<Engine> NewEngine(Engine::Options options = {}) {
  auto engine = Engine::Start(std::move(options));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

class EngineTest : public ::testing::Test {
 protected:
  Origin origin_;
  std::unique_ptr<Engine> engine_ = NewEngine();
};

TEST_F(EngineTest, EveryItemGetsItsOwnTypedResult) {
  FetchSpec json = Get(origin_.Url("/json"));
  json.keep_headers = {"content-type"};
  auto results = RunAll(*engine_, {json, Get(origin_.Url("/status/404")),
                                   Get(origin_.Url("/status/503"))});
  ASSERT_EQ(results.size(), 3u);
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[0].http_status, 200);
  EXPECT_EQ(results[0].body, R"({"a":{"b":[1,2,{"c":"x"}]},"n":null})");
  ASSERT_EQ(results[0].headers.size(), 1u);
  EXPECT_EQ(results[0].headers[0].first, "content-type");
  EXPECT_EQ(results[0].headers[0].second, "application/json");
  EXPECT_EQ(results[0].attempts, 1);
  EXPECT_GT(results[0].timings.total, absl::ZeroDuration());
  EXPECT_GE(results[0].timings.total, results[0].timings.first_byte);
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(results[1].http_status, 404);
  EXPECT_EQ(results[1].body, "status 404");
  EXPECT_EQ(results[2].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(results[2].http_status, 503);
}

TEST_F(EngineTest, InvalidItemsFailAloneAndTheRestRuns) {
  FetchSpec bad_retry = Get(origin_.Url("/json"));
  bad_retry.retry.max_attempts = 99;
  auto results = RunAll(*engine_, {Get("ftp://127.0.0.1/x"), Get("not a url"),
                                   Get(origin_.Url("/json")), bad_retry});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(results[0].status.message(), HasSubstr("only http and https"));
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(results[1].status.message(), HasSubstr("url"));
  EXPECT_TRUE(results[2].status.ok()) << results[2].status;
  EXPECT_EQ(results[3].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(results[3].status.message(), HasSubstr("retry.max_attempts"));
  EXPECT_EQ(origin_.requests(), 1);
}

TEST_F(EngineTest, MaxConcurrencyBoundsRequestsInFlight) {
  std::vector<FetchSpec> specs(12, Get(origin_.Url("/delay/50")));
  auto results = RunAll(*engine_, specs, {.max_concurrency = 3});
  for (const auto& r : results) EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(origin_.peak_concurrency(), 3);
}

TEST_F(EngineTest, GlobalInflightLimitHoldsAcrossBatches) {
  auto engine = NewEngine({.max_inflight = 4});
  std::vector<FetchSpec> specs(10, Get(origin_.Url("/delay/50")));
  auto a = Start(*engine, specs, {.max_concurrency = 10});
  auto b = Start(*engine, specs, {.max_concurrency = 10});
  ASSERT_TRUE(a->done.WaitForNotificationWithTimeout(kWait));
  ASSERT_TRUE(b->done.WaitForNotificationWithTimeout(kWait));
  EXPECT_EQ(origin_.peak_concurrency(), 4);
  EXPECT_EQ(origin_.requests(), 20);
}

TEST_F(EngineTest, WaitingBatchesShareSlotsRoundRobin) {
  // One slot for everything: the batches take turns, so the second one's
  // first request comes long before the first batch is through.
  auto engine = NewEngine({.max_inflight = 1});
  auto a =
      Start(*engine, std::vector<FetchSpec>(8, Get(origin_.Url("/flaky/ra/0"))),
            {.max_concurrency = 8});
  auto b =
      Start(*engine, std::vector<FetchSpec>(8, Get(origin_.Url("/flaky/rb/0"))),
            {.max_concurrency = 8});
  ASSERT_TRUE(a->done.WaitForNotificationWithTimeout(kWait));
  ASSERT_TRUE(b->done.WaitForNotificationWithTimeout(kWait));
  const auto ta = origin_.arrivals("ra");
  const auto tb = origin_.arrivals("rb");
  ASSERT_EQ(ta.size(), 8u);
  ASSERT_EQ(tb.size(), 8u);
  EXPECT_LT(tb.front(), ta[3]);
  EXPECT_LT(ta.back(), tb.back());
}

TEST_F(EngineTest, PerHostConnectionLimit) {
  auto engine = NewEngine({.max_per_host = 2});
  std::vector<FetchSpec> specs(8, Get(origin_.Url("/delay/50")));
  auto results = RunAll(*engine, specs, {.max_concurrency = 8});
  for (const auto& r : results) EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(origin_.peak_concurrency(), 2);
  EXPECT_LE(origin_.connections(), 2);
}

// The counters behind /metrics: attempts by status class, items by code,
// body bytes, and hosts at their limit while it holds.
TEST_F(EngineTest, StatsCountAttemptsItemsBytesAndFullHosts) {
  auto engine = NewEngine({.max_per_host = 2});
  auto results = RunAll(
      *engine, {Get(origin_.Url("/json")), Get(origin_.Url("/status/503")),
                Get(origin_.Url("/status/404"))});
  Engine::Stats stats = engine->stats();
  EXPECT_EQ(stats.attempts_by_class[2], 1);
  EXPECT_EQ(stats.attempts_by_class[4], 1);
  EXPECT_EQ(stats.attempts_by_class[5], 1);
  EXPECT_EQ(stats.attempts_by_class[0], 0);
  EXPECT_EQ(stats.items_by_code[static_cast<int>(absl::StatusCode::kOk)], 1);
  EXPECT_EQ(stats.items_by_code[static_cast<int>(absl::StatusCode::kNotFound)],
            1);
  EXPECT_EQ(
      stats.items_by_code[static_cast<int>(absl::StatusCode::kUnavailable)], 1);
  EXPECT_EQ(stats.body_bytes, static_cast<int64_t>(results[0].body.size() +
                                                   results[1].body.size() +
                                                   results[2].body.size()));

  std::vector<FetchSpec> slow(4, Get(origin_.Url("/delay/60000")));
  auto run = Start(*engine, slow, {.max_concurrency = 4});
  EXPECT_TRUE(WaitFor([&] { return engine->stats().inflight == 2; }, kWait,
                      "two transfers, the host's limit"));
  stats = engine->stats();
  EXPECT_EQ(stats.hosts, 1);
  EXPECT_EQ(stats.hosts_at_limit, 1);
  EXPECT_EQ(stats.waiting, 2);
  run->handle->Cancel();
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  EXPECT_TRUE(WaitFor([&] { return engine->stats().hosts == 0; }, kWait,
                      "no host with transfers"));
  EXPECT_EQ(engine->stats().hosts_at_limit, 0);
  // Cancelled transfers never finished an attempt; their items did end.
  EXPECT_EQ(engine->stats().attempts_by_class[0], 0);
  EXPECT_EQ(engine->stats()
                .items_by_code[static_cast<int>(absl::StatusCode::kCancelled)],
            4);
}

// Items for a full host wait in the engine, not in curl, and do not hold
// up a batch's items for another host.
TEST_F(EngineTest, AFullHostDoesNotHoldUpOtherHosts) {
  Origin other;
  auto engine = NewEngine({.max_per_host = 2});
  std::vector<FetchSpec> specs(4, Get(origin_.Url("/delay/500")));
  specs.push_back(Get(other.Url("/json")));
  specs.push_back(Get(other.Url("/json")));
  auto run = Start(*engine, specs, {.max_concurrency = 8});
  ASSERT_TRUE(WaitFor([&] { return engine->stats().inflight == 2; }, kWait,
                      "the slow host to fill"));
  EXPECT_EQ(engine->stats().waiting, 2);  // in the engine's FIFO
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  for (const auto& r : run->results) EXPECT_TRUE(r.status.ok()) << r.status;
  // The other host's items finish while the slow host's first two run;
  // its last two start only when those end.
  ASSERT_EQ(run->order.size(), 6u);
  EXPECT_THAT(std::vector<size_t>(run->order.begin(), run->order.begin() + 2),
              ::testing::UnorderedElementsAre(4, 5));
  EXPECT_EQ(origin_.peak_concurrency(), 2);
}

// One connection per host and several batches waiting for it: every slot
// the host frees goes to a waiting batch, so all of them finish.
TEST_F(EngineTest, BatchesWaitingForAFullHostAllFinish) {
  Origin other;
  auto engine = NewEngine({.max_per_host = 1});
  std::vector<std::unique_ptr<BatchRun>> runs;
  runs.push_back(
      Start(*engine, {Get(origin_.Url("/delay/100")), Get(other.Url("/json")),
                      Get(origin_.Url("/json"))}));
  for (int b = 0; b < 4; ++b) {
    runs.push_back(Start(
        *engine, {Get(origin_.Url("/json")), Get(origin_.Url("/delay/20")),
                  Get(other.Url("/json"))}));
  }
  for (auto& run : runs) {
    ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
    for (const auto& r : run->results) EXPECT_TRUE(r.status.ok()) << r.status;
  }
  EXPECT_EQ(origin_.peak_concurrency(), 1);
  EXPECT_EQ(other.peak_concurrency(), 1);
  const Engine::Stats stats = engine->stats();
  EXPECT_EQ(stats.inflight + stats.waiting + stats.batches, 0);
}

TEST_F(EngineTest, KeepAliveReusesConnections) {
  std::vector<FetchSpec> specs(40, Get(origin_.Url("/json")));
  auto results = RunAll(*engine_, specs, {.max_concurrency = 1});
  for (const auto& r : results) ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(origin_.connections(), 1);
}

TEST_F(EngineTest, BodyOverTheLimitIsResourceExhausted) {
  FetchSpec sized = Get(origin_.Url("/bytes/100000"));
  sized.max_body_bytes = 1000;
  FetchSpec chunked = Get(origin_.Url("/drip/50/1"));
  chunked.max_body_bytes = 10;
  FetchSpec fits = Get(origin_.Url("/bytes/1000"));
  fits.max_body_bytes = 1000;
  auto results = RunAll(*engine_, {sized, chunked, fits});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(results[0].status.message(), HasSubstr("max_body_bytes=1000"));
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(results[2].status.ok()) << results[2].status;
  EXPECT_EQ(results[2].body.size(), 1000u);
}

TEST_F(EngineTest, RedirectsFollowedUpToTheLimit) {
  FetchSpec ok = Get(origin_.Url("/redirect/3"));
  FetchSpec too_many = Get(origin_.Url("/redirect/3"));
  too_many.max_redirects = 2;
  FetchSpec not_followed = Get(origin_.Url("/redirect/1"));
  not_followed.max_redirects = 0;
  FetchSpec to_ftp = Get(origin_.Url("/redirect-to?url=ftp://127.0.0.1/x"));
  auto results = RunAll(*engine_, {ok, too_many, not_followed, to_ftp});
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[0].final_url, origin_.Url("/redirect/0"));
  EXPECT_EQ(results[0].body, "arrived");
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(results[1].status.message(), HasSubstr("max_redirects=2"));
  EXPECT_TRUE(results[2].status.ok());
  EXPECT_EQ(results[2].http_status, 302);
  EXPECT_EQ(results[3].status.code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, ItemTimeoutIsDeadlineExceeded) {
  FetchSpec slow = Get(origin_.Url("/delay/3000"));
  slow.timeout = absl::Milliseconds(100);
  auto results = RunAll(*engine_, {slow, Get(origin_.Url("/json"))});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(results[1].status.ok());
}

TEST_F(EngineTest, DeadlineReturnsFinishedItemsAndExpiresTheRest) {
  const absl::Time deadline = absl::Now() + absl::Milliseconds(400);
  auto run = Start(*engine_,
                   {Get(origin_.Url("/json")), Get(origin_.Url("/delay/5000")),
                    Get(origin_.Url("/status/200"))},
                   {.deadline = deadline});
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  EXPECT_LT(absl::Now() - deadline, absl::Seconds(2));  // not the 5 s delay
  EXPECT_TRUE(run->results[0].status.ok());
  EXPECT_EQ(run->results[1].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(run->results[2].status.ok());
}

TEST_F(EngineTest, CancelRemovesEveryTransferOfTheBatch) {
  std::vector<FetchSpec> specs(6, Get(origin_.Url("/delay/10000")));
  auto run = Start(*engine_, specs, {.max_concurrency = 6});
  ASSERT_TRUE(WaitFor([&] { return origin_.in_progress() == 6; }, kWait,
                      "six requests at the origin"));
  run->handle->Cancel();
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  for (const auto& r : run->results) {
    EXPECT_EQ(r.status.code(), absl::StatusCode::kCancelled);
  }
  EXPECT_EQ(engine_->stats().inflight, 0);
  EXPECT_EQ(engine_->stats().batches, 0);
}

TEST_F(EngineTest, RetriesUntilSuccessWithBackoffBetweenAttempts) {
  auto results =
      RunAll(*engine_,
             {Retrying(origin_.Url("/flaky/k1/2"), 3, absl::Milliseconds(60))});
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[0].attempts, 3);
  EXPECT_EQ(results[0].body, "finally");
  const auto times = origin_.arrivals("k1");
  ASSERT_EQ(times.size(), 3u);
  // Exponential backoff without jitter: 60 ms, then 120 ms (lower bounds).
  EXPECT_GE(times[1] - times[0], absl::Milliseconds(60));
  EXPECT_GE(times[2] - times[1], absl::Milliseconds(120));
  EXPECT_EQ(engine_->stats().retries, 2);
}

TEST_F(EngineTest, RetriesStopAtMaxAttempts) {
  auto results =
      RunAll(*engine_,
             {Retrying(origin_.Url("/flaky/k2/9"), 3, absl::Milliseconds(1))});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(results[0].attempts, 3);
  EXPECT_EQ(origin_.arrivals("k2").size(), 3u);
}

TEST_F(EngineTest, RetriesOnlyTheConfiguredClasses) {
  FetchSpec no_5xx = Retrying(origin_.Url("/flaky/k3/1"), 3);
  no_5xx.retry.on_5xx = false;
  FetchSpec not_found = Retrying(origin_.Url("/status/404"), 3);
  auto results = RunAll(*engine_, {no_5xx, not_found});
  EXPECT_EQ(results[0].attempts, 1);
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(results[1].attempts, 1);
}

TEST_F(EngineTest, ConnectErrorsAreRetried) {
  // Port 1 on loopback refuses connections.
  auto results = RunAll(
      *engine_, {Retrying("http://127.0.0.1:1/x", 2, absl::Milliseconds(1))});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(results[0].attempts, 2);
}

TEST_F(EngineTest, ResetMidBodyIsUnavailable) {
  auto results = RunAll(*engine_, {Get(origin_.Url("/reset/200000"))});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kUnavailable)
      << results[0].status;
}

TEST_F(EngineTest, RetryAfterSecondsIsHonored) {
  auto results = RunAll(*engine_, {Retrying(origin_.Url("/retry-after/k4/1/1"),
                                            2, absl::Milliseconds(1))});
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  const auto times = origin_.arrivals("k4");
  ASSERT_EQ(times.size(), 2u);
  EXPECT_GE(times[1] - times[0], absl::Seconds(1));
}

TEST_F(EngineTest, RetryAfterHttpDateIsHonored) {
  auto results =
      RunAll(*engine_, {Retrying(origin_.Url("/retry-after-date/k5/1/1"), 2,
                                 absl::Milliseconds(1))});
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  const auto times = origin_.arrivals("k5");
  ASSERT_EQ(times.size(), 2u);
  // The date is 2 s ahead at one-second resolution: at least ~1 s of wait.
  EXPECT_GE(times[1] - times[0], absl::Milliseconds(900));
}

TEST_F(EngineTest, RetryAfterIsCappedByMaxBackoff) {
  FetchSpec spec =
      Retrying(origin_.Url("/retry-after/k6/1/30"), 2, absl::Milliseconds(1));
  spec.retry.max_backoff = absl::Milliseconds(50);
  auto results = RunAll(*engine_, {spec});
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  const auto times = origin_.arrivals("k6");
  ASSERT_EQ(times.size(), 2u);
  EXPECT_LT(times[1] - times[0], absl::Seconds(5));
}

TEST_F(EngineTest, NoRetryWhoseBackoffEndsPastTheDeadline) {
  auto results =
      RunAll(*engine_, {Retrying(origin_.Url("/retry-after/k7/1/10"), 3)},
             {.deadline = absl::Now() + absl::Seconds(2)});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(results[0].status.message(), HasSubstr("past the deadline"));
  EXPECT_EQ(results[0].attempts, 1);
}

TEST_F(EngineTest, SpentRetryBudgetFailsAtOnce) {
  auto engine = NewEngine({.retry_budget_ratio = 0, .retry_budget_tokens = 2});
  std::vector<FetchSpec> specs;
  for (int i = 0; i < 5; ++i) {
    specs.push_back(
        Retrying(origin_.Url("/status/503"), 3, absl::Milliseconds(1)));
  }
  auto results = RunAll(*engine, specs, {.max_concurrency = 1});
  int denied = 0;
  int attempts = 0;
  for (const auto& r : results) {
    EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
    denied += absl::StrContains(r.status.message(), "retry budget");
    attempts += r.attempts;
  }
  EXPECT_EQ(attempts, 5 + 2);  // two tokens, two retries
  EXPECT_GE(denied, 4);
  EXPECT_EQ(engine->stats().retries, 2);
  EXPECT_GE(engine->stats().retries_denied, 4);
}

TEST_F(EngineTest, FailFastCancelsTheRest) {
  auto run =
      Start(*engine_,
            {Get(origin_.Url("/delay/5000")), Get(origin_.Url("/status/500")),
             Get(origin_.Url("/delay/5000"))},
            {.max_concurrency = 3, .fail_fast = true});
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  ASSERT_FALSE(run->order.empty());
  EXPECT_EQ(run->order[0], 1u);
  EXPECT_EQ(run->results[1].status.code(), absl::StatusCode::kUnavailable);
  for (size_t i : {0, 2}) {
    EXPECT_EQ(run->results[i].status.code(), absl::StatusCode::kCancelled);
    EXPECT_THAT(run->results[i].status.message(), HasSubstr("fail_fast"));
  }
}

TEST_F(EngineTest, FailFastOnAnInvalidItemFetchesNothing) {
  auto run = Start(
      *engine_,
      {Get(origin_.Url("/json")), Get("ftp://x/"), Get(origin_.Url("/json"))},
      {.fail_fast = true});
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  EXPECT_EQ(run->results[1].status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(run->results[0].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(run->results[2].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(origin_.requests(), 0);
  const Engine::Stats stats = engine_->stats();
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.inflight, 0);
  EXPECT_EQ(stats.batches, 0);
}

TEST_F(EngineTest, AddressPolicyRefusesTheConnection) {
  int checked = 0;  // written on the I/O thread, read after done
  auto engine = NewEngine({.address_policy = [&](const sockaddr* a, socklen_t,
                                                 absl::string_view host) {
    ++checked;
    EXPECT_EQ(a->sa_family, AF_INET);
    EXPECT_EQ(host, "127.0.0.1");
    return absl::PermissionDeniedError("loopback is not allowed");
  }});
  auto results = RunAll(
      *engine, {Retrying(origin_.Url("/json"), 3, absl::Milliseconds(1))});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(results[0].attempts, 1);  // a refusal is not retried
  EXPECT_EQ(checked, 1);
  EXPECT_EQ(origin_.requests(), 0);
}

// A host with two addresses, the first (::1) refused by the policy and the
// second (127.0.0.1) allowed: the transfer connects on the second, and when
// it then times out the item fails DEADLINE_EXCEEDED and is retried; the
// earlier refusal of the other address is not why it failed.
TEST_F(EngineTest, ARefusalOfOneAddressDoesNotDecideALaterFailure) {
  std::atomic<int> refused{0}, allowed{0};
  auto engine =
      NewEngine({.address_policy =
                     [&](const sockaddr* a, socklen_t, absl::string_view) {
                       if (a->sa_family == AF_INET6) {
                         ++refused;
                         return absl::PermissionDeniedError("no IPv6 here");
                       }
                       ++allowed;
                       return absl::OkStatus();
                     },
                 .resolve = {absl::StrCat("two.test:", origin_.port(),
                                          ":[::1],127.0.0.1")}});
  FetchSpec spec =
      Retrying(absl::StrCat("http://two.test:", origin_.port(), "/delay/5000"),
               2, absl::Milliseconds(1));
  spec.timeout = absl::Milliseconds(300);
  auto results = RunAll(*engine, {spec});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kDeadlineExceeded)
      << results[0].status;
  EXPECT_EQ(results[0].attempts, 2);
  EXPECT_GE(refused.load(), 1);  // the refusal happened, and did not decide
  EXPECT_GE(allowed.load(), 2);

  // Every address refused: PERMISSION_DENIED, one attempt, no socket.
  auto none =
      NewEngine({.address_policy =
                     [&](const sockaddr*, socklen_t, absl::string_view) {
                       return absl::PermissionDeniedError("nothing here");
                     },
                 .resolve = {absl::StrCat("two.test:", origin_.port(),
                                          ":[::1],127.0.0.1")}});
  results = RunAll(*none, {spec});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kPermissionDenied)
      << results[0].status;
  EXPECT_EQ(results[0].status.message(), "nothing here");
  EXPECT_EQ(results[0].attempts, 1);
}

TEST_F(EngineTest, PostSendsHeadersAndBody) {
  FetchSpec post = Get(origin_.Url("/echo"));
  post.method = Method::kPost;
  post.body = "hello";
  post.headers = {{"X-Trace", "abc"}};
  FetchSpec head = Get(origin_.Url("/bytes/500"));
  head.method = Method::kHead;
  auto results = RunAll(*engine_, {post, head});
  ASSERT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_THAT(results[0].body, HasSubstr("\"method\":\"POST\""));
  EXPECT_THAT(results[0].body, HasSubstr("\"X-Trace\":\"abc\""));
  EXPECT_THAT(results[0].body, HasSubstr("\"body\":\"hello\""));
  EXPECT_TRUE(results[1].status.ok()) << results[1].status;
  EXPECT_EQ(results[1].http_status, 200);
  EXPECT_EQ(results[1].body, "");
}

// The proxy variables of the environment are ignored (a proxy the engine
// does not know of would hide the real address from the address policy);
// Options::proxy is used. Here the proxy is the origin, which answers a
// request for another address (an absolute URL it has no route for) with
// 404; without the proxy the connection to port 1 is refused.
TEST(EngineProxyTest, OnlyTheConfiguredProxyIsUsed) {
  Origin proxy;
  ASSERT_EQ(setenv("http_proxy", proxy.Url("").c_str(), 1), 0);
  std::unique_ptr<Engine> direct = NewEngine();
  ASSERT_NE(direct, nullptr);
  auto results = RunAll(*direct, {Get("http://127.0.0.2:1/json")});
  unsetenv("http_proxy");
  EXPECT_EQ(results[0].http_status, 0);
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kUnavailable)
      << results[0].status;
  EXPECT_EQ(proxy.requests(), 0);

  std::unique_ptr<Engine> proxied = NewEngine({.proxy = proxy.Url("")});
  ASSERT_NE(proxied, nullptr);
  results = RunAll(*proxied, {Get("http://127.0.0.2:1/json")});
  EXPECT_EQ(results[0].http_status, 404) << results[0].status;
  EXPECT_EQ(proxy.requests(), 1);
}

TEST_F(EngineTest, ReusedHandlesCarryNothingOver) {
  // One at a time, so each transfer reuses the previous one's easy handle.
  FetchSpec post = Get(origin_.Url("/echo"));
  post.method = Method::kPost;
  post.body = "first";
  post.headers = {{"X-Only-Once", "1"}};
  FetchSpec head = Get(origin_.Url("/bytes/7"));
  head.method = Method::kHead;
  auto results = RunAll(
      *engine_,
      {post, Get(origin_.Url("/echo")), head, Get(origin_.Url("/bytes/7"))},
      {.max_concurrency = 1});
  for (const auto& r : results) ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_THAT(results[0].body, HasSubstr("\"method\":\"POST\""));
  EXPECT_EQ(results[1].body, R"({"method":"GET","headers":{},"body":""})");
  EXPECT_EQ(results[2].body, "");
  EXPECT_EQ(results[3].body, "xxxxxxx");
}

TEST_F(EngineTest, ResultsArriveAsItemsComplete) {
  auto run = Start(*engine_,
                   {Get(origin_.Url("/delay/300")), Get(origin_.Url("/json"))},
                   {.max_concurrency = 2});
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  EXPECT_THAT(run->order, ::testing::ElementsAre(1, 0));
}

TEST_F(EngineTest, DestroyingTheEngineCancelsWhatIsLeft) {
  auto engine = NewEngine();
  auto run = Start(*engine, {Get(origin_.Url("/delay/10000"))});
  ASSERT_TRUE(WaitFor([&] { return origin_.in_progress() == 1; }, kWait,
                      "the request at the origin"));
  engine.reset();
  ASSERT_TRUE(run->done.HasBeenNotified());
  EXPECT_EQ(run->results[0].status.code(), absl::StatusCode::kCancelled);
}

// fetch.h promises each callback exactly once, also for a batch or walk
// submitted while the engine stops: here from a callback of the batch the
// shutdown ends, so the submission is certain to fall in that window.
TEST_F(EngineTest, SubmittedDuringShutdownStillGetsEveryCallbackOnce) {
  auto engine = NewEngine();
  Engine* raw = engine.get();
  std::atomic<int> late_items{0}, late_done{0}, walk_done{0};
  absl::Status late_status, walk_status;
  BatchRun first;
  first.results.resize(1);
  first.handle = engine->Submit(
      {Get(origin_.Url("/delay/10000"))}, {},
      [&](size_t i, FetchResult result) {
        first.results[i] = std::move(result);
        // On the I/O thread, during shutdown.
        raw->Submit(
            {Get(origin_.Url("/status/200")), Get(origin_.Url("/status/200"))},
            {},
            [&](size_t, FetchResult late) {
              late_status = late.status;
              ++late_items;
            },
            [&] { ++late_done; });
        PageStrategy strategy;
        raw->Walk(
            Get(origin_.Url("/pn/late?page=1&last=3")), strategy,
            Paginator(strategy, origin_.Url("/pn/late?page=1&last=3"))
                .StartPosition(),
            {}, [](Page) {},
            [&](absl::Status status) {
              walk_status = std::move(status);
              ++walk_done;
            });
      },
      [&] { first.done.Notify(); });
  ASSERT_TRUE(WaitFor([&] { return origin_.in_progress() == 1; }, kWait,
                      "the request at the origin"));
  engine.reset();
  ASSERT_TRUE(first.done.HasBeenNotified());
  EXPECT_EQ(first.results[0].status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(late_items.load(), 2);
  EXPECT_EQ(late_done.load(), 1);
  EXPECT_EQ(late_status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(late_status.message(), HasSubstr("shutting down"));
  EXPECT_EQ(walk_done.load(), 1);
  EXPECT_EQ(walk_status.code(), absl::StatusCode::kUnavailable);
}

// A walk as the engine runs it, with a consumer in the test's hands.
struct WalkRun {
  absl::Mutex mu;
  std::vector<Page> pages ABSL_GUARDED_BY(mu);
  absl::Notification done;
  absl::Status status;
  std::shared_ptr<WalkHandle> handle;
  size_t delivered() {
    absl::MutexLock lock(&mu);
    return pages.size();
  }
};

std::unique_ptr<WalkRun> StartWalk(Engine& engine, const std::string& url,
                                   PageStrategy strategy, int prefetch) {
  auto run = std::make_unique<WalkRun>();
  WalkRun* r = run.get();
  const WalkPosition from = Paginator(strategy, url).StartPosition();
  r->handle = engine.Walk(
      Get(url), strategy, from, WalkOptions{.prefetch = prefetch},
      [r](Page page) {
        absl::MutexLock lock(&r->mu);
        r->pages.push_back(std::move(page));
      },
      [r](absl::Status status) {
        r->status = std::move(status);
        r->done.Notify();
      });
  return run;
}

// Without consumption the walk stops at exactly `prefetch` pages; each
// consumed page lets exactly one more go.
TEST_F(EngineTest, WalkWindowHoldsUntilPagesAreConsumed) {
  PageStrategy strategy;
  strategy.items_pointer = "/items";
  auto run = StartWalk(*engine_, origin_.Url("/pn/w?last=50"), strategy, 3);
  ASSERT_TRUE(
      WaitFor([&] { return run->delivered() == 3; }, kWait, "three pages"));
  // Not synchronisation: a window that leaked would fetch on meanwhile.
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(origin_.arrivals("w").size(), 3u);
  EXPECT_EQ(run->delivered(), 3u);
  run->handle->Consumed();
  ASSERT_TRUE(
      WaitFor([&] { return run->delivered() == 4; }, kWait, "the fourth page"));
  EXPECT_EQ(origin_.arrivals("w").size(), 4u);
  // Consuming everything runs the walk to its end (page 51 is empty).
  for (int i = 0; i < 60; ++i) run->handle->Consumed();
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  EXPECT_TRUE(run->status.ok()) << run->status;
  absl::MutexLock lock(&run->mu);
  ASSERT_EQ(run->pages.size(), 50u);
  for (size_t i = 0; i < run->pages.size(); ++i) {
    EXPECT_EQ(run->pages[i].index, static_cast<int64_t>(i));
  }
  EXPECT_EQ(engine_->stats().batches, 0);
}

TEST_F(EngineTest, CancelledWalkEndsAndLeavesNothingBehind) {
  auto run =
      StartWalk(*engine_, origin_.Url("/drip/100000/5"), PageStrategy{}, 2);
  ASSERT_TRUE(WaitFor([&] { return engine_->stats().inflight == 2; }, kWait,
                      "two pages in flight"));
  run->handle->Cancel();
  ASSERT_TRUE(run->done.WaitForNotificationWithTimeout(kWait));
  EXPECT_EQ(run->status.code(), absl::StatusCode::kCancelled);
  const Engine::Stats stats = engine_->stats();
  EXPECT_EQ(stats.inflight, 0);
  EXPECT_EQ(stats.waiting, 0);
  EXPECT_EQ(stats.batches, 0);
}

}  // namespace
}  // namespace fetchd::fetch
