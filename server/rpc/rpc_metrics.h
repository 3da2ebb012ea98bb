// RpcMetrics: RPCs by method and code, with latency histograms; and the
// whole /metrics page of a server (internal to rpc/).
#ifndef FETCHD_SERVER_RPC_RPC_METRICS_H_
#define FETCHD_SERVER_RPC_RPC_METRICS_H_

#include <array>
#include <atomic>
#include <memory>
#include <string>

#include "server/auth/auth.h"
#include "server/compute/compute.h"
#include "server/fetch/fetch.h"
#include "server/log/log.h"
#include "server/metrics/metrics.h"
#include "server/rpc/call.h"

namespace fetchd::rpc {

class RpcMetrics {
 public:
  // The RPCs fetchd serves; others are not counted.
  static constexpr std::array<absl::string_view, 4> kMethods = {
      "Compute.Run", "Fetch.BatchFetch", "Fetch.StreamBatchFetch",
      "Fetch.FetchPages"};
  static constexpr int kCodes = 17;  // grpc::StatusCode 0..16

  static constexpr int kIdentities = auth::IdentityLabels::kMaxLabels;

  // `labels` names the identity slots (not owned; null: every RPC counts as
  // "anonymous").
  explicit RpcMetrics(const auth::IdentityLabels* labels = nullptr);

  // Thread-safe, lock-free. Methods not in kMethods are not counted;
  // `identity` is an IdentityLabels slot.
  void Record(absl::string_view method, grpc::StatusCode code,
              absl::Duration took,
              int identity = auth::IdentityLabels::kAnonymousSlot);

  void Render(metrics::Exposition& out) const;

 private:
  const auth::IdentityLabels* const labels_;  // may be null
  // [method][identity slot][code]
  std::array<std::array<std::array<std::atomic<uint64_t>, kCodes>, kIdentities>,
             kMethods.size()>
      calls_{};
  std::array<std::unique_ptr<metrics::Histogram>, kMethods.size()> latency_;
};

// What the server does as each RPC ends: count it, and (at --log_level
// info) log one JSON line: method, peer, identity, code, items, duration.
class RpcReporter final : public RpcObserver {
 public:
  RpcReporter(RpcMetrics* metrics, log::Logger* logger)
      : metrics_(metrics), logger_(logger) {}
  void OnRpcEnd(const RpcEnd& end) override;

 private:
  RpcMetrics* const metrics_;
  log::Logger* const logger_;  // may be null
};

// The text of /metrics: RPCs, the fetch engine, the worker pool, the log
// lines dropped (`logger` may be null), the SSRF guard's refusals
// (`guard` may be null) and the memory budget (`memory` may be null).
std::string RenderMetrics(const RpcMetrics& rpcs,
                          const fetch::Engine::Stats& fetch,
                          const compute::WorkerPool::Stats& pool,
                          const log::Logger* logger,
                          const fetch::AddressGuard* guard = nullptr,
                          const memory::Budget* memory = nullptr);

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_RPC_METRICS_H_
