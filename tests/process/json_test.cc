// json_pointer and json_validate against hostile documents (#16): deep
// nesting is refused before any recursive code runs, and a CPU budget ends
// a long parse.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "server/process/process.h"

namespace fetchd::process {
namespace {

using Kind = Processor::Kind;
using ::testing::HasSubstr;

std::string Nested(size_t depth) {
  return std::string(depth, '[') + std::string(depth, ']');
}

// The crash: 400 KB of [[[...]]] and json_pointer "" serialized it
// recursively, one stack frame per level.
TEST(JsonDepthTest, DeepArraysAreRefusedNotCrashed) {
  const std::string body = Nested(200'000);
  for (const Processor& p :
       {Processor{.kind = Kind::kJsonPointer, .pointer = ""},
        Processor{.kind = Kind::kJsonPointer, .pointer = "/0/0"},
        Processor{.kind = Kind::kJsonValidate}}) {
    absl::StatusOr<std::string> got = Process(p, body);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition)
        << got.status();
    EXPECT_THAT(got.status().message(),
                HasSubstr(absl::StrCat("deeper than ", kMaxJsonDepth)));
  }
}

TEST(JsonDepthTest, DeepObjectsAndMixedNestingAreRefused) {
  std::string body;
  for (int i = 0; i < 100'000; ++i) body += i % 2 ? "[" : "{\"k\":";
  absl::StatusOr<std::string> got =
      Process({.kind = Kind::kJsonPointer, .pointer = ""}, body);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(got.status().message(), HasSubstr("levels"));
}

TEST(JsonDepthTest, AtTheLimitIsFineOneDeeperIsNot) {
  const std::string ok = Nested(kMaxJsonDepth);
  EXPECT_EQ(*Process({.kind = Kind::kJsonPointer, .pointer = ""}, ok), ok);
  EXPECT_EQ(*Process({.kind = Kind::kJsonValidate}, ok), "valid");
  const std::string deep = Nested(kMaxJsonDepth + 1);
  EXPECT_EQ(Process({.kind = Kind::kJsonPointer, .pointer = ""}, deep)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Process({.kind = Kind::kJsonValidate}, deep).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(JsonDepthTest, BracketsInsideStringsDoNotCount) {
  const std::string body =
      absl::StrCat("{\"s\":\"", std::string(10'000, '['), "\\\"{\"}");
  EXPECT_EQ(*Process({.kind = Kind::kJsonValidate}, body), "valid");
  EXPECT_EQ(
      Process({.kind = Kind::kJsonPointer, .pointer = "/s"}, body)->size(),
      10'000u + 5);
}

// A big flat document parses for far longer than a microsecond of CPU.
TEST(JsonBudgetTest, SpentBudgetIsResourceExhausted) {
  std::string body = "[";
  for (int i = 0; i < 400'000; ++i) absl::StrAppend(&body, i, ",");
  body += "0]";
  for (const Processor& p :
       {Processor{.kind = Kind::kJsonPointer, .pointer = "/3"},
        Processor{.kind = Kind::kJsonValidate}}) {
    absl::StatusOr<std::string> got = Process(p, body, absl::Nanoseconds(1));
    EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted)
        << got.status();
    EXPECT_THAT(got.status().message(), HasSubstr("--max_process_time"));
    // With room it answers.
    EXPECT_TRUE(Process(p, body, absl::Seconds(60)).ok());
  }
}

}  // namespace
}  // namespace fetchd::process
