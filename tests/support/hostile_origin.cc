#include "tests/support/hostile_origin.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace fetchd::testing {
namespace {

constexpr size_t kMaxRequestBytes = 64 << 10;
// Per connection and wakeup, so one fast reader cannot starve the others.
constexpr size_t kMaxWriteBurst = 1 << 20;
constexpr size_t kSlice = 64 << 10;

std::string Head(int status, absl::string_view reason,
                 absl::string_view extra_headers) {
  return absl::StrCat("HTTP/1.1 ", status, " ", reason, "\r\n", extra_headers,
                      "Connection: close\r\n\r\n");
}

// The integer query parameter `name`, or `fallback` when absent or not a
// number (absl::SimpleAtoi zeroes its output on failure).
int64_t IntParam(absl::string_view query, absl::string_view name,
                 int64_t fallback) {
  for (absl::string_view kv : absl::StrSplit(query, '&')) {
    std::pair<absl::string_view, absl::string_view> p =
        absl::StrSplit(kv, absl::MaxSplits('=', 1));
    int64_t v = 0;
    if (p.first == name && absl::SimpleAtoi(p.second, &v)) return v;
  }
  return fallback;
}

}  // namespace

struct HostileOrigin::Conn {
  enum class Body { kNone, kHang, kShared, kRepeat, kEndless, kDrip };
  int fd = -1;
  absl::Time opened;
  std::string in;
  bool answered = false;
  std::string out;  // pending bytes, from out_off
  size_t out_off = 0;
  Body body = Body::kNone;
  std::shared_ptr<const std::string> shared;  // kShared
  size_t shared_off = 0;
  int64_t remaining = 0;      // kRepeat, kDrip
  bool reset_at_end = false;  // kRepeat: RST instead of a clean end
  absl::Duration drip_every;  // kDrip
  absl::Time next_drip;       // kDrip

  bool Pending() const { return out_off < out.size(); }
  // Whether the loop should poll for POLLOUT.
  bool WantsWrite(absl::Time now) const {
    if (!answered) return false;
    if (Pending()) return true;
    switch (body) {
      case Body::kHang:
        return false;
      case Body::kDrip:
        return remaining > 0 && now >= next_drip;
      default:
        return true;
    }
  }
};

