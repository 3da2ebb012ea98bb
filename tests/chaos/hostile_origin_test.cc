// The hostile origin itself (tests/support/hostile_origin.h): each route
// sends what it promises, over raw sockets so no HTTP client smooths it.
#include "tests/support/hostile_origin.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/support/test_server.h"

namespace fetchd::testing {
namespace {

struct Reply {
  std::string bytes;    // what arrived, up to `limit`
  bool reset = false;   // ended by ECONNRESET
  bool closed = false;  // ended by the origin closing
  absl::Duration first_body_byte = absl::InfiniteDuration();
};

int Connect(const HostileOrigin& origin) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(origin.port());
  inet_pton(AF_INET, "127.0.0.2", &addr.sin_addr);
  EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

// GET `path`; reads until the origin closes, `limit` bytes, or `timeout`.
Reply Get(const HostileOrigin& origin, const std::string& path, size_t limit,
          absl::Duration timeout) {
  Reply reply;
  const int fd = Connect(origin);
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL),
            static_cast<ssize_t>(request.size()));
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + timeout;
  while (reply.bytes.size() < limit && absl::Now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1,
             static_cast<int>(
                 absl::ToInt64Milliseconds(deadline - absl::Now())) +
                 1) <= 0) {
      continue;
    }
    char buf[64 << 10];
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      reply.reset = errno == ECONNRESET;
      break;
    }
    if (n == 0) {
      reply.closed = true;
      break;
    }
    const bool had_body = absl::StrContains(reply.bytes, "\r\n\r\n");
    reply.bytes.append(buf, n);
    if (!had_body) {
      const size_t end = reply.bytes.find("\r\n\r\n");
      if (end != std::string::npos && reply.bytes.size() > end + 4) {
        reply.first_body_byte = absl::Now() - start;
      }
    } else if (reply.first_body_byte == absl::InfiniteDuration()) {
      reply.first_body_byte = absl::Now() - start;
    }
  }
  close(fd);
  return reply;
}

TEST(HostileOriginTest, RoutesSendWhatTheyPromise) {
  HostileOrigin::Options options;
  options.address = "127.0.0.2";
  HostileOrigin origin(options);
  ASSERT_TRUE(origin.ok());
  const absl::Duration wait = absl::Seconds(10);

  Reply hang = Get(origin, "/hang", 1, absl::Milliseconds(300));
  EXPECT_EQ(hang.bytes, "");
  EXPECT_FALSE(hang.closed);

  // Headers at once, the first body byte about a second later.
  Reply drip = Get(origin, "/drip", 1 << 20, absl::Milliseconds(1500));
  EXPECT_TRUE(absl::StartsWith(drip.bytes, "HTTP/1.1 200 OK\r\n"));
  EXPECT_TRUE(absl::StrContains(drip.bytes, "Content-Length: 1000000\r\n"));
  EXPECT_GE(drip.first_body_byte, absl::Milliseconds(900));
  EXPECT_LE(drip.bytes.size() - drip.bytes.find("\r\n\r\n") - 4, 2u);

  Reply endless = Get(origin, "/endless", 4 << 20, wait);
  EXPECT_TRUE(absl::StrContains(endless.bytes, "Transfer-Encoding: chunked"));
  EXPECT_GE(endless.bytes.size(), size_t{4} << 20);
  EXPECT_FALSE(endless.closed);

  Reply big_header = Get(origin, "/big-header", 2 << 20, wait);
  EXPECT_TRUE(big_header.closed);
  EXPECT_GT(big_header.bytes.size(), size_t{1} << 20);
  EXPECT_TRUE(absl::StrContains(big_header.bytes,
                                "X-Big: " + std::string(1 << 20, 'h')));

  Reply many = Get(origin, "/many-headers", 4 << 20, wait);
  EXPECT_TRUE(many.closed);
  EXPECT_TRUE(absl::StrContains(many.bytes, "\r\nX-H99999: v\r\n"));

  Reply loop = Get(origin, "/loop/a", 1 << 20, wait);
  EXPECT_TRUE(absl::StartsWith(loop.bytes, "HTTP/1.1 302 Found\r\n"));
  EXPECT_TRUE(absl::StrContains(loop.bytes, "Location: /loop/b\r\n"));

  Reply reset = Get(origin, "/reset", 4 << 20, wait);
  EXPECT_TRUE(reset.reset);
  EXPECT_TRUE(absl::StrContains(reset.bytes, "Content-Length: 1048576\r\n"));
  EXPECT_LT(reset.bytes.size(), size_t{1} << 20);

  Reply json = Get(origin, "/deep-json", 1 << 20, wait);
  EXPECT_TRUE(json.closed);
  EXPECT_TRUE(absl::StrContains(
      json.bytes,
      "\r\n\r\n" + std::string(200'000, '[') + std::string(200'000, ']')));

  Reply html = Get(origin, "/deep-html", 4 << 20, wait);
  EXPECT_TRUE(html.closed);
  // 27 bytes of preamble, then 439,995 "<div>".
  EXPECT_TRUE(absl::StrContains(html.bytes, "Content-Length: 2200002\r\n"))
      << html.bytes.substr(0, 200);
  EXPECT_EQ(html.bytes.size() - html.bytes.find("\r\n\r\n") - 4, 2200002u);

  Reply big = Get(origin, "/big", 1 << 10, wait);
  EXPECT_TRUE(absl::StrContains(big.bytes, "Content-Length: 67108864\r\n"));
  Reply small = Get(origin, "/big?mib=1", 2 << 20, wait);
  EXPECT_TRUE(small.closed);
  EXPECT_EQ(small.bytes.size() - small.bytes.find("\r\n\r\n") - 4,
            size_t{1} << 20);

  EXPECT_GE(origin.requests("/"), 11);
}

// Hundreds of connections at once on one poll loop; all closed on stop.
TEST(HostileOriginTest, HoldsHundredsOfConnections) {
  HostileOrigin::Options options;
  options.address = "127.0.0.2";
  auto origin = std::make_unique<HostileOrigin>(options);
  std::vector<int> fds;
  for (int i = 0; i < 400; ++i) {
    fds.push_back(Connect(*origin));
    const std::string request = "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n";
    send(fds.back(), request.data(), request.size(), MSG_NOSIGNAL);
  }
  EXPECT_TRUE(WaitFor([&] { return origin->requests("/hang") == 400; },
                      absl::Seconds(10), "400 requests read"));
  EXPECT_EQ(origin->open_connections(), 400);
  origin.reset();  // stops: every connection it held is closed
  for (int fd : fds) {
    char c;
    pollfd p{fd, POLLIN, 0};
    EXPECT_EQ(poll(&p, 1, 5000), 1);
    EXPECT_LE(recv(fd, &c, 1, 0), 0);
    close(fd);
  }
}

}  // namespace
}  // namespace fetchd::testing
