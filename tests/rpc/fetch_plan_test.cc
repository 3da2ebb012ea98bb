// server/rpc/fetch_plan.cc: a walk's fingerprint, which binds its resume
// tokens to it.
#include "server/rpc/fetch_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "server/rpc/rpc.h"

namespace fetchd::rpc {
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
      PlanWalk(request, config, absl::Now() + absl::Seconds(30));
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

}  // namespace
}  // namespace fetchd::rpc
