#include "server/metrics/metrics.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace fetchd::metrics {
namespace {

// Prometheus floats: integers without a fraction, +Inf spelled so.
std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(v));
  }
  return absl::StrFormat("%.9g", v);
}

void AppendEscaped(std::string& out, absl::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
}

void AppendLabels(std::string& out, const Exposition::Labels& labels) {
  if (labels.empty()) return;
  out += '{';
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i > 0) out += ',';
    absl::StrAppend(&out, labels[i].first, "=\"");
    AppendEscaped(out, labels[i].second);
    out += '"';
  }
  out += '}';
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i] = 0;
}

void Histogram::Observe(double seconds) {
  const size_t bucket =
      std::lower_bound(bounds_.begin(), bounds_.end(), seconds) -
      bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_nanos_.fetch_add(static_cast<uint64_t>(std::max(0.0, seconds) * 1e9),
                       std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  uint64_t running = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  s.count = running + counts_[bounds_.size()].load(std::memory_order_relaxed);
  s.sum = static_cast<double>(sum_nanos_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

std::vector<double> RpcLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
          0.5,   1,      2.5,   5,    10,    30,   60};
}

void Exposition::Family(absl::string_view name, absl::string_view type,
                        absl::string_view help) {
  absl::StrAppend(&text_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ",
                  type, "\n");
}

void Exposition::Sample(absl::string_view name, const Labels& labels,
                        double value) {
  text_.append(name.data(), name.size());
  AppendLabels(text_, labels);
  absl::StrAppend(&text_, " ", FormatValue(value), "\n");
}

void Exposition::HistogramSamples(absl::string_view name, const Labels& labels,
                                  const Histogram::Snapshot& snapshot) {
  const std::string bucket = absl::StrCat(name, "_bucket");
  Labels with_le = labels;
  with_le.emplace_back("le", "");
  for (size_t i = 0; i < snapshot.bounds.size(); ++i) {
    with_le.back().second = FormatValue(snapshot.bounds[i]);
    Sample(bucket, with_le, static_cast<double>(snapshot.cumulative[i]));
  }
  with_le.back().second = "+Inf";
  Sample(bucket, with_le, static_cast<double>(snapshot.count));
  Sample(absl::StrCat(name, "_sum"), labels, snapshot.sum);
  Sample(absl::StrCat(name, "_count"), labels,
         static_cast<double>(snapshot.count));
}

// --- HttpEndpoint
// ---------------------------------------------------------------

namespace {

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) close(fd);
    fd = -1;
  }
};

struct Connection {
  Fd fd;
  absl::Time accepted;
  absl::Time last_byte;  // of the request; `accepted` until one arrives
  size_t received = 0;
  std::string in;
  std::string out;  // the response, once the request head is in
  size_t sent = 0;
  bool writing = false;

  absl::Time Deadline(const HttpEndpointOptions& o) const {
    if (writing) return accepted + o.read_timeout + o.write_timeout;
    return std::min(last_byte + o.idle_timeout, accepted + o.read_timeout);
  }
};

std::string Response(int status, absl::string_view reason,
                     absl::string_view content_type, absl::string_view body,
                     bool head) {
  std::string out = absl::StrCat(
      "HTTP/1.1 ", status, " ", reason, "\r\nContent-Type: ", content_type,
      "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n");
  if (!head) out.append(body.data(), body.size());
  return out;
}

}  // namespace

struct HttpEndpoint::State {
  HttpEndpointOptions options;
  Render render;
  Fd listener;
  Fd wake;  // eventfd: Stop
  std::thread thread;
  int port = 0;
  std::atomic<int> open{0};
  std::atomic<bool> stopping{false};
  absl::Time accept_paused_until = absl::InfinitePast();  // loop thread only

  void Loop();
  void Accept(std::vector<Connection>& conns);
  // Reads what is there; false when the connection is to be closed.
  bool Read(Connection& c);
  bool Write(Connection& c);
  std::string Answer(absl::string_view head);
};

std::string HttpEndpoint::State::Answer(absl::string_view head) {
  const absl::string_view line = head.substr(0, head.find_first_of("\r\n"));
  std::vector<absl::string_view> parts =
      absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (parts.size() != 3 || !absl::StartsWith(parts[2], "HTTP/1.")) {
    return Response(400, "Bad Request", "text/plain", "bad request\n", false);
  }
  const bool head_only = parts[0] == "HEAD";
  if (parts[0] != "GET" && !head_only) {
    return Response(405, "Method Not Allowed", "text/plain", "GET /metrics\n",
                    false);
  }
  absl::string_view path = parts[1];
  path = path.substr(0, path.find('?'));
  if (path == "/metrics") {
    return Response(200, "OK", "text/plain; version=0.0.4", render(),
                    head_only);
  }
  if (path == "/") {
    return Response(200, "OK", "text/plain", "fetchd: metrics at /metrics\n",
                    head_only);
  }
  return Response(404, "Not Found", "text/plain", "not found\n", head_only);
}

void HttpEndpoint::State::Accept(std::vector<Connection>& conns) {
  while (true) {
    const int fd =
        accept4(listener.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      // Out of descriptors: the listener would stay readable and the loop
      // spin; look at it again a little later.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        accept_paused_until = absl::Now() + absl::Milliseconds(100);
      }
      return;
    }
    if (static_cast<int>(conns.size()) >= options.max_connections &&
        !conns.empty()) {
      // Make room: the oldest connection that has sent nothing, else the
      // oldest still reading, else the oldest.
      auto rank = [](const Connection& c) {
        return c.writing ? 2 : (c.received == 0 ? 0 : 1);
      };
      auto victim =
          std::min_element(conns.begin(), conns.end(),
                           [&](const Connection& a, const Connection& b) {
                             if (rank(a) != rank(b)) return rank(a) < rank(b);
                             return a.accepted < b.accepted;
                           });
      conns.erase(victim);
    }
    Connection c;
    c.fd = Fd(fd);
    c.accepted = c.last_byte = absl::Now();
    conns.push_back(std::move(c));
  }
}

