// metrics/: the exposition format, byte for byte, and the HTTP endpoint on a
// real loopback socket.
#include "server/metrics/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "tests/support/test_server.h"

namespace fetchd::metrics {
namespace {

using ::fetchd::testing::WaitFor;
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

// --- Slowloris (#16 item 8) ------------------------------------------------

// A TCP connection to 127.0.0.1:port that sends nothing (closed with it).
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(static_cast<uint16_t>(port));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ =
        connect(fd_, reinterpret_cast<sockaddr*>(&to), sizeof(to)) == 0;
  }
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool connected() const { return connected_; }
  bool Send(absl::string_view bytes) {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(bytes.size());
  }
  // Waits up to `timeout` for the server to close; what it sent before.
  std::optional<std::string> ReadUntilClosed(absl::Duration timeout) {
    std::string got;
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      const int left = static_cast<int>(
          absl::ToInt64Milliseconds(deadline - absl::Now()) + 1);
      if (poll(&p, 1, left) <= 0) continue;
      char buffer[4096];
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) return got;  // EOF or reset: closed
      got.append(buffer, static_cast<size_t>(n));
    }
    return std::nullopt;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

TEST(HttpEndpointTest, ScrapesAreAnsweredWhile200IdleConnectionsAreHeld) {
  // Default timeouts (5 s idle): the idle connections stay for the test.
  auto endpoint = HttpEndpoint::Start(
      "127.0.0.1:0", [] { return std::string("fetchd_up 1\n"); });
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  const int port = (*endpoint)->port();
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 200; ++i) {
    idle.push_back(std::make_unique<RawConnection>(port));
    ASSERT_TRUE(idle.back()->connected()) << i;
  }
  // The endpoint holds at most its cap, and holds that many.
  ASSERT_TRUE(WaitFor([&] { return (*endpoint)->connections() == 64; },
                      absl::Seconds(5), "the connection cap filled"));
  for (int scrape = 0; scrape < 3; ++scrape) {
    const absl::Time start = absl::Now();
    httplib::Client client("127.0.0.1", port);
    client.set_connection_timeout(2, 0);
    client.set_read_timeout(2, 0);
    auto res = client.Get("/metrics");
    ASSERT_TRUE(res) << httplib::to_string(res.error());
    EXPECT_EQ(res->status, 200);
    EXPECT_EQ(res->body, "fetchd_up 1\n");
    EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << scrape;
    EXPECT_LE((*endpoint)->connections(), 64);
  }
}

TEST(HttpEndpointTest, AConnectionThatSendsNothingIsClosedAfterTheIdleTimeout) {
  auto endpoint =
      HttpEndpoint::Start("127.0.0.1:0", [] { return std::string(); },
                          {.idle_timeout = absl::Milliseconds(200)});
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  RawConnection silent((*endpoint)->port());
  ASSERT_TRUE(silent.connected());
  const absl::Time start = absl::Now();
  std::optional<std::string> got = silent.ReadUntilClosed(absl::Seconds(5));
  ASSERT_TRUE(got.has_value()) << "still open after 5 s";
  EXPECT_EQ(*got, "");  // closed without an answer
  const absl::Duration took = absl::Now() - start;
  EXPECT_GE(took, absl::Milliseconds(150));
  EXPECT_LT(took, absl::Seconds(2));
  EXPECT_TRUE(WaitFor([&] { return (*endpoint)->connections() == 0; },
                      absl::Seconds(5), "no connection left"));
}

TEST(HttpEndpointTest, ARequestDrippedSlowerThanTheReadTimeoutIsCut) {
  auto endpoint =
      HttpEndpoint::Start("127.0.0.1:0", [] { return std::string("x 1\n"); },
                          {.idle_timeout = absl::Seconds(10),
                           .read_timeout = absl::Milliseconds(300)});
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  RawConnection drip((*endpoint)->port());
  ASSERT_TRUE(drip.connected());
  const absl::Time start = absl::Now();
  // One byte every 20 ms: never idle, never done. Pacing, not a wait.
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\n";
  bool closed = false;
  for (char c : request) {
    if (!drip.Send(std::string(1, c))) {
      closed = true;
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  std::optional<std::string> got = drip.ReadUntilClosed(absl::Seconds(5));
  ASSERT_TRUE(closed || got.has_value());
  if (got.has_value()) {
    EXPECT_EQ(*got, "");  // no answer to half a request
  }
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

TEST(HttpEndpointTest, OversizedHeadsAndOtherMethodsAreRefused) {
  auto endpoint =
      HttpEndpoint::Start("127.0.0.1:0", [] { return std::string("x 1\n"); },
                          {.max_request_bytes = 1024});
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  RawConnection big((*endpoint)->port());
  ASSERT_TRUE(big.connected());
  big.Send("GET /metrics HTTP/1.1\r\nX-Big: " + std::string(2000, 'a'));
  std::optional<std::string> got = big.ReadUntilClosed(absl::Seconds(5));
  ASSERT_TRUE(got.has_value());
  EXPECT_THAT(*got, HasSubstr("HTTP/1.1 431 "));
  RawConnection post((*endpoint)->port());
  ASSERT_TRUE(post.connected());
  post.Send("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  got = post.ReadUntilClosed(absl::Seconds(5));
  ASSERT_TRUE(got.has_value());
  EXPECT_THAT(*got, HasSubstr("HTTP/1.1 405 "));
  RawConnection get((*endpoint)->port());
  ASSERT_TRUE(get.connected());
  get.Send("GET /metrics?x=1 HTTP/1.0\r\n\r\n");
  got = get.ReadUntilClosed(absl::Seconds(5));
  ASSERT_TRUE(got.has_value());
  EXPECT_THAT(*got, HasSubstr("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(*got, HasSubstr("Content-Length: 4\r\n"));
  EXPECT_THAT(*got, HasSubstr("\r\n\r\nx 1\n"));
}

}  // namespace
}  // namespace fetchd::metrics
