#include "server/process/process.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "absl/synchronization/notification.h"
#include "tests/support/test_server.h"

namespace fetchd::process {
namespace {

using Kind = Processor::Kind;
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

constexpr char kDoc[] = R"({"a":{"b":[1,2,{"c":"x"}]},"n":null,"k~/":7})";

std::string Ok(absl::StatusOr<std::string> s) {
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

TEST(HtmlTitleTest, TitleWithEntitiesAndWhitespace) {
  EXPECT_EQ(Ok(Process({.kind = Kind::kHtmlTitle},
                       "<html><head><title>\n  Hello &amp;  welcome </title>"
                       "</head><body></body></html>")),
            "Hello & welcome");
}

TEST(HtmlTitleTest, BrokenHtmlStillParses) {
  // No <html>/<head>, unclosed tags: an HTML5 parser recovers like a browser.
  EXPECT_EQ(
      Ok(Process({.kind = Kind::kHtmlTitle}, "<title>Tag soup<p>para<b>bold")),
      "Tag soup<p>para<b>bold");
  EXPECT_EQ(Ok(Process({.kind = Kind::kHtmlTitle},
                       "<p>before</p><title>Late</title>")),
            "Late");
}

TEST(HtmlTitleTest, MissingTitleIsNotFound) {
  auto got =
      Process({.kind = Kind::kHtmlTitle},
              "<html><body><svg><title>icon</title></svg></body></html>");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
}

TEST(Sha256Test, HexDigest) {
  EXPECT_EQ(Ok(Process({.kind = Kind::kSha256}, "abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(JsonPointerTest, Rfc6901Lookups) {
  EXPECT_EQ(
      Ok(Process({.kind = Kind::kJsonPointer, .pointer = "/a/b/2/c"}, kDoc)),
      "\"x\"");
  EXPECT_EQ(
      Ok(Process({.kind = Kind::kJsonPointer, .pointer = "/a/b/0"}, kDoc)),
      "1");
  EXPECT_EQ(Ok(Process({.kind = Kind::kJsonPointer, .pointer = "/n"}, kDoc)),
            "null");
  EXPECT_EQ(
      Ok(Process({.kind = Kind::kJsonPointer, .pointer = "/k~0~1"}, kDoc)),
      "7");
  EXPECT_EQ(Ok(Process({.kind = Kind::kJsonPointer, .pointer = "/a/b"}, kDoc)),
            R"([1,2,{"c":"x"}])");
  EXPECT_EQ(Ok(Process({.kind = Kind::kJsonPointer, .pointer = ""}, "[true]")),
            "[true]");
}

TEST(JsonPointerTest, MissingValuesAreNotFound) {
  for (const char* pointer :
       {"/a/x", "/a/b/9", "/a/b/-", "/n/deeper", "/a/b/x"}) {
    auto got = Process({.kind = Kind::kJsonPointer, .pointer = pointer}, kDoc);
    EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << pointer;
    EXPECT_THAT(got.status().message(), HasSubstr(pointer));
  }
}

TEST(JsonPointerTest, NonJsonBodyIsFailedPrecondition) {
  auto got = Process({.kind = Kind::kJsonPointer, .pointer = "/a"}, "<html>");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(JsonPointerTest, MalformedPointersAreRejectedUpFront) {
  EXPECT_TRUE(
      ValidateProcessor({.kind = Kind::kJsonPointer, .pointer = "/a/b"}).ok());
  EXPECT_TRUE(
      ValidateProcessor({.kind = Kind::kJsonPointer, .pointer = ""}).ok());
  for (const char* pointer : {"a/b", "/~2", "/x~"}) {
    absl::Status s =
        ValidateProcessor({.kind = Kind::kJsonPointer, .pointer = pointer});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << pointer;
    EXPECT_THAT(s.message(), HasSubstr("process.json_pointer"));
  }
}

TEST(JsonValidateTest, ValidAndInvalid) {
  EXPECT_EQ(Ok(Process({.kind = Kind::kJsonValidate}, kDoc)), "valid");
  auto got = Process({.kind = Kind::kJsonValidate}, R"({"a": [1, 2,, 3]})");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(got.status().message(), HasSubstr("byte 13"));
}

TEST(ProcessRunnerTest, SmallBodiesInlineBigOnesOnTheWorkerPool) {
  compute::WorkerPool pool({.workers = 1, .max_queued_tasks = 4});
  ProcessRunner runner(&pool, /*inline_max_bytes=*/16);
  const auto caller = std::this_thread::get_id();
  std::thread::id small_thread, big_thread;
  absl::Notification small_done, big_done;
  runner.Run({.kind = Kind::kSha256}, "abc",
             [&](absl::StatusOr<std::string> r) {
               EXPECT_TRUE(r.ok());
               small_thread = std::this_thread::get_id();
               small_done.Notify();
             });
  const std::string big(1000, 'a');
  runner.Run(
      {.kind = Kind::kJsonValidate}, big, [&](absl::StatusOr<std::string> r) {
        EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
        big_thread = std::this_thread::get_id();
        big_done.Notify();
      });
  ASSERT_TRUE(small_done.HasBeenNotified());  // ran inline
  ASSERT_TRUE(big_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(small_thread, caller);
  EXPECT_NE(big_thread, caller);
}

TEST(ProcessRunnerTest, FullPoolAnswersResourceExhausted) {
  absl::Notification release;  // outlives the pool's worker
  compute::WorkerPool pool({.workers = 1, .max_queued_tasks = 0});
  ASSERT_TRUE(
      pool.Submit([&](absl::Status) { release.WaitForNotification(); }).ok());
  ASSERT_TRUE(WaitFor([&] { return pool.stats().running == 1; },
                      absl::Seconds(10), "the blocker to run"));
  ProcessRunner runner(&pool, 0);
  absl::StatusOr<std::string> got = std::string("not called");
  runner.Run({.kind = Kind::kSha256}, "abc",
             [&](absl::StatusOr<std::string> r) { got = std::move(r); });
  EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(got.status().message(), HasSubstr("--max_queued_tasks"));
  release.Notify();
}

TEST(ProcessRunnerTest, PassesItsCpuBudgetToEveryProcessor) {
  compute::WorkerPool pool({.workers = 1, .max_queued_tasks = 4});
  std::string big = "[";
  for (int i = 0; i < 200'000; ++i) big += "1,";
  big += "1]";
  for (size_t inline_max : {size_t{0}, big.size()}) {  // pool, then inline
    ProcessRunner tight(&pool, inline_max, absl::Nanoseconds(1));
    ProcessRunner off(&pool, inline_max, absl::ZeroDuration());
    for (ProcessRunner* runner : {&tight, &off}) {
      absl::Notification done;
      absl::StatusOr<std::string> got;
      runner->Run({.kind = Kind::kJsonValidate}, big,
                  [&](absl::StatusOr<std::string> r) {
                    got = std::move(r);
                    done.Notify();
                  });
      ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
      if (runner == &tight) {
        EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted);
        EXPECT_THAT(got.status().message(), HasSubstr("--max_process_time"));
      } else {
        EXPECT_EQ(got.value_or(""), "valid");  // zero: no budget
      }
    }
  }
}

}  // namespace
}  // namespace fetchd::process
