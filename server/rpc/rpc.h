// rpc/: the gRPC face of fetchd.
//
// Server::Start builds an async (CompletionQueue) gRPC server with N CQ
// threads, the Compute service on a worker pool, the Fetch service on the
// curl-multi engine, the standard health service and server reflection.
// Server::Shutdown drains it in the order gRPC needs. This is the only module
// that speaks gRPC; it maps absl::Status to gRPC codes at its edge.
#ifndef FETCHD_SERVER_RPC_RPC_H_
#define FETCHD_SERVER_RPC_RPC_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/auth/auth.h"
#include "server/compute/compute.h"
#include "server/fetch/fetch.h"
#include "server/jobs/jobs.h"
#include "server/log/log.h"
#include "server/memory/memory.h"
#include "server/request/request.h"

namespace fetchd::rpc {

struct ServerConfig {
  std::string listen = "0.0.0.0:50051";  // host:port; port 0 = ephemeral
  int cq_threads = 1;                    // completion-queue threads, >= 1
  int workers = 1;                       // compute worker threads, >= 1
  int max_queued_tasks = 256;            // compute tasks waiting, >= 0
  // Requests armed per method on each CQ (--armed_calls_per_method): how
  // many calls of one method can arrive at once and be matched at once.
  // A call that finds none armed waits unmatched in gRPC core, and
  // grpc::Server::Shutdown cancels those (the client sees CANCELLED).
  // 1 by default: more cost throughput (docs/benchmarks.md) and did not
  // change the losses a rollout showed; client health checking did.
  int armed_calls_per_method = 1;
  compute::KernelLimits kernel_limits;
  int max_request_bytes = 4 << 20;  // gRPC max receive message size
  request::FetchConfig fetch;
  absl::Duration shutdown_grace = absl::Seconds(10);
  // Prometheus text on GET /metrics (host:port; port 0 picks one); empty:
  // no metrics endpoint.
  std::string metrics_listen;
  // Per-RPC log lines go here (not owned; outlives the server); null: none.
  log::Logger* logger = nullptr;
  // Transport security and authentication (server/auth): TLS when
  // tls.cert is set (files re-read every tls_reload_interval), mTLS with
  // tls.client_ca; bearer tokens when auth_tokens_file is set (checked for
  // a change every auth_tokens_poll_interval); reflection only for callers
  // who pass, and not at all when `reflection` is false.
  auth::TlsFiles tls;
  absl::Duration tls_reload_interval = absl::Seconds(60);
  std::string auth_tokens_file;
  absl::Duration auth_tokens_poll_interval = absl::Seconds(1);
  bool reflection = true;
  // Caller limits and quotas (#16). RPCs in progress over every fetchd
  // method (health and reflection excluded); past it RESOURCE_EXHAUSTED.
  int max_concurrent_rpcs = 1024;
  // Per-identity RPCs/s and items/s (server/rpc/admission.h has the
  // format); re-read by Reload(). Empty: no quotas.
  std::string identity_limits_file;
  // gRPC's per-connection limit on concurrent streams
  // (GRPC_ARG_MAX_CONCURRENT_STREAMS).
  int max_concurrent_streams = 256;
  // A grpc::ResourceQuota on the server: memory gRPC itself may use for
  // connections and messages in flight.
  int64_t grpc_memory_quota_bytes = int64_t{1} << 30;
  // The Jobs service (#17); jobs.store empty: not served.
  jobs::JobsConfig jobs;
};

// INVALID_ARGUMENT naming the flag when a value is out of range.
absl::Status ValidateServerConfig(const ServerConfig& config);

// For a process that serves until it exits (fetchd's main): keeps gRPC's
// library initialized until the process ends, so destroying the last Server
// does not tear gRPC down. That teardown joins gRPC's executor thread, and
// gRPC 1.51's TCP backup poller (started on it whenever a response write
// finds the socket full, e.g. a multi-MiB body) can sleep there for up to
// 10 s with nothing left to wake it: SIGTERM then took ~10 s to exit after
// "stopped". Everything fetchd owns is already shut down by then, and exit
// releases the rest. Call once, before Server::Start.
void KeepGrpcUntilExit();

class Server {
 public:
  // Binds, starts the CQ and worker threads and returns a serving server,
  // or the reason it could not (e.g. the address is in use).
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerConfig config);

  ~Server();  // Shutdown(absl::ZeroDuration()) unless already shut down
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The port actually bound (useful with port 0).
  int port() const;
  // The metrics endpoint's port; 0 without one.
  int metrics_port() const;

  // The start of a graceful stop: health turns NOT_SERVING, so load
  // balancers and Kubernetes endpoints stop sending new RPCs, while the
  // server keeps serving every RPC that still arrives. Thread-safe.
  void StartDraining();

  // Graceful stop: health turns NOT_SERVING, no new RPCs are accepted,
  // in-flight RPCs get up to `grace` to finish, the rest are cancelled;
  // then the CQs are drained and every thread joined. Blocks until done.
  // Thread-safe; later calls return at once.
  void Shutdown(absl::Duration grace) ABSL_LOCKS_EXCLUDED(mu_);

  // Reads --auth_tokens_file and --identity_limits_file again (on SIGHUP;
  // logged with "trigger": "SIGHUP"); on an error what is in force stays. TLS
  // files are re-read on their own interval. Thread-safe.
  absl::Status Reload();

  compute::WorkerPool::Stats worker_stats() const;
  fetch::Engine::Stats fetch_stats() const;
  // The memory budget (limit, reserved now, peak). Thread-safe.
  const memory::Budget& memory_budget() const;

 private:
  struct State;
  explicit Server(std::unique_ptr<State> state);

  std::unique_ptr<State> state_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_RPC_H_
