#include "server/rpc/rpc_metrics.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fetchd::rpc {
namespace {

// gRPC's code names, as in grpc-status and every gRPC metric convention.
constexpr std::array<const char*, RpcMetrics::kCodes> kCodeNames = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED"};

constexpr std::array<const char*, 6> kStatusClasses = {"none", "1xx", "2xx",
                                                       "3xx",  "4xx", "5xx"};

}  // namespace

RpcMetrics::RpcMetrics(const auth::IdentityLabels* labels) : labels_(labels) {
  for (auto& h : latency_) {
    h = std::make_unique<metrics::Histogram>(metrics::RpcLatencyBuckets());
  }
}

void RpcMetrics::Record(absl::string_view method, grpc::StatusCode code,
                        absl::Duration took, int identity) {
  for (size_t m = 0; m < kMethods.size(); ++m) {
    if (kMethods[m] != method) continue;
    const auto c = static_cast<size_t>(code);
    const auto i = static_cast<size_t>(identity);
    if (c < kCodes && i < kIdentities) {
      calls_[m][i][c].fetch_add(1, std::memory_order_relaxed);
    }
    latency_[m]->Observe(absl::ToDoubleSeconds(took));
    return;
  }
}

void RpcMetrics::Render(metrics::Exposition& out) const {
  out.Family("fetchd_rpcs_total", "counter",
             "RPCs finished, by method, gRPC status code and caller identity "
             "(tokens-file identities or mTLS subjects, a bounded set, plus "
             "\"anonymous\" and \"other\").");
  const int identities =
      labels_ != nullptr ? std::min(labels_->size(), kIdentities) : 1;
  std::vector<std::string> names;
  for (int i = 0; i < identities; ++i) {
    names.push_back(labels_ != nullptr ? labels_->Name(i)
                                       : std::string(auth::kAnonymous));
  }
  for (size_t m = 0; m < kMethods.size(); ++m) {
    for (int i = 0; i < identities; ++i) {
      for (size_t c = 0; c < kCodes; ++c) {
        const uint64_t n = calls_[m][i][c].load(std::memory_order_relaxed);
        // anonymous OK always shows, so that rates start at zero; others
        // once seen.
        if (n == 0 && (c != 0 || i != auth::IdentityLabels::kAnonymousSlot)) {
          continue;
        }
        out.Sample("fetchd_rpcs_total",
                   {{"method", std::string(kMethods[m])},
                    {"code", kCodeNames[c]},
                    {"identity", names[i]}},
                   static_cast<double>(n));
      }
    }
  }
  out.Family("fetchd_rpc_duration_seconds", "histogram",
             "Time from an RPC's arrival to its final status, by method.");
  for (size_t m = 0; m < kMethods.size(); ++m) {
    out.HistogramSamples("fetchd_rpc_duration_seconds",
                         {{"method", std::string(kMethods[m])}},
                         latency_[m]->snapshot());
  }
}

void RpcReporter::OnRpcEnd(const RpcEnd& end) {
  metrics_->Record(end.method, end.code, end.took, end.caller->label);
  if (logger_ == nullptr || !logger_->Enabled(log::Level::kInfo)) return;
  const auto code = static_cast<size_t>(end.code);
  // No request contents (URLs, bodies, tokens): what, who, how it ended,
  // and the trace and request id the caller gave, to find it by.
  std::string line = absl::StrFormat(
      R"("event":"rpc","method":"%s","peer":"%s","identity":"%s","code":"%s","items":%d,"retries":%d,"duration_ms":%.3f)",
      end.method, log::JsonEscape(end.context->peer()),
      log::JsonEscape(end.caller->identity),
      code < kCodeNames.size() ? kCodeNames[code] : "UNKNOWN", end.items,
      end.retries, absl::ToDoubleMilliseconds(end.took));
  if (end.trace != nullptr) {
    // Parsed as lower-case hex: nothing to escape.
    if (end.trace->context.valid) {
      absl::StrAppend(&line, R"(,"trace_id":")",
                      end.trace->context.trace_id_hex(), R"(","span_id":")",
                      end.trace->context.span_id_hex(), "\"");
    }
    if (!end.trace->request_id.empty()) {
      absl::StrAppend(&line, R"(,"request_id":")",
                      log::JsonEscape(end.trace->request_id), "\"");
    }
  }
  logger_->Log(log::Level::kInfo, line);
}

