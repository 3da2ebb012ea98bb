// metrics/: Prometheus text exposition (format 0.0.4) and the HTTP endpoint
// that serves it. The numbers come from the modules' own counters, read at
// scrape time; nothing here sits on a request's path but Histogram. No gRPC
// or curl types.
#ifndef FETCHD_SERVER_METRICS_METRICS_H_
#define FETCHD_SERVER_METRICS_METRICS_H_

#include <atomic>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fetchd::metrics {

// A histogram of seconds with fixed upper bounds; Observe is lock-free and
// callable from any thread.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);  // ascending, seconds

  void Observe(double seconds);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound: observations <= it
    uint64_t count = 0;                // all, i.e. the +Inf bucket
    double sum = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  // Per bucket (not cumulative), the last one past every bound.
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<uint64_t> sum_nanos_{0};
};

// Latency buckets for RPCs: 1 ms to 60 s.
std::vector<double> RpcLatencyBuckets();

// Builds one exposition: call Family once per metric family, then its
// samples. Label values are escaped; names are the caller's constants.
class Exposition {
 public:
  using Labels = std::vector<std::pair<absl::string_view, std::string>>;

  void Family(absl::string_view name, absl::string_view type,
              absl::string_view help);
  void Sample(absl::string_view name, const Labels& labels, double value);
  void Sample(absl::string_view name, double value) { Sample(name, {}, value); }
  // name_bucket{...,le="..."}, name_sum and name_count.
  void HistogramSamples(absl::string_view name, const Labels& labels,
                        const Histogram::Snapshot& snapshot);

  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

// Bounds of the metrics endpoint against slow or idle clients (slowloris).
struct HttpEndpointOptions {
  // A connection that sends no byte for this long is closed.
  absl::Duration idle_timeout = absl::Seconds(5);
  // The whole request head must arrive within this of the connection.
  absl::Duration read_timeout = absl::Seconds(10);
  // The response must be taken by the client within this.
  absl::Duration write_timeout = absl::Seconds(10);
  // Connections held at once. Past it the oldest connection that has sent
  // nothing (else the oldest) is closed to make room, so a new scrape is
  // always served however many idle connections someone holds.
  int max_connections = 64;
  // A request head larger than this is answered 431 and closed.
  size_t max_request_bytes = 8 << 10;
};

// Serves GET /metrics (and / with a pointer to it) on its own thread: one
// poll(2) loop over every connection, one request per connection
// (Connection: close), each bounded by HttpEndpointOptions.
class HttpEndpoint {
 public:
  using Render = absl::AnyInvocable<std::string()>;

  // Binds `listen` (host:port; port 0 picks one). INVALID_ARGUMENT for a
  // malformed address, UNAVAILABLE if it cannot bind.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(
      const std::string& listen, Render render,
      HttpEndpointOptions options = {});
  ~HttpEndpoint();  // stops serving, closes every connection, joins
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  int port() const;
  // Connections open now (tests). Thread-safe.
  int connections() const;

 private:
  struct State;
  explicit HttpEndpoint(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace fetchd::metrics

#endif  // FETCHD_SERVER_METRICS_METRICS_H_
