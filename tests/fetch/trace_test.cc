// W3C trace context (server/fetch/trace.h): strict traceparent parsing, and
// the child traceparent the engine puts on each origin attempt when a batch
// or walk carries a trace. A real origin records what it saw.
#include "server/fetch/trace.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/fetch/fetch.h"
#include "tests/support/recording_origin.h"
#include "tests/support/test_server.h"

namespace fetchd::fetch {
namespace {

using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::QueryEscape;
using ::fetchd::testing::RecordingOrigin;
using ::testing::MatchesRegex;

// The W3C specification's own example.
constexpr char kTraceId[] = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr char kParentId[] = "00f067aa0ba902b7";
constexpr char kTraceparent[] =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
// What a child of kTraceparent looks like: same trace, any span, same flags.
constexpr char kChildPattern[] =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01";

TEST(ParseTraceparentTest, TakesAValidVersion00Value) {
  std::optional<TraceContext> trace = ParseTraceparent(kTraceparent);
  ASSERT_TRUE(trace.has_value());
  EXPECT_TRUE(trace->valid);
  EXPECT_EQ(trace->trace_id_hex(), kTraceId);
  EXPECT_EQ(trace->span_id_hex(), kParentId);
  EXPECT_EQ(std::string(trace->flags.data(), 2), "01");
  // Any flags byte (unknown bits are passed on, not judged).
  EXPECT_TRUE(ParseTraceparent(
                  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                  .has_value());
  EXPECT_TRUE(ParseTraceparent(
                  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff")
                  .has_value());
}

TEST(ParseTraceparentTest, RefusesEverythingElse) {
  for (const char* bad : {
           "",
           "00",
           // another version, or the forbidden ff
           "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           // all-zero ids are invalid
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
           // upper case, non-hex, wrong lengths, wrong separators
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
           "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
           // version 00 has exactly four fields
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
           " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       }) {
    EXPECT_FALSE(ParseTraceparent(bad).has_value()) << "'" << bad << "'";
  }
}

TEST(ChildTraceparentTest, SameTraceNewSpanSameFlags) {
  const TraceContext trace = *ParseTraceparent(kTraceparent);
  EXPECT_EQ(ChildTraceparentLine(trace, 0xab),
            absl::StrCat("traceparent: 00-", kTraceId, "-00000000000000ab-01"));
  EXPECT_TRUE(IsTraceparentHeader("TraceParent"));
  EXPECT_FALSE(IsTraceparentHeader("tracestate"));
}

// --- The engine
// ----------------------------------------------------------------

class EngineTraceTest : public ::testing::Test {
 protected:
  RecordingOrigin origin_;
  // Destroyed first: its closed connections let the origin stop at once.
  std::unique_ptr<Engine> engine_ = *Engine::Start({});

  void RunAll(std::vector<FetchSpec> specs, BatchOptions options) {
    absl::Notification done;
    engine_->Submit(
        std::move(specs), std::move(options), [](size_t, FetchResult) {},
        [&] { done.Notify(); });
    ASSERT_TRUE(done.WaitForNotificationWithTimeout(kEventTimeout));
  }

  static BatchOptions Traced() {
    BatchOptions options;
    options.trace = *ParseTraceparent(kTraceparent);
    return options;
  }

  // The traceparent of every request the origin saw, in order.
  std::vector<std::string> Traceparents() const {
    std::vector<std::string> out;
    for (const auto& seen : origin_.seen()) {
      auto it = seen.headers.find("traceparent");
      out.push_back(it == seen.headers.end() ? "" : it->second);
    }
    return out;
  }
};

// One child span per attempt: each retry is its own HTTP request.
TEST_F(EngineTraceTest, EachAttemptCarriesAChildSpanOfItsOwn) {
  FetchSpec spec;
  spec.url = origin_.Url("/unavailable");
  spec.retry.max_attempts = 3;
  spec.retry.initial_backoff = absl::Milliseconds(1);
  RunAll({spec}, Traced());
  const std::vector<std::string> seen = Traceparents();
  ASSERT_EQ(seen.size(), 3u);
  std::set<std::string> spans;
  for (const std::string& traceparent : seen) {
    EXPECT_THAT(traceparent, MatchesRegex(kChildPattern));
    spans.insert(traceparent.substr(36, 16));
  }
  EXPECT_EQ(spans.size(), 3u);  // a new span id each time
  EXPECT_FALSE(spans.contains(kParentId));
  EXPECT_FALSE(spans.contains("0000000000000000"));
}

TEST_F(EngineTraceTest, NoTraceNoHeader) {
  FetchSpec spec;
  spec.url = origin_.Url("/ok");
  RunAll({spec, spec}, BatchOptions());
  ASSERT_EQ(origin_.seen().size(), 2u);
  EXPECT_FALSE(origin_.SawHeader("traceparent"));
}

// The item's own traceparent is sent as given, and only it.
TEST_F(EngineTraceTest, AnItemsOwnTraceparentWins) {
  const std::string own =
      "00-11111111111111111111111111111111-2222222222222222-00";
  FetchSpec spec;
  spec.url = origin_.Url("/ok");
  spec.headers = {{"TraceParent", own}};
  RunAll({spec}, Traced());
  EXPECT_EQ(Traceparents(), std::vector<std::string>({own}));
}

// A redirect hop is part of its attempt: the same traceparent, whether
// curl follows it or the engine does (an item with credentials).
TEST_F(EngineTraceTest, RedirectHopsKeepTheAttemptsTraceparent) {
  FetchSpec plain;
  plain.url =
      origin_.Url("/redirect-to?url=" + QueryEscape(origin_.Url("/ok")));
  FetchSpec credentialed = plain;
  credentialed.headers = {{"Authorization", "Bearer t"}};
  for (const FetchSpec& spec : {plain, credentialed}) {
    const size_t before = origin_.seen().size();
    RunAll({spec}, Traced());
    const std::vector<std::string> seen = Traceparents();
    ASSERT_EQ(seen.size(), before + 2);
    EXPECT_THAT(seen[before], MatchesRegex(kChildPattern));
    EXPECT_EQ(seen[before + 1], seen[before]);
  }
}

TEST_F(EngineTraceTest, EveryPageOfAWalkIsAChildSpan) {
  FetchSpec first;
  first.url = origin_.Url("/next-to?url=" + QueryEscape(origin_.Url("/last")));
  PageStrategy strategy;
  strategy.kind = PageStrategy::Kind::kCursor;
  strategy.cursor_pointer = "/next";
  strategy.param.clear();
  WalkOptions options;
  options.trace = *ParseTraceparent(kTraceparent);
  absl::Notification done;
  auto walk = engine_->Walk(
      first, strategy, Paginator(strategy, first.url).StartPosition(), options,
      [](Page) {}, [&](absl::Status) { done.Notify(); });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kEventTimeout));
  const std::vector<std::string> seen = Traceparents();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_THAT(seen[0], MatchesRegex(kChildPattern));
  EXPECT_THAT(seen[1], MatchesRegex(kChildPattern));
  EXPECT_NE(seen[0], seen[1]);
}

}  // namespace
}  // namespace fetchd::fetch