std::string RenderMetrics(const RpcMetrics& rpcs,
                          const fetch::Engine::Stats& fetch,
                          const compute::WorkerPool::Stats& pool,
                          const log::Logger* logger,
                          const fetch::AddressGuard* guard,
                          const memory::Budget* memory) {
  metrics::Exposition out;
  rpcs.Render(out);

  out.Family("fetchd_fetch_attempts_total", "counter",
             "HTTP attempts finished (each try of each item), by response "
             "status class; none = no response (connect error, timeout, ...).");
  for (size_t i = 0; i < kStatusClasses.size(); ++i) {
    out.Sample("fetchd_fetch_attempts_total",
               {{"status_class", kStatusClasses[i]}},
               static_cast<double>(fetch.attempts_by_class[i]));
  }
  out.Family("fetchd_fetch_items_total", "counter",
             "Fetch items (and pages) ended, by outcome: the item's status "
             "code after its retries.");
  for (size_t c = 0; c < fetch.items_by_code.size(); ++c) {
    if (fetch.items_by_code[c] == 0 && c != 0) continue;
    out.Sample("fetchd_fetch_items_total", {{"code", kCodeNames[c]}},
               static_cast<double>(fetch.items_by_code[c]));
  }
  // One family, one unlabelled sample.
  auto single = [&out](absl::string_view name, absl::string_view type,
                       absl::string_view help, double value) {
    out.Family(name, type, help);
    out.Sample(name, value);
  };
  single("fetchd_fetch_retries_total", "counter",
         "Retries started (attempts after an item's first).",
         static_cast<double>(fetch.retries));
  single("fetchd_fetch_retry_budget_rejections_total", "counter",
         "Retries refused because the server-wide retry budget was spent.",
         static_cast<double>(fetch.retries_denied));
  single("fetchd_fetch_received_bytes_total", "counter",
         "Response body bytes received.",
         static_cast<double>(fetch.body_bytes));
  single("fetchd_fetch_transfers_in_flight", "gauge",
         "HTTP transfers on the I/O thread's multi handle.", fetch.inflight);
  single("fetchd_fetch_queued_items", "gauge",
         "Items waiting in the transfer FIFO (global or per-host limit).",
         fetch.waiting);
  single("fetchd_fetch_backing_off_items", "gauge",
         "Items waiting for a retry timer.", fetch.backing_off);
  single("fetchd_fetch_active_batches", "gauge",
         "Batches and page walks the engine is running.", fetch.batches);
  single("fetchd_fetch_active_hosts", "gauge",
         "Origin hosts with transfers running (each at most --max_per_host).",
         fetch.hosts);
  single("fetchd_fetch_hosts_at_limit", "gauge",
         "Origin hosts with --max_per_host transfers running (their next "
         "items wait in the FIFO).",
         fetch.hosts_at_limit);
  single("fetchd_worker_queued_tasks", "gauge",
         "Compute and processing tasks waiting for a worker.", pool.queued);
  single("fetchd_worker_running_tasks", "gauge",
         "Tasks running on the worker pool.", pool.running);
  if (logger != nullptr) {
    single("fetchd_log_dropped_lines_total", "counter",
           "Log lines dropped because the log writer fell behind.",
           static_cast<double>(logger->dropped()));
  }
  if (memory != nullptr) {
    single("fetchd_memory_budget_bytes", "gauge",
           "The process-wide memory budget (--memory_budget_bytes, or 60% of "
           "the cgroup's memory limit): bodies, processed output, kept "
           "headers, page items and queued messages together.",
           static_cast<double>(memory->limit()));
    single("fetchd_memory_reserved_bytes", "gauge",
           "Bytes reserved against the memory budget now; at the budget new "
           "transfers wait.",
           static_cast<double>(memory->reserved()));
  }
  if (guard != nullptr) {
    out.Family("fetchd_fetch_refusals_total", "counter",
               "Connections (or items) the SSRF guard refused, by reason: the "
               "address class, deny_cidrs, or host_rule (--allow_hosts, "
               "--deny_hosts).");
    for (int c = 1; c < fetch::kAddressClassCount; ++c) {
      const auto cls = static_cast<fetch::AddressClass>(c);
      out.Sample("fetchd_fetch_refusals_total",
                 {{"reason", std::string(fetch::AddressClassName(cls))}},
                 static_cast<double>(guard->refusals(cls)));
    }
    out.Sample("fetchd_fetch_refusals_total", {{"reason", "deny_cidrs"}},
               static_cast<double>(guard->cidr_refusals()));
    out.Sample("fetchd_fetch_refusals_total", {{"reason", "host_rule"}},
               static_cast<double>(guard->host_refusals()));
  }
  return out.text();
}

}  // namespace fetchd::rpc
