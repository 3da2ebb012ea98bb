#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "client/client.h"

namespace fetchd::client {
namespace {

using ::testing::HasSubstr;

v1::RunResponse Timed(v1::RunResponse r) {
  r.mutable_queue_wait()->set_nanos(12'000);
  r.mutable_run_time()->set_seconds(1);
  r.mutable_run_time()->set_nanos(500'000'000);
  return r;
}

TEST(FormatTest, HumanLineShowsCallValueAndTimings) {
  v1::RunRequest request;
  request.mutable_sqrt_sum()->set_n(10);
  v1::RunResponse response;
  response.set_sqrt_sum(19.306000526);
  const std::string line = FormatComputeHuman(request, Timed(response));
  EXPECT_THAT(line, HasSubstr("sqrt_sum(n=10) = 19.306000526"));
  EXPECT_THAT(line, HasSubstr("queue 12us"));
  EXPECT_THAT(line, HasSubstr("run 1.5s"));
}

TEST(FormatTest, HumanLineShowsDigestInHex) {
  v1::RunRequest request;
  request.mutable_sha256_chain()->set_data("abc");
  request.mutable_sha256_chain()->set_rounds(3);
  v1::RunResponse response;
  response.set_sha256_chain(std::string("\x01\xab", 2));
  EXPECT_THAT(FormatComputeHuman(request, response),
              HasSubstr("sha256_chain(data=3 bytes, rounds=3) = 01ab"));
}

TEST(FormatTest, JsonLineParsesWithEveryField) {
  v1::RunRequest request;
  request.mutable_count_primes()->set_limit(100);
  v1::RunResponse response;
  response.set_count_primes(25);
  const auto json =
      nlohmann::json::parse(FormatComputeJson(request, Timed(response)));
  EXPECT_EQ(json["kernel"], "count_primes");
  EXPECT_EQ(json["limit"], 100);
  EXPECT_EQ(json["value"], 25);
  EXPECT_DOUBLE_EQ(json["queue_wait_us"].get<double>(), 12.0);
  EXPECT_DOUBLE_EQ(json["run_time_us"].get<double>(), 1'500'000.0);
}

TEST(FormatTest, ErrorJsonCarriesCodeNameAndEscapedMessage) {
  const auto json = nlohmann::json::parse(
      FormatErrorJson(absl::InvalidArgumentError("bad \"n\"\n")));
  EXPECT_EQ(json["code"], "INVALID_ARGUMENT");
  EXPECT_EQ(json["message"], "bad \"n\"\n");
}

TEST(FormatJobTest, StateNamesParseBothWaysAndRejectOthers) {
  EXPECT_EQ(JobStateName(v1::JOB_STATE_RUNNING), "RUNNING");
  EXPECT_EQ(*ParseJobState("cancelled"), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(*ParseJobState("SUCCEEDED"), v1::JOB_STATE_SUCCEEDED);
  for (const char* bad : {"", "unspecified", "done", "JOB_STATE_RUNNING"}) {
    absl::StatusOr<v1::JobState> state = ParseJobState(bad);
    EXPECT_EQ(state.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(state.status().message(), HasSubstr("--state=")) << bad;
  }
  EXPECT_TRUE(IsTerminal(v1::JOB_STATE_FAILED));
  EXPECT_FALSE(IsTerminal(v1::JOB_STATE_QUEUED));
}

TEST(FormatJobTest, HumanJobShowsEveryFieldThatIsSet) {
  v1::Job job;
  job.set_id("j_abc");
  job.set_kind(v1::JOB_KIND_FETCH_PAGES);
  job.set_state(v1::JOB_STATE_FAILED);
  job.mutable_counts()->set_total(5);
  job.mutable_counts()->set_done(3);
  job.mutable_counts()->set_failed(1);
  job.mutable_counts()->set_bytes(3 * 1024 + 512);
  job.mutable_created_at()->set_seconds(1'800'000'000);
  job.mutable_started_at()->set_seconds(1'800'000'001);
  job.mutable_finished_at()->set_seconds(1'800'000'091);
  job.mutable_error()->set_code(14);
  job.mutable_error()->set_message("page 3: connection refused");
  job.mutable_webhook()->set_url("https://hooks.example/x");
  job.mutable_webhook()->set_event("job.failed");
  job.mutable_webhook()->set_state(v1::WEBHOOK_DELIVERY_STATE_PENDING);
  job.mutable_webhook()->set_attempts(2);
  job.mutable_webhook()->set_last_error("HTTP 503");
  const std::string text = FormatJobHuman(job);
  EXPECT_THAT(text, HasSubstr("id        j_abc\n"));
  EXPECT_THAT(text, HasSubstr("kind      fetch_pages\n"));
  EXPECT_THAT(text, HasSubstr("state     FAILED\n"));
  EXPECT_THAT(text, HasSubstr("counts    3/5 done, 1 failed, 3.5 KiB\n"));
  EXPECT_THAT(text, HasSubstr("created   2027-01-15T08:00:00Z\n"));
  EXPECT_THAT(text, HasSubstr("finished  2027-01-15T08:01:31Z  (ran 1m30s)"));
  EXPECT_THAT(text, HasSubstr("error     UNAVAILABLE: page 3: connection"));
  EXPECT_THAT(text, HasSubstr("webhook   https://hooks.example/x  job.failed "
                              "PENDING (2 attempts)  HTTP 503"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("expires")));  // unset
  EXPECT_THAT(text, ::testing::Not(HasSubstr("key")));
  EXPECT_EQ(text.back(), '3');  // no trailing newline

  const auto json = nlohmann::json::parse(FormatJobJson(job));
  EXPECT_EQ(json["id"], "j_abc");
  EXPECT_EQ(json["state"], "JOB_STATE_FAILED");
  EXPECT_EQ(json["counts"]["done"], "3");
  EXPECT_EQ(json["idempotency_key"], "");  // printed although empty
  EXPECT_EQ(json["webhook"]["attempts"], 2);
}

TEST(FormatJobTest, WatchEventsAndJobResults) {
  v1::WatchResponse event;
  event.set_seq(7);
  event.set_state(v1::JOB_STATE_CANCELLED);
  event.mutable_counts()->set_total(10);
  event.mutable_counts()->set_done(4);
  event.mutable_counts()->set_bytes(812);
  event.mutable_error()->set_code(1);
  event.mutable_error()->set_message("cancelled by the caller");
  EXPECT_EQ(FormatWatchEventHuman(event),
            "seq 7  CANCELLED  4/10 done, 0 failed, 812 B  CANCELLED: "
            "cancelled by the caller");
  const auto json = nlohmann::json::parse(FormatWatchEventJson(event));
  EXPECT_EQ(json["seq"], 7);
  EXPECT_EQ(json["done"], 4);
  EXPECT_EQ(json["code"], "CANCELLED");

  v1::JobResult compute;
  compute.mutable_compute()->set_count_primes(25);
  EXPECT_THAT(FormatJobResultHuman(compute),
              ::testing::StartsWith("count_primes = 25  (queue "));
  EXPECT_EQ(nlohmann::json::parse(FormatJobResultJson(compute))["value"], 25);

  v1::JobResult failed;
  failed.set_index(3);
  failed.mutable_error()->set_code(4);
  failed.mutable_error()->set_message("took too long");
  EXPECT_EQ(FormatJobResultHuman(failed),
            "item 3  DEADLINE_EXCEEDED: took too long");
  EXPECT_EQ(nlohmann::json::parse(FormatJobResultJson(failed)),
            nlohmann::json::parse(R"({"index":3,"code":"DEADLINE_EXCEEDED",
                                      "error":"took too long"})"));

  v1::JobResult fetched;
  fetched.set_index(2);
  fetched.mutable_fetch()->set_index(2);
  fetched.mutable_fetch()->set_url("http://127.0.0.1/x");
  fetched.mutable_fetch()->set_http_status(200);
  EXPECT_EQ(FormatJobResultHuman(fetched), FormatFetchHuman(fetched.fetch()));
  EXPECT_EQ(FormatJobResultJson(fetched), FormatFetchJson(fetched.fetch()));
}

}  // namespace
}  // namespace fetchd::client
