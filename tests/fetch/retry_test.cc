#include <gtest/gtest.h>

#include "server/fetch/fetch.h"

namespace fetchd::fetch {
namespace {

TEST(RetryPolicyTest, ExponentialBackoffCappedByMax) {
  RetryPolicy p;
  p.initial_backoff = absl::Milliseconds(100);
  p.multiplier = 2;
  p.max_backoff = absl::Milliseconds(500);
  EXPECT_EQ(p.Backoff(1), absl::ZeroDuration());
  EXPECT_EQ(p.Backoff(2), absl::Milliseconds(100));
  EXPECT_EQ(p.Backoff(3), absl::Milliseconds(200));
  EXPECT_EQ(p.Backoff(4), absl::Milliseconds(400));
  EXPECT_EQ(p.Backoff(5), absl::Milliseconds(500));
  EXPECT_EQ(p.Backoff(500), absl::Milliseconds(500));  // no overflow
}

TEST(RetryBudgetTest, FirstAttemptsEarnAndRetriesSpend) {
  RetryBudget budget(/*ratio=*/0.5, /*max_tokens=*/2);
  EXPECT_TRUE(budget.TrySpend());
  EXPECT_TRUE(budget.TrySpend());
  EXPECT_FALSE(budget.TrySpend());  // spent
  budget.OnFirstAttempt();
  EXPECT_FALSE(budget.TrySpend());  // half a token
  budget.OnFirstAttempt();
  EXPECT_TRUE(budget.TrySpend());
  for (int i = 0; i < 100; ++i) budget.OnFirstAttempt();
  EXPECT_DOUBLE_EQ(budget.tokens(), 2);  // capped
}

TEST(StatusCodeForHttpTest, Mapping) {
  EXPECT_EQ(StatusCodeForHttp(200), absl::StatusCode::kOk);
  EXPECT_EQ(StatusCodeForHttp(302), absl::StatusCode::kOk);
  EXPECT_EQ(StatusCodeForHttp(400), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StatusCodeForHttp(401), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(StatusCodeForHttp(403), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(StatusCodeForHttp(404), absl::StatusCode::kNotFound);
  EXPECT_EQ(StatusCodeForHttp(408), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(StatusCodeForHttp(429), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(StatusCodeForHttp(500), absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusCodeForHttp(503), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace fetchd::fetch
