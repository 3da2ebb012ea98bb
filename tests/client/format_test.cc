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

// What FormatFetchJson printed when it built a JSON tree: the output must
// stay the same bytes (scripts diff and grep it).
std::string TreeFetchJson(const v1::FetchResult& r) {
  nlohmann::json out = {
      {"index", r.index()},
      {"url", r.url()},
      {"status", r.http_status()},
      {"code", absl::StatusCodeToString(
                   static_cast<absl::StatusCode>(r.error().code()))},
      {"attempts", r.attempts()},
      {"bytes", r.body_bytes()},
      {"elapsed_ms", r.timings().total_us() / 1000.0},
      {"processed", r.processed()},
      {"error", r.error().message()},
  };
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

TEST(FormatTest, FetchAndPageJsonAreTheBytesOfAJsonTree) {
  const std::vector<std::string> texts = {
      "",
      "http://127.0.0.1:8080/items/1.json?a=1&b=%20",
      "quote \" backslash \\ slash /",
      "tab\tnewline\ncr\rcontrol\x01\x1f del\x7f",
      "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",  // UTF-8
      "bad \xff\xfe utf-8 \xc3",                    // replaced by U+FFFD
  };
  const std::vector<int64_t> micros = {
      0, 1, 10, 999, 1000, 1500, 2010, 123456, 999999, 3600000, 1234567890123};
  int checked = 0;
  for (const std::string& text : texts) {
    for (const int64_t us : micros) {
      v1::FetchResult r;
      r.set_index(static_cast<uint32_t>(checked));
      r.set_url(text);
      r.set_http_status(checked % 2 ? 200 : 0);
      r.set_body_bytes(us * 7);
      r.set_processed(text);
      r.set_attempts(2);
      r.mutable_timings()->set_total_us(us);
      r.mutable_error()->set_code(checked % 17);
      r.mutable_error()->set_message(text);
      EXPECT_EQ(FormatFetchJson(r), TreeFetchJson(r)) << text << " " << us;

      v1::Page page;
      page.set_index(checked * 3);
      *page.mutable_result() = r;
      page.add_items("{}");
      page.set_resume_token(text);
      nlohmann::json tree = nlohmann::json::parse(TreeFetchJson(r));
      tree["index"] = page.index();
      tree["items"] = page.items_size();
      tree["resume_token"] = page.resume_token();
      EXPECT_EQ(
          FormatPageJson(page),
          tree.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
          << text << " " << us;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 66);
  v1::FetchResult r;
  r.mutable_timings()->set_total_us(1500);
  EXPECT_THAT(FormatFetchJson(r), HasSubstr("\"elapsed_ms\":1.5,"));
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
