#include "server/metrics/metrics.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

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

struct HttpEndpoint::State {
  httplib::Server server;
  std::thread thread;
  int port = 0;
};

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(
    const std::string& listen, Render render) {
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
  // One thread: a scrape is small and rare.
  state->server.new_task_queue = [] { return new httplib::ThreadPool(1); };
  state->server.set_keep_alive_max_count(10);
  // httplib's default adds SO_REUSEPORT, which lets a second fetchd bind
  // the same port silently; keep only SO_REUSEADDR (quick restarts).
  state->server.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  auto shared_render = std::make_shared<Render>(std::move(render));
  state->server.Get("/metrics", [shared_render](const httplib::Request&,
                                                httplib::Response& res) {
    res.set_content((*shared_render)(), "text/plain; version=0.0.4");
  });
  state->server.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("fetchd: metrics at /metrics\n", "text/plain");
  });
  const int bound = port == 0
                        ? state->server.bind_to_any_port(host)
                        : (state->server.bind_to_port(host, port) ? port : -1);
  if (bound < 0) {
    return absl::UnavailableError(
        absl::StrCat("--metrics_listen: cannot bind ", listen));
  }
  state->port = bound;
  State* s = state.get();
  state->thread = std::thread([s] { s->server.listen_after_bind(); });
  // stop() is a no-op until the loop runs: wait for it, so that the
  // destructor always ends it (httplib 0.11 has no wait_until_ready).
  for (int i = 0; i < 5000 && !state->server.is_running(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return std::unique_ptr<HttpEndpoint>(new HttpEndpoint(std::move(state)));
}

HttpEndpoint::HttpEndpoint(std::unique_ptr<State> state)
    : state_(std::move(state)) {}

HttpEndpoint::~HttpEndpoint() {
  state_->server.stop();
  if (state_->thread.joinable()) state_->thread.join();
}

int HttpEndpoint::port() const { return state_->port; }

}  // namespace fetchd::metrics
