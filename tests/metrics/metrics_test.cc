// metrics/: the exposition format, byte for byte, and the HTTP endpoint on a
// real loopback socket.
#include "server/metrics/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

namespace fetchd::metrics {
namespace {

using ::testing::HasSubstr;

TEST(ExpositionTest, FamiliesSamplesAndEscapedLabels) {
  Exposition out;
  out.Family("fetchd_x_total", "counter", "Things.");
  out.Sample("fetchd_x_total", {{"method", "A"}, {"code", "OK"}}, 3);
  out.Sample("fetchd_x_total", {{"path", "a\"b\\c\nd"}}, 0.25);
  out.Family("fetchd_up", "gauge", "Up.");
  out.Sample("fetchd_up", 1);
  EXPECT_EQ(out.text(),
            "# HELP fetchd_x_total Things.\n"
            "# TYPE fetchd_x_total counter\n"
            "fetchd_x_total{method=\"A\",code=\"OK\"} 3\n"
            "fetchd_x_total{path=\"a\\\"b\\\\c\\nd\"} 0.25\n"
            "# HELP fetchd_up Up.\n"
            "# TYPE fetchd_up gauge\n"
            "fetchd_up 1\n");
}

TEST(HistogramTest, BucketsAreCumulativeWithInfSumAndCount) {
  Histogram h({0.1, 1});
  h.Observe(0.05);
  h.Observe(0.1);  // on a bound: counted in it (le is <=)
  h.Observe(0.5);
  h.Observe(7);
  const Histogram::Snapshot s = h.snapshot();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(s.count, 4u);
  EXPECT_NEAR(s.sum, 7.65, 1e-6);
  Exposition out;
  out.HistogramSamples("fetchd_d_seconds", {{"method", "M"}}, s);
  EXPECT_EQ(out.text(),
            "fetchd_d_seconds_bucket{method=\"M\",le=\"0.1\"} 2\n"
            "fetchd_d_seconds_bucket{method=\"M\",le=\"1\"} 3\n"
            "fetchd_d_seconds_bucket{method=\"M\",le=\"+Inf\"} 4\n"
            "fetchd_d_seconds_sum{method=\"M\"} 7.65\n"
            "fetchd_d_seconds_count{method=\"M\"} 4\n");
}

TEST(HttpEndpointTest, ServesTheRenderedTextOnMetrics) {
  int scrapes = 0;
  auto endpoint = HttpEndpoint::Start("127.0.0.1:0", [&scrapes] {
    return "fetchd_scrapes_total " + std::to_string(++scrapes) + "\n";
  });
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  ASSERT_GT((*endpoint)->port(), 0);
  httplib::Client client("127.0.0.1", (*endpoint)->port());
  client.set_read_timeout(10, 0);
  for (int i = 1; i <= 2; ++i) {
    auto res = client.Get("/metrics");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->get_header_value("Content-Type"),
              "text/plain; version=0.0.4");
    EXPECT_EQ(res->body, "fetchd_scrapes_total " + std::to_string(i) + "\n");
  }
  auto other = client.Get("/other");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
}

TEST(HttpEndpointTest, BadAddressesAreRefusedNamingTheFlag) {
  auto bad = HttpEndpoint::Start("no-port", [] { return std::string(); });
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("--metrics_listen"));
  auto first = HttpEndpoint::Start("127.0.0.1:0", [] { return std::string(); });
  ASSERT_TRUE(first.ok());
  auto taken =
      HttpEndpoint::Start("127.0.0.1:" + std::to_string((*first)->port()),
                          [] { return std::string(); });
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace fetchd::metrics