bool HttpEndpoint::State::Read(Connection& c) {
  char buffer[4096];
  while (true) {
    const ssize_t n = recv(c.fd.fd, buffer, sizeof(buffer), 0);
    if (n == 0) return false;  // the client closed before asking
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    c.received += static_cast<size_t>(n);
    c.last_byte = absl::Now();
    c.in.append(buffer, static_cast<size_t>(n));
    size_t end = c.in.find("\r\n\r\n");
    if (end == std::string::npos) end = c.in.find("\n\n");
    if (end != std::string::npos) {
      c.out = Answer(absl::string_view(c.in).substr(0, end));
    } else if (c.in.size() > options.max_request_bytes) {
      c.out = Response(431, "Request Header Fields Too Large", "text/plain",
                       "request head too large\n", false);
    } else {
      continue;
    }
    c.in.clear();
    c.writing = true;
    shutdown(c.fd.fd, SHUT_RD);
    return Write(c);
  }
}

bool HttpEndpoint::State::Write(Connection& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n = send(c.fd.fd, c.out.data() + c.sent,
                           c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
    c.sent += static_cast<size_t>(n);
  }
  return false;  // all sent: close
}

void HttpEndpoint::State::Loop() {
  std::vector<Connection> conns;
  std::vector<pollfd> fds;
  while (!stopping.load(std::memory_order_acquire)) {
    fds.clear();
    fds.push_back({wake.fd, POLLIN, 0});
    const bool accepting = absl::Now() >= accept_paused_until;
    fds.push_back({listener.fd, static_cast<short>(accepting ? POLLIN : 0), 0});
    absl::Time next = accepting ? absl::InfiniteFuture() : accept_paused_until;
    for (const Connection& c : conns) {
      fds.push_back(
          {c.fd.fd, static_cast<short>(c.writing ? POLLOUT : POLLIN), 0});
      next = std::min(next, c.Deadline(options));
    }
    int timeout_ms = -1;
    if (next != absl::InfiniteFuture()) {
      timeout_ms = static_cast<int>(
          std::clamp<int64_t>(absl::ToInt64Milliseconds(absl::Ceil(
                                  next - absl::Now(), absl::Milliseconds(1))),
                              0, 60'000));
    }
    const int ready = poll(fds.data(), fds.size(), timeout_ms);
    if (ready < 0 && errno != EINTR) break;
    const absl::Time now = absl::Now();
    std::vector<Connection> kept;
    kept.reserve(conns.size());
    for (size_t i = 0; i < conns.size(); ++i) {
      Connection& c = conns[i];
      const short revents = ready > 0 ? fds[i + 2].revents : 0;
      bool keep = true;
      if (revents & (POLLERR | POLLNVAL)) {
        keep = false;
      } else if (revents & (POLLIN | POLLHUP)) {
        keep = !c.writing ? Read(c) : Write(c);
      } else if (revents & POLLOUT) {
        keep = Write(c);
      }
      if (keep && now >= c.Deadline(options)) keep = false;  // timed out
      if (keep) kept.push_back(std::move(c));
    }
    conns = std::move(kept);
    if (ready > 0 && (fds[1].revents & POLLIN)) Accept(conns);
    open.store(static_cast<int>(conns.size()), std::memory_order_relaxed);
  }
  open.store(0, std::memory_order_relaxed);
}

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& listen, Render render, HttpEndpointOptions options) {
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_listen: want host:port, got \"", listen, "\""));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [::1]:9090
  }
  auto state = std::make_unique<State>();
  state->options = options;
  state->options.max_connections = std::max(1, options.max_connections);
  state->render = std::move(render);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = absl::StrCat(port);
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(),
                  &hints, &found) != 0 ||
      found == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("--metrics_listen: cannot resolve ", listen));
  }
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    Fd fd(socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 a->ai_protocol));
    if (fd.fd < 0) continue;
    // SO_REUSEADDR for quick restarts; not SO_REUSEPORT, which would let a
    // second fetchd bind the same port silently.
    int yes = 1;
    setsockopt(fd.fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (bind(fd.fd, a->ai_addr, a->ai_addrlen) == 0 &&
        ::listen(fd.fd, 128) == 0) {
      state->listener = std::move(fd);
      break;
    }
  }
  freeaddrinfo(found);
  if (state->listener.fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("--metrics_listen: cannot bind ", listen));
  }
  sockaddr_storage bound{};
  socklen_t length = sizeof(bound);
  getsockname(state->listener.fd, reinterpret_cast<sockaddr*>(&bound), &length);
  state->port = ntohs(bound.ss_family == AF_INET6
                          ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                          : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  state->wake = Fd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (state->wake.fd < 0) return absl::InternalError("eventfd failed");
  State* s = state.get();
  state->thread = std::thread([s] { s->Loop(); });
  return std::unique_ptr<HttpEndpoint>(new HttpEndpoint(std::move(state)));
}

HttpEndpoint::HttpEndpoint(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

HttpEndpoint::~HttpEndpoint() {
  state_->stopping.store(true, std::memory_order_release);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(state_->wake.fd, &one, sizeof(one));
  if (state_->thread.joinable()) state_->thread.join();
}

int HttpEndpoint::port() const { return state_->port; }

int HttpEndpoint::connections() const {
  return state_->open.load(std::memory_order_relaxed);
}

}  // namespace fetchd::metrics
