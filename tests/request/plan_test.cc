// server/request/plan.cc: a walk's fingerprint, which binds its resume
// tokens to it; the caps on a request's lists; the caller's identity.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/request/request.h"

namespace fetchd::request {
namespace {

v1::FetchPagesRequest CursorWalk(const std::string& pointer,
                                 const std::string& items_pointer) {
  v1::FetchPagesRequest request;
  request.mutable_first()->set_url("http://127.0.0.1:1/list");
  request.mutable_cursor()->set_pointer(pointer);
  request.set_items_pointer(items_pointer);
  return request;
}

std::string FingerprintOf(const v1::FetchPagesRequest& request) {
  FetchConfig config;
  absl::StatusOr<WalkPlan> plan =
      PlanWalk(request, config, {}, absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(plan.ok()) << plan.status();
  return plan.ok() ? plan->fingerprint : "";
}

TEST(WalkFingerprintTest, IsSha256Hex) {
  const std::string f = FingerprintOf(CursorWalk("/next", "/items"));
  EXPECT_EQ(f.size(), 64u);
  for (char c : f) EXPECT_TRUE(absl::ascii_isxdigit(c)) << f;
  EXPECT_EQ(f, FingerprintOf(CursorWalk("/next", "/items")));  // stable
  EXPECT_NE(f, FingerprintOf(CursorWalk("/next", "/data")));
}

// Fields that joined with a separator would read alike are told apart (each
// is length-prefixed): two walks never share a fingerprint by construction.
TEST(WalkFingerprintTest, FieldBoundariesCount) {
  EXPECT_NE(FingerprintOf(CursorWalk("/a\n/b", "/c")),
            FingerprintOf(CursorWalk("/a", "/b\n/c")));
}

// --- Caps on the request's lists and on max_concurrency (#16) -------------

using ::testing::HasSubstr;

v1::BatchFetchRequest OneItem() {
  v1::BatchFetchRequest request;
  request.add_items()->set_url("http://127.0.0.1:1/");
  return request;
}

absl::StatusOr<BatchPlan> Plan(const v1::BatchFetchRequest& request,
                               const FetchConfig& config = FetchConfig()) {
  return PlanBatch(request, config, {}, absl::Now() + absl::Seconds(30));
}

TEST(ListCapsTest, ResponseHeadersAreDeduplicatedThenCappedAt64) {
  v1::BatchFetchRequest request = OneItem();
  // 64 distinct names, each three times in different cases: 64 kept.
  for (int i = 0; i < 64; ++i) {
    request.add_response_headers(absl::StrCat("X-H", i));
    request.add_response_headers(absl::StrCat("x-h", i));
    request.add_response_headers(absl::StrCat("X-h", i));
  }
  absl::StatusOr<BatchPlan> plan = Plan(request);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->specs.size(), 1u);
  const std::vector<std::string>& keep = plan->specs[0].keep_headers;
  ASSERT_EQ(keep.size(), 64u);
  EXPECT_EQ(keep[0], "x-h0");  // lower case, first-seen order
  EXPECT_EQ(keep[63], "x-h63");
  request.add_response_headers("X-One-More");
  plan = Plan(request);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("response_headers has more than 64 distinct "
                        "entries; the limit is 64"));
}

// The list is copied into every item: its bytes are bounded too.
TEST(ListCapsTest, ResponseHeaderNamesAreBoundedInBytes) {
  v1::BatchFetchRequest request = OneItem();
  request.add_response_headers(std::string(2048, 'x'));
  ASSERT_TRUE(Plan(request).ok());
  request.add_response_headers("y");
  absl::StatusOr<BatchPlan> plan = Plan(request);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("response_headers has 2049 bytes of distinct names; "
                        "the limit is 2048"));
}

TEST(ListCapsTest, CurlCodesAreDeduplicatedThenCappedAt32) {
  v1::BatchFetchRequest request = OneItem();
  request.mutable_retry()->set_max_attempts(2);
  for (int round = 0; round < 10; ++round) {
    for (int code = 1; code <= 32; ++code) {
      request.mutable_retry()->add_curl_codes(code);
    }
  }
  absl::StatusOr<BatchPlan> plan = Plan(request);
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->specs.size(), 1u);
  EXPECT_EQ(plan->specs[0].retry.on_curl_codes.size(), 32u);
  request.mutable_retry()->add_curl_codes(33);
  plan = Plan(request);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("retry.curl_codes has more than 32 distinct entries; "
                        "the limit is 32"));
}

TEST(ListCapsTest, WalkListsAreCappedToo) {
  v1::FetchPagesRequest request = CursorWalk("/next", "/items");
  for (int i = 0; i < 65; ++i) {
    request.add_response_headers(absl::StrCat("x-", i));
  }
  FetchConfig config;
  absl::StatusOr<WalkPlan> plan =
      PlanWalk(request, config, {}, absl::Now() + absl::Seconds(30));
  ASSERT_FALSE(plan.ok());
  EXPECT_THAT(plan.status().message(), HasSubstr("response_headers"));
  request.clear_response_headers();
  for (int round = 0; round < 3; ++round) {
    for (int status = 400; status < 432; ++status) {
      request.add_stop_statuses(status);
    }
  }
  plan = PlanWalk(request, config, {}, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->strategy.stop_statuses.size(), 32u);
  request.add_stop_statuses(500);
  plan = PlanWalk(request, config, {}, absl::Now() + absl::Seconds(30));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("stop_statuses has more than 32 distinct entries"));
}

