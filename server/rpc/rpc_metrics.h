// RpcMetrics: RPCs by method and code, with latency histograms; and the
// whole /metrics page of a server (internal to rpc/).
#ifndef FETCHD_SERVER_RPC_RPC_METRICS_H_
#define FETCHD_SERVER_RPC_RPC_METRICS_H_

#include <array>
#include <atomic>
#include <memory>
#include <string>

#include "server/compute/compute.h"
#include "server/fetch/fetch.h"
#include "server/metrics/metrics.h"
#include "server/rpc/call.h"

namespace fetchd::rpc {

class RpcMetrics final : public RpcObserver {
 public:
  // The RPCs fetchd serves; others are not counted.
  static constexpr std::array<absl::string_view, 4> kMethods = {
      "Compute.Run", "Fetch.BatchFetch", "Fetch.StreamBatchFetch",
      "Fetch.FetchPages"};
  static constexpr int kCodes = 17;  // grpc::StatusCode 0..16

  RpcMetrics();

  void OnRpcEnd(absl::string_view method, grpc::StatusCode code,
                absl::Duration took) override;

  void Render(metrics::Exposition& out) const;

 private:
  std::array<std::array<std::atomic<uint64_t>, kCodes>, kMethods.size()>
      calls_{};
  std::array<std::unique_ptr<metrics::Histogram>, kMethods.size()> latency_;
};

// The text of /metrics: RPCs, the fetch engine, the worker pool.
std::string RenderMetrics(const RpcMetrics& rpcs,
                          const fetch::Engine::Stats& fetch,
                          const compute::WorkerPool::Stats& pool);

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_RPC_METRICS_H_
