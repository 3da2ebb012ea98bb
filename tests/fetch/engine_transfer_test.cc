// The engine's transfer against hostile origins (engine_transfer.cc): the
// low-speed limit and the response header caps. A real loopback origin.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/fetch/fetch.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd::fetch {
namespace {

using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::Origin;
using ::testing::HasSubstr;

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

// Every item's result, in item order.
std::vector<FetchResult> RunAll(Engine& engine, std::vector<FetchSpec> specs) {
  std::vector<FetchResult> results(specs.size());
  absl::Notification done;
  engine.Submit(
      std::move(specs), {},
      [&](size_t i, FetchResult result) { results[i] = std::move(result); },
      [&] { done.Notify(); });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kEventTimeout));
  return results;
}

TEST(EngineTransferTest, TricklingOriginEndsAtTheLowSpeedLimit) {
  Origin origin;
  auto engine = NewEngine(
      {.min_bytes_per_second = 100, .low_speed_window = absl::Seconds(1)});
  FetchSpec drip = Get(origin.Url("/drip/40/200"));  // 5 bytes/s for 8 s
  drip.timeout = absl::Seconds(15);
  drip.retry.max_attempts = 1;
  const absl::Time start = absl::Now();
  auto results = RunAll(*engine, {drip, Get(origin.Url("/bytes/5000"))});
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kDeadlineExceeded)
      << results[0].status;
  EXPECT_THAT(results[0].status.message(),
              HasSubstr("fewer than 100 bytes/s for 1s"));
  EXPECT_THAT(results[0].status.message(), HasSubstr("--min_bytes_per_second"));
  // Ended by the limit, long before the drip or the item's timeout would.
  EXPECT_LT(took, absl::Seconds(6));
  EXPECT_TRUE(results[1].status.ok()) << results[1].status;
  EXPECT_EQ(results[1].body.size(), 5000u);
}

TEST(EngineTransferTest, ItemTimeoutStaysATimeoutWithTheLimitOn) {
  Origin origin;
  auto engine = NewEngine(
      {.min_bytes_per_second = 100, .low_speed_window = absl::Seconds(10)});
  FetchSpec slow = Get(origin.Url("/delay/5000"));
  slow.timeout = absl::Milliseconds(300);
  auto results = RunAll(*engine, {slow});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(results[0].status.message(), HasSubstr("timed out"));
}

TEST(EngineTransferTest, ResponseHeadersAreCappedInCountAndBytes) {
  Origin origin;
  auto engine = NewEngine(
      {.max_response_headers = 20, .max_response_header_bytes = 4096});
  auto results = RunAll(*engine, {
                                     Get(origin.Url("/headers/3/10")),
                                     Get(origin.Url("/headers/40/1")),
                                     Get(origin.Url("/headers/6/1000")),
                                     Get(origin.Url("/headers/1/5000")),
                                 });
  EXPECT_TRUE(results[0].status.ok()) << results[0].status;
  EXPECT_EQ(results[0].body, "headers");
  EXPECT_EQ(results[1].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(results[1].status.message(),
              HasSubstr("more than --max_response_headers=20"));
  EXPECT_EQ(results[2].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(results[2].status.message(),
              HasSubstr("exceed --max_response_header_bytes=4096"));
  EXPECT_EQ(results[3].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(results[3].status.message(),
              HasSubstr("line longer than --max_response_header_bytes=4096"));
}

TEST(EngineTransferTest, HeaderCapFailuresAreNotRetried) {
  Origin origin;
  auto engine = NewEngine({.max_response_headers = 5});
  FetchSpec spec = Get(origin.Url("/headers/50/1"));
  spec.retry.max_attempts = 3;
  spec.retry.initial_backoff = absl::Milliseconds(1);
  auto results = RunAll(*engine, {spec});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(results[0].attempts, 1);
  EXPECT_EQ(origin.requests(), 1);
}

TEST(EngineTransferTest, ALineOverCurlsOwnCapIsResourceExhausted) {
  Origin origin;
  auto engine = NewEngine({.max_response_header_bytes = 0});  // ours off
  auto results = RunAll(*engine, {Get(origin.Url("/headers/1/150000"))});
  EXPECT_EQ(results[0].status.code(), absl::StatusCode::kResourceExhausted)
      << results[0].status;
}

}  // namespace
}  // namespace fetchd::fetch
