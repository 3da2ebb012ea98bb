// RpcMetrics and the /metrics page, scraped from a real fetchd after real
// RPCs against the test origin.
#include "server/rpc/rpc_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "fetchd/v1/compute.grpc.pb.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "tests/support/fetchd_process.h"
#include "tests/support/origin.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_server.h"

namespace fetchd::rpc {
namespace {

using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::Lines;
using ::fetchd::testing::Origin;
using ::fetchd::testing::ScrapeMetrics;
using ::fetchd::testing::SqrtSumRequest;
using ::fetchd::testing::TestConfig;
using ::fetchd::testing::TestServer;
using ::testing::HasSubstr;
using ::testing::Not;

TEST(RpcMetricsTest, CountsRpcsByIdentityWithABoundedLabelSet) {
  auth::IdentityLabels labels;
  RpcMetrics metrics(&labels);
  const int alice = labels.Slot("alice");
  metrics.Record("Compute.Run", grpc::StatusCode::OK, absl::Milliseconds(1),
                 alice);
  metrics.Record("Compute.Run", grpc::StatusCode::UNAUTHENTICATED,
                 absl::Milliseconds(1));
  for (int i = 0; i < 100; ++i) labels.Slot(absl::StrCat("subject-", i));
  metrics.Record("Compute.Run", grpc::StatusCode::OK, absl::Milliseconds(1),
                 labels.Slot("subject-99"));
  metrics::Exposition out;
  metrics.Render(out);
  const std::string& text = out.text();
  EXPECT_THAT(text, HasSubstr("fetchd_rpcs_total{method=\"Compute.Run\","
                              "code=\"OK\",identity=\"alice\"} 1\n"));
  EXPECT_THAT(
      text, HasSubstr("fetchd_rpcs_total{method=\"Compute.Run\","
                      "code=\"UNAUTHENTICATED\",identity=\"anonymous\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fetchd_rpcs_total{method=\"Compute.Run\","
                              "code=\"OK\",identity=\"other\"} 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("subject-99")));
}

TEST(RpcMetricsTest, CountsRpcsByMethodAndCodeWithLatency) {
  RpcMetrics metrics;
  metrics.Record("Fetch.BatchFetch", grpc::StatusCode::OK,
                 absl::Milliseconds(3));
  metrics.Record("Fetch.BatchFetch", grpc::StatusCode::OK,
                 absl::Milliseconds(300));
  metrics.Record("Compute.Run", grpc::StatusCode::INVALID_ARGUMENT,
                 absl::Microseconds(10));
  metrics.Record("Other.Method", grpc::StatusCode::OK, absl::Seconds(1));
  metrics::Exposition out;
  metrics.Render(out);
  const std::string& text = out.text();
  EXPECT_THAT(text, HasSubstr("# TYPE fetchd_rpcs_total counter\n"));
  EXPECT_THAT(text, HasSubstr("fetchd_rpcs_total{method=\"Fetch.BatchFetch\","
                              "code=\"OK\",identity=\"anonymous\"} 2\n"));
  EXPECT_THAT(
      text, HasSubstr("fetchd_rpcs_total{method=\"Compute.Run\","
                      "code=\"INVALID_ARGUMENT\",identity=\"anonymous\"} 1\n"));
  // OK shows at zero; codes never seen do not show.
  EXPECT_THAT(text, HasSubstr("fetchd_rpcs_total{method=\"Fetch.FetchPages\","
                              "code=\"OK\",identity=\"anonymous\"} 0\n"));
  EXPECT_THAT(text, Not(HasSubstr("code=\"DATA_LOSS\"")));
  EXPECT_THAT(text, Not(HasSubstr("Other.Method")));
  EXPECT_THAT(text, HasSubstr("fetchd_rpc_duration_seconds_bucket{method="
                              "\"Fetch.BatchFetch\",le=\"0.005\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fetchd_rpc_duration_seconds_bucket{method="
                              "\"Fetch.BatchFetch\",le=\"0.5\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("fetchd_rpc_duration_seconds_count{method="
                              "\"Fetch.BatchFetch\"} 2\n"));
}

TEST(RpcMetricsTest, ServerScrapeCountsRpcsAndFetches) {
  Origin origin;
  ServerConfig config = TestConfig();
  config.metrics_listen = "127.0.0.1:0";
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  const int port = server.server().metrics_port();
  ASSERT_GT(port, 0);

  auto fetch = v1::Fetch::NewStub(server.NewChannel());
  v1::BatchFetchRequest request;
  request.add_items()->set_url(origin.Url("/json"));
  request.add_items()->set_url(origin.Url("/bytes/1000"));
  request.add_items()->set_url(origin.Url("/status/404"));
  v1::BatchFetchResponse response;
  ASSERT_TRUE(fetch
                  ->BatchFetch(ContextWithTimeout(kEventTimeout).get(), request,
                               &response)
                  .ok());
  auto compute = v1::Compute::NewStub(server.NewChannel());
  v1::RunResponse out;
  EXPECT_TRUE(compute
                  ->Run(ContextWithTimeout(kEventTimeout).get(),
                        SqrtSumRequest(100), &out)
                  .ok());
  EXPECT_EQ(
      compute
          ->Run(ContextWithTimeout(kEventTimeout).get(), v1::RunRequest(), &out)
          .error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);

  const absl::StatusOr<std::string> page = ScrapeMetrics(port);
  ASSERT_TRUE(page.ok()) << page.status();
  const std::string& text = *page;
  EXPECT_THAT(text, HasSubstr("fetchd_rpcs_total{method=\"Fetch.BatchFetch\","
                              "code=\"OK\",identity=\"anonymous\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fetchd_rpcs_total{method=\"Compute.Run\","
                              "code=\"OK\",identity=\"anonymous\"} 1\n"));
  EXPECT_THAT(
      text, HasSubstr("fetchd_rpcs_total{method=\"Compute.Run\","
                      "code=\"INVALID_ARGUMENT\",identity=\"anonymous\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fetchd_rpc_duration_seconds_count{method="
                              "\"Fetch.BatchFetch\"} 1\n"));
  EXPECT_THAT(
      text, HasSubstr("fetchd_fetch_attempts_total{status_class=\"2xx\"} 2\n"));
  EXPECT_THAT(
      text, HasSubstr("fetchd_fetch_attempts_total{status_class=\"4xx\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("fetchd_fetch_items_total{code=\"OK\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("fetchd_fetch_items_total{code=\"NOT_FOUND\"} 1\n"));
  const int64_t body_bytes = response.results(0).body_bytes() +
                             response.results(1).body_bytes() +
                             response.results(2).body_bytes();
  EXPECT_THAT(text, HasSubstr(absl::StrCat("fetchd_fetch_received_bytes_total ",
                                           body_bytes, "\n")));
  EXPECT_THAT(text, HasSubstr("fetchd_fetch_transfers_in_flight 0\n"));
  EXPECT_THAT(text, HasSubstr("fetchd_worker_queued_tasks 0\n"));
  // Admission (#16): the gauge, and nothing refused.
  EXPECT_THAT(text, HasSubstr("# TYPE fetchd_rpcs_in_progress gauge\n"));
  EXPECT_THAT(text, HasSubstr("fetchd_rpcs_refused_total{reason="
                              "\"concurrency\"} 0\n"));
  // Every sample line belongs to a family declared before it.
  std::string family;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty()) continue;
    if (absl::StartsWith(line, "# TYPE ")) {
      const absl::string_view rest = line.substr(7);
      family = std::string(rest.substr(0, rest.find(' ')));
      continue;
    }
    if (absl::StartsWith(line, "#")) continue;
    EXPECT_TRUE(absl::StartsWith(line, family)) << line;
  }
}

// The memory budget's two gauges: the budget, and what is reserved now,
// back to 0 once every RPC has ended.
TEST(RpcMetricsTest, MemoryBudgetGauges) {
  memory::Budget budget(5000);
  std::optional<memory::Reservation> held = budget.TryReserve(1234);
  ASSERT_TRUE(held.has_value());
  RpcMetrics rpcs;
  std::string text = RenderMetrics(rpcs, {}, {}, nullptr, nullptr, &budget);
  EXPECT_THAT(text, HasSubstr("# TYPE fetchd_memory_budget_bytes gauge\n"
                              "fetchd_memory_budget_bytes 5000\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE fetchd_memory_reserved_bytes gauge\n"
                              "fetchd_memory_reserved_bytes 1234\n"));
  held.reset();
  text = RenderMetrics(rpcs, {}, {}, nullptr, nullptr, &budget);
  EXPECT_THAT(text, HasSubstr("fetchd_memory_reserved_bytes 0\n"));

  Origin origin;
  ServerConfig config = TestConfig();
  config.metrics_listen = "127.0.0.1:0";
  config.fetch.memory_budget_bytes = 3 << 20;
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto fetch = v1::Fetch::NewStub(server.NewChannel());
  v1::BatchFetchRequest request;
  for (int i = 0; i < 4; ++i) {
    request.add_items()->set_url(origin.Url("/bytes/100000"));
  }
  v1::BatchFetchResponse response;
  ASSERT_TRUE(fetch
                  ->BatchFetch(ContextWithTimeout(kEventTimeout).get(), request,
                               &response)
                  .ok());
  for (const auto& r : response.results()) {
    EXPECT_EQ(r.body().size(), 100000u);
  }
  EXPECT_GE(server.server().memory_budget().peak(), 4 * 100000);
  EXPECT_TRUE(::fetchd::testing::WaitFor(
      [&] {
        const absl::StatusOr<std::string> page =
            ScrapeMetrics(server.server().metrics_port());
        return page.ok() &&
               absl::StrContains(*page,
                                 "fetchd_memory_budget_bytes 3145728\n") &&
               absl::StrContains(*page, "fetchd_memory_reserved_bytes 0\n");
      },
      kEventTimeout, "the gauges: budget 3 MiB, nothing reserved"));
}

// The SSRF guard's refusals, by reason (a bounded label set).
TEST(RpcMetricsTest, GuardRefusalsByReason) {
  Origin origin;
  ServerConfig config = TestConfig();
  config.metrics_listen = "127.0.0.1:0";
  config.fetch.address_guard.allow_private_networks = false;
  config.fetch.address_guard.deny_hosts = {"blocked.test"};
  // Mapped, so no DNS query leaves even if the host rule failed.
  config.fetch.engine.resolve = {"blocked.test:80:127.0.0.1"};
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto fetch = v1::Fetch::NewStub(server.NewChannel());
  v1::BatchFetchRequest request;
  request.add_items()->set_url(origin.Url("/json"));
  request.add_items()->set_url(origin.Url("/status/200"));
  request.add_items()->set_url("http://blocked.test/");
  v1::BatchFetchResponse response;
  ASSERT_TRUE(fetch
                  ->BatchFetch(ContextWithTimeout(kEventTimeout).get(), request,
                               &response)
                  .ok());
  const absl::StatusOr<std::string> page =
      ScrapeMetrics(server.server().metrics_port());
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_THAT(*page, HasSubstr("# TYPE fetchd_fetch_refusals_total counter\n"));
  EXPECT_THAT(
      *page, HasSubstr("fetchd_fetch_refusals_total{reason=\"loopback\"} 2\n"));
  EXPECT_THAT(
      *page,
      HasSubstr("fetchd_fetch_refusals_total{reason=\"host_rule\"} 1\n"));
  EXPECT_THAT(
      *page,
      HasSubstr("fetchd_fetch_refusals_total{reason=\"link_local\"} 0\n"));
  EXPECT_THAT(*page, Not(HasSubstr("reason=\"public\"")));
  EXPECT_EQ(origin.requests(), 0);
}

// One JSON line per RPC: method, peer, code, items, duration; no URLs.
TEST(RpcMetricsTest, ReporterLogsOneLinePerRpcWithoutRequestContents) {
  Origin origin;
  ::fetchd::testing::TempFile out;
  ASSERT_NE(out.get(), nullptr);
  {
    log::Logger logger({.level = log::Level::kInfo, .out = out.get()});
    ServerConfig config = TestConfig();
    config.logger = &logger;
    TestServer server(config);
    ASSERT_TRUE(server.ok());
    auto fetch = v1::Fetch::NewStub(server.NewChannel());
    v1::BatchFetchRequest request;
    request.add_items()->set_url(origin.Url("/json?secret=tok"));
    request.add_items()->set_url(origin.Url("/flaky/log/1"));  // 503, then 200
    request.mutable_retry()->set_max_attempts(2);
    request.mutable_retry()->mutable_initial_backoff()->set_nanos(1'000'000);
    v1::BatchFetchResponse response;
    ASSERT_TRUE(fetch
                    ->BatchFetch(ContextWithTimeout(kEventTimeout).get(),
                                 request, &response)
                    .ok());
    v1::BatchFetchRequest empty;  // INVALID_ARGUMENT: no items
    EXPECT_FALSE(fetch
                     ->BatchFetch(ContextWithTimeout(kEventTimeout).get(),
                                  empty, &response)
                     .ok());
  }  // server, then logger: every line is written
  const std::string text = out.Text();
  const std::vector<std::string> lines = Lines(text);
  ASSERT_EQ(lines.size(), 2u) << text;
  EXPECT_THAT(
      lines[0],
      HasSubstr(R"("level":"info","event":"rpc",)"
                R"("method":"Fetch.BatchFetch","peer":"ipv4:127.0.0.1:)"));
  EXPECT_THAT(lines[0],
              HasSubstr(R"("code":"OK","items":2,"retries":1,"duration_ms":)"));
  EXPECT_THAT(lines[1],
              HasSubstr(R"("code":"INVALID_ARGUMENT","items":0,"retries":0,)"));
  EXPECT_THAT(text, Not(HasSubstr("secret")));
  EXPECT_THAT(text, Not(HasSubstr("/json")));
  EXPECT_THAT(text, Not(HasSubstr("flaky")));
}

}  // namespace
}  // namespace fetchd::rpc