HostileOrigin::HostileOrigin(Options options) : options_(std::move(options)) {
  // 200,000 '[' then ']': 400 KB nested 200,000 deep.
  std::string json(200'000, '[');
  json.append(200'000, ']');
  deep_json_ = std::make_shared<const std::string>(std::move(json));
  std::string html = "<!doctype html><html><body>";
  html.reserve(2'200'000 + 64);
  while (html.size() < 2'200'000) html += "<div>";
  deep_html_ = std::make_shared<const std::string>(std::move(html));
  std::string many = "HTTP/1.1 200 OK\r\n";
  many.reserve(100'000 * 16);
  for (int i = 0; i < 100'000; ++i) absl::StrAppend(&many, "X-H", i, ": v\r\n");
  many += "Content-Length: 2\r\nConnection: close\r\n\r\nok";
  many_headers_ = std::make_shared<const std::string>(std::move(many));

  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (listen_fd_ < 0 || wake_fd_ < 0) return;
  const int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  // Loopback only: refuse anything outside 127.0.0.0/8.
  if (inet_pton(AF_INET, options_.address.c_str(), &addr.sin_addr) != 1 ||
      (ntohl(addr.sin_addr.s_addr) >> 24) != 127) {
    return;
  }
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(listen_fd_, 4096) != 0) {
    return;
  }
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { Loop(); });
}

HostileOrigin::~HostileOrigin() {
  stop_.store(true);
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

std::string HostileOrigin::base() const {
  return absl::StrCat("http://", options_.address, ":", port_);
}

int HostileOrigin::open_connections() const {
  absl::MutexLock lock(&mu_);
  return open_;
}

int HostileOrigin::peak_connections() const {
  absl::MutexLock lock(&mu_);
  return peak_;
}

int HostileOrigin::accepted() const {
  absl::MutexLock lock(&mu_);
  return accepted_;
}

int HostileOrigin::requests(const std::string& prefix) const {
  absl::MutexLock lock(&mu_);
  int n = 0;
  for (const auto& [path, count] : requests_) {
    if (absl::StartsWith(path, prefix)) n += count;
  }
  return n;
}

void HostileOrigin::ResetCounters() {
  absl::MutexLock lock(&mu_);
  peak_ = open_;
  accepted_ = 0;
  requests_.clear();
}

void HostileOrigin::Loop() {
  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<pollfd> polls;
  auto close_conn = [this](Conn& c) {
    close(c.fd);
    c.fd = -1;
    absl::MutexLock lock(&mu_);
    --open_;
  };
  while (!stop_.load()) {
    const absl::Time now = absl::Now();
    // Bounded in time: drop connections past their age, compact the list.
    for (auto& c : conns) {
      if (c->fd >= 0 && now - c->opened > options_.max_connection_age) {
        close_conn(*c);
      }
    }
    conns.erase(std::remove_if(conns.begin(), conns.end(),
                               [](const auto& c) { return c->fd < 0; }),
                conns.end());

    polls.clear();
    polls.push_back({wake_fd_, POLLIN, 0});
    polls.push_back({listen_fd_, POLLIN, 0});
    absl::Duration timeout = absl::Seconds(1);  // for the age check
    for (const auto& c : conns) {
      short events = POLLIN;
      if (c->WantsWrite(now)) events |= POLLOUT;
      if (c->body == Conn::Body::kDrip && c->remaining > 0 && !c->Pending()) {
        timeout = std::min(timeout,
                           std::max(absl::ZeroDuration(), c->next_drip - now));
      }
      polls.push_back({c->fd, events, 0});
    }
    if (poll(polls.data(), polls.size(),
             static_cast<int>(absl::ToInt64Milliseconds(timeout)) + 1) < 0 &&
        errno != EINTR) {
      break;
    }
    if (stop_.load()) break;
    if (polls[1].revents & POLLIN) Accept(conns);
    // New connections were appended after the polled ones; only the polled
    // ones have revents (index i + 2).
    const absl::Time after = absl::Now();
    const size_t polled = polls.size() - 2;
    for (size_t i = 0; i < polled && i < conns.size(); ++i) {
      Conn& c = *conns[i];
      const short revents = polls[i + 2].revents;
      bool keep = true;
      if (revents & (POLLIN | POLLHUP | POLLERR)) keep = OnReadable(c);
      if (keep && c.WantsWrite(after)) keep = OnWritable(c, after);
      if (!keep) close_conn(c);
    }
  }
  for (auto& c : conns) {
    if (c->fd >= 0) close_conn(*c);
  }
}

void HostileOrigin::Accept(std::vector<std::unique_ptr<Conn>>& conns) {
  for (;;) {
    const int fd =
        accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or an error the next poll retries
    {
      absl::MutexLock lock(&mu_);
      ++accepted_;
      if (open_ >= options_.max_connections) {
        close(fd);
        continue;
      }
      peak_ = std::max(peak_, ++open_);
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->opened = absl::Now();
    conns.push_back(std::move(c));
  }
}

bool HostileOrigin::OnReadable(Conn& c) {
  char buf[16 << 10];
  for (;;) {
    const ssize_t n = recv(c.fd, buf, sizeof buf, 0);
    if (n == 0) return false;  // the client went away
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    if (c.answered) continue;  // one request per connection; drop the rest
    c.in.append(buf, n);
    const size_t end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) {
      if (c.in.size() > kMaxRequestBytes) return false;
      continue;
    }
    // "GET /path?query HTTP/1.1"
    std::vector<absl::string_view> words =
        absl::StrSplit(absl::string_view(c.in).substr(0, c.in.find("\r\n")),
                       ' ', absl::SkipEmpty());
    if (words.size() < 2) return false;
    Respond(c, std::string(words[1]));
    c.answered = true;
    c.in.clear();
  }
}

void HostileOrigin::Respond(Conn& c, const std::string& target) {
  using Body = Conn::Body;
  const size_t q = target.find('?');
  const std::string path = target.substr(0, q);
  const absl::string_view query =
      q == std::string::npos ? "" : absl::string_view(target).substr(q + 1);
  {
    absl::MutexLock lock(&mu_);
    ++requests_[path];
  }
  const absl::Time now = absl::Now();
  if (path == "/hang") {
    c.body = Body::kHang;
  } else if (path == "/drip") {
    const int64_t ms = IntParam(query, "ms", 1000);
    c.out = Head(200, "OK",
                 "Content-Type: application/octet-stream\r\n"
                 "Content-Length: 1000000\r\n");
    c.body = Body::kDrip;
    c.remaining = 1'000'000;
    c.drip_every = absl::Milliseconds(std::max<int64_t>(1, ms));
    c.next_drip = now + c.drip_every;
  } else if (path == "/endless") {
    c.out = Head(200, "OK",
                 "Content-Type: application/octet-stream\r\n"
                 "Transfer-Encoding: chunked\r\n");
    c.body = Body::kEndless;
  } else if (path == "/big-header") {
    c.out =
        absl::StrCat("HTTP/1.1 200 OK\r\nX-Big: ", std::string(1 << 20, 'h'),
                     "\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  } else if (path == "/many-headers") {
    c.shared = many_headers_;  // the whole response, built once
    c.body = Body::kShared;
  } else if (path == "/loop/a" || path == "/loop/b") {
    c.out = Head(302, "Found",
                 absl::StrCat("Location: /loop/", path == "/loop/a" ? "b" : "a",
                              "\r\nContent-Length: 0\r\n"));
  } else if (path == "/reset") {
    c.out = Head(200, "OK",
                 "Content-Type: application/octet-stream\r\n"
                 "Content-Length: 1048576\r\n");
    c.body = Body::kRepeat;
    c.remaining = 64 << 10;
    c.reset_at_end = true;
  } else if (path == "/deep-json" || path == "/deep-html") {
    c.shared = path == "/deep-json" ? deep_json_ : deep_html_;
    c.out = Head(
        200, "OK",
        absl::StrCat("Content-Type: ",
                     path == "/deep-json" ? "application/json" : "text/html",
                     "\r\nContent-Length: ", c.shared->size(), "\r\n"));
    c.body = Body::kShared;
  } else if (path == "/big") {
    const int64_t mib =
        std::clamp<int64_t>(IntParam(query, "mib", 64), 0, 1024);
    c.out = Head(200, "OK",
                 absl::StrCat("Content-Type: application/octet-stream\r\n"
                              "Content-Length: ",
                              mib << 20, "\r\n"));
    c.body = Body::kRepeat;
    c.remaining = mib << 20;
  } else {
    c.out = Head(404, "Not Found", "Content-Length: 9\r\n");
    c.out += "not found";
  }
}

bool HostileOrigin::OnWritable(Conn& c, absl::Time now) {
  using Body = Conn::Body;
  size_t written = 0;
  while (written < kMaxWriteBurst) {
    if (c.Pending()) {
      const ssize_t n = send(c.fd, c.out.data() + c.out_off,
                             c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (n < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      }
      c.out_off += n;
      written += n;
      continue;
    }
    c.out.clear();
    c.out_off = 0;
    switch (c.body) {
      case Body::kNone:
        return false;  // done: close
      case Body::kHang:
        return true;
      case Body::kShared: {
        const size_t left = c.shared->size() - c.shared_off;
        if (left == 0) return false;
        const size_t n = std::min(left, 4 * kSlice);
        c.out.assign(*c.shared, c.shared_off, n);
        c.shared_off += n;
        break;
      }
      case Body::kRepeat: {
        if (c.remaining == 0) {
          if (c.reset_at_end) {
            // SO_LINGER 0: close() sends a RST, mid-body.
            const linger hard{1, 0};
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
          }
          return false;
        }
        const size_t n = std::min<int64_t>(c.remaining, kSlice);
        c.out.assign(n, 'x');
        c.remaining -= n;
        break;
      }
      case Body::kEndless:
        c.out = absl::StrCat(absl::Hex(kSlice), "\r\n",
                             std::string(kSlice, 'e'), "\r\n");
        break;
      case Body::kDrip:
        if (c.remaining == 0) return false;
        if (now < c.next_drip) return true;
        c.out.assign(1, 'd');
        --c.remaining;
        c.next_drip = now + c.drip_every;
        break;
    }
  }
  return true;
}

}  // namespace fetchd::testing
