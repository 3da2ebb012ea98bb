// log/: what the Logger writes, filtering, dropping, flushing at the end.
#include "server/log/log.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/support/subprocess.h"

namespace fetchd::log {
namespace {

using ::fetchd::testing::Lines;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

TEST(LogTest, ParseLevelNamesTheFlag) {
  EXPECT_EQ(*ParseLevel("warn"), Level::kWarn);
  EXPECT_EQ(*ParseLevel("debug"), Level::kDebug);
  auto bad = ParseLevel("loud");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("--log_level=loud"));
}

TEST(LogTest, JsonEscapeQuotesBackslashesAndControlBytes) {
  EXPECT_EQ(JsonEscape("a\"b\\c\nd\x01"), "a\\\"b\\\\c\\u000ad\\u0001");
}

TEST(LogTest, LinesAreJsonWithTimeAndLevelFilteredByLevel) {
  ::fetchd::testing::TempFile out;
  {
    Logger logger({.level = Level::kWarn, .out = out.get()});
    EXPECT_FALSE(logger.Enabled(Level::kInfo));
    logger.Log(Level::kInfo, R"("event":"hidden")");
    logger.Log(Level::kError, R"("event":"shown","n":1)");
    logger.LogAlways(Level::kInfo, R"("event":"always")");
  }  // the destructor writes what is queued
  const std::vector<std::string> lines = Lines(out.Text());
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(
      lines[0],
      MatchesRegex(
          R"(\{"ts":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}[.][0-9]{6}Z","level":"error",)"
          R"("event":"shown","n":1\})"));
  EXPECT_THAT(lines[1], HasSubstr(R"("level":"info","event":"always"})"));
}

TEST(LogTest, AFullQueueDropsAndCountsInsteadOfWaiting) {
  ::fetchd::testing::TempFile out;
  uint64_t dropped = 0;
  {
    Logger logger({.level = Level::kInfo, .max_queued = 0, .out = out.get()});
    for (int i = 0; i < 5; ++i) logger.Log(Level::kInfo, R"("event":"x")");
    dropped = logger.dropped();
  }
  EXPECT_EQ(dropped, 5u);
  EXPECT_TRUE(Lines(out.Text()).empty());
}

}  // namespace
}  // namespace fetchd::log
