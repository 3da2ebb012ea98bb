#include <gtest/gtest.h>

#include "server/compute/compute.h"

namespace fetchd::compute {
namespace {

TEST(StopTokenTest, DefaultTokenNeverStops) {
  StopToken token;
  EXPECT_FALSE(token.stop_requested());
  EXPECT_TRUE(token.status().ok());
  EXPECT_EQ(token.deadline(), absl::InfiniteFuture());
}

TEST(StopTokenTest, RequestStopReachesEveryCopy) {
  StopSource source;
  StopToken a = source.token();
  StopToken b = a;
  EXPECT_FALSE(b.stop_requested());
  source.RequestStop();
  EXPECT_TRUE(a.stop_requested());
  EXPECT_TRUE(b.stop_requested());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kCancelled);
}

TEST(StopTokenTest, PassedDeadlineStopsWithDeadlineExceeded) {
  StopSource source(absl::Now() - absl::Milliseconds(1));
  EXPECT_TRUE(source.token().stop_requested());
  EXPECT_EQ(source.token().status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST(StopTokenTest, FutureDeadlineDoesNotStopYet) {
  StopSource source(absl::Now() + absl::Hours(1));
  EXPECT_FALSE(source.token().stop_requested());
  EXPECT_TRUE(source.token().status().ok());
}

TEST(StopTokenTest, CancellationWinsOverDeadline) {
  StopSource source(absl::Now() - absl::Milliseconds(1));
  source.RequestStop();
  EXPECT_EQ(source.token().status().code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace fetchd::compute