TEST(ListCapsTest, MaxConcurrencyIsAtMostMaxInflightFetches) {
  FetchConfig config;
  config.engine.max_inflight = 16;
  config.max_concurrency = 1024;
  config.default_concurrency = 64;
  v1::BatchFetchRequest request = OneItem();
  request.set_max_concurrency(16);
  absl::StatusOr<BatchPlan> plan = Plan(request, config);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->options.max_concurrency, 16);
  request.set_max_concurrency(17);
  plan = Plan(request, config);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("max_concurrency must be at most 16 "
                        "(--max_inflight_fetches"));
  EXPECT_THAT(plan.status().message(), HasSubstr("got 17"));
  // Unset: the default (64) is cut to what the server runs.
  request.set_max_concurrency(0);
  plan = Plan(request, config);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->options.max_concurrency, 16);
}

// --- The caller's identity: the one way it enters a plan (#17) ------------

// A live RPC passes its caller's share identity, a job its stored one: both
// reach the engine's options as given, for batches and walks alike.
TEST(CallerTest, IdentityReachesTheEngineOptions) {
  FetchConfig config;
  absl::StatusOr<BatchPlan> batch = PlanBatch(
      OneItem(), config, {.identity = "team-a"}, absl::InfiniteFuture());
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->options.identity, "team-a");
  EXPECT_EQ(batch->options.deadline, absl::InfiniteFuture());

  absl::StatusOr<WalkPlan> walk =
      PlanWalk(CursorWalk("/next", "/items"), config, {.identity = "10.0.0.7"},
               absl::InfiniteFuture());
  ASSERT_TRUE(walk.ok()) << walk.status();
  EXPECT_EQ(walk->options.identity, "10.0.0.7");
  EXPECT_EQ(walk->options.deadline, absl::InfiniteFuture());

  // No caller given: the empty identity, one like any other.
  batch = Plan(OneItem());
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->options.identity, "");
}

// The engine's deadline is the caller's less --deadline_reserve.
TEST(CallerTest, DeadlineKeepsTheReserve) {
  FetchConfig config;
  config.deadline_reserve = absl::Milliseconds(50);
  const absl::Time deadline = absl::FromUnixSeconds(2'000'000'000);
  absl::StatusOr<BatchPlan> batch =
      PlanBatch(OneItem(), config, {.identity = "x"}, deadline);
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ(batch->options.deadline, deadline - absl::Milliseconds(50));
}

// --- StreamBatchFetchRequest is BatchFetchRequest under another name -------

// PlanBatch reads both by the same accessors, and clients convert one into
// the other by bytes: a field added to one and not the other, or numbered
// or typed differently, fails here.
TEST(StreamBatchRequestTest, HasExactlyBatchFetchRequestsFields) {
  const google::protobuf::Descriptor* unary =
      v1::BatchFetchRequest::descriptor();
  const google::protobuf::Descriptor* stream =
      v1::StreamBatchFetchRequest::descriptor();
  ASSERT_EQ(unary->field_count(), stream->field_count());
  for (int i = 0; i < unary->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* u = unary->field(i);
    const google::protobuf::FieldDescriptor* s =
        stream->FindFieldByNumber(u->number());
    ASSERT_NE(s, nullptr) << u->name();
    EXPECT_EQ(s->name(), u->name());
    EXPECT_EQ(s->type(), u->type()) << u->name();
    EXPECT_EQ(s->is_repeated(), u->is_repeated()) << u->name();
    EXPECT_EQ(s->has_presence(), u->has_presence()) << u->name();
    if (u->message_type() != nullptr) {
      EXPECT_EQ(s->message_type(), u->message_type()) << u->name();
    }
  }
}

TEST(StreamBatchRequestTest, PlansLikeTheUnaryRequest) {
  v1::BatchFetchRequest unary = OneItem();
  v1::FetchItem* bad = unary.add_items();  // rejected per item
  bad->set_url("http://127.0.0.1:1/");
  bad->mutable_process()->mutable_json_pointer()->set_pointer("no-slash");
  unary.set_max_concurrency(3);
  unary.set_drop_body(true);
  unary.set_fail_fast(true);
  v1::StreamBatchFetchRequest stream;
  ASSERT_TRUE(stream.ParseFromString(unary.SerializeAsString()));
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  absl::StatusOr<BatchPlan> a = PlanBatch(unary, FetchConfig(), {}, deadline);
  absl::StatusOr<BatchPlan> b = PlanBatch(stream, FetchConfig(), {}, deadline);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->item_count, b->item_count);
  EXPECT_EQ(a->specs.size(), 1u);
  EXPECT_EQ(b->specs.size(), 1u);
  EXPECT_EQ(b->rejected.size(), 1u);
  EXPECT_EQ(a->drop_body, b->drop_body);
  EXPECT_TRUE(b->drop_body);
  EXPECT_EQ(b->options.max_concurrency, 3);
  EXPECT_TRUE(b->options.fail_fast);
  // The same request-level error, too.
  stream.set_max_concurrency(-1);
  EXPECT_THAT(PlanBatch(stream, FetchConfig(), {}, deadline).status().message(),
              HasSubstr("max_concurrency"));
}

}  // namespace
}  // namespace fetchd::request
