// Server: builds the gRPC server, owns the CQ loops and the worker pool, and
// tears them down in order (DESIGN.md "Shutdown order").
#include <grpc/grpc.h>
#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>

#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fetchd/v1/compute.grpc.pb.h"
#include "server/request/resume_token.h"
#include "server/rpc/admission.h"
#include "server/rpc/call.h"
#include "server/rpc/compute_call.h"
#include "server/rpc/fetch_call.h"
#include "server/rpc/jobs_call.h"
#include "server/rpc/pages_call.h"
#include "server/rpc/reflection.h"
#include "server/rpc/rpc.h"
#include "server/rpc/rpc_metrics.h"
#include "server/rpc/security.h"

namespace fetchd::rpc {

struct Server::State {
  State(const ServerConfig& c, std::unique_ptr<auth::Authenticator> a)
      : config(c),
        memory_budget(c.fetch.memory_budget_bytes),
        authenticator(std::move(a)),
        pool({.workers = c.workers, .max_queued_tasks = c.max_queued_tasks}),
        runner(&pool, c.kernel_limits),
        processor(&pool, c.fetch.process_inline_max_bytes,
                  c.fetch.max_process_time) {}

  FetchServices fetch_services() {
    return {&fetch_service, {engine.get(), &processor, &config.fetch}};
  }

  // Destroyed bottom-up: the gRPC server before its CQs, the CQs (and any
  // call state) before the service, runner and pool that calls point at.
  ServerConfig config;
  // Outlives every reservation: the engine's, the calls', the results'.
  memory::Budget memory_budget;
  std::unique_ptr<auth::Authenticator> authenticator;
  // Null when there is nothing to check (no tokens, no mTLS): every caller
  // is anonymous and calls skip the check.
  std::unique_ptr<CallAuthenticator> call_authenticator;
  RpcMetrics rpc_metrics{&authenticator->labels()};  // outlives every call
  RpcReporter reporter{&rpc_metrics, config.logger};
  std::unique_ptr<RpcAdmission> admission;  // outlives every call
  compute::WorkerPool pool;
  compute::KernelRunner runner;
  process::ProcessRunner processor;
  std::unique_ptr<fetch::AddressGuard> guard;  // the engine's policies use it
  std::unique_ptr<fetch::Engine> engine;
  // Runs on the engine and the pool; gone before them.
  std::unique_ptr<jobs::JobsService> jobs;
  // Health: once draining, every status stays NOT_SERVING; the Jobs
  // status follows its store only before that. Under one mutex so that a
  // store flip racing a drain cannot turn Jobs SERVING again.
  absl::Mutex health_mu;
  bool draining ABSL_GUARDED_BY(health_mu) = false;
  v1::Compute::AsyncService compute_service;
  v1::Fetch::AsyncService fetch_service;
  v1::Jobs::AsyncService jobs_service;
  std::unique_ptr<ReflectionService> reflection_service;
  std::vector<std::unique_ptr<CqLoop>> loops;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  // Destroyed first: a scrape reads the engine and the pool.
  std::unique_ptr<metrics::HttpEndpoint> metrics;
};

absl::Status ValidateServerConfig(const ServerConfig& c) {
  auto bad = [](const char* flag, int64_t value, const char* rule) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", value, " is invalid: ", rule));
  };
  if (c.listen.empty()) return absl::InvalidArgumentError("--listen is empty");
  if (c.cq_threads < 1 || c.cq_threads > 256) {
    return bad("cq_threads", c.cq_threads, "must be between 1 and 256");
  }
  if (c.workers < 1 || c.workers > 1024) {
    return bad("workers", c.workers, "must be between 1 and 1024");
  }
  if (c.armed_calls_per_method < 1 || c.armed_calls_per_method > 4096) {
    return bad("armed_calls_per_method", c.armed_calls_per_method,
               "must be between 1 and 4096");
  }
  if (c.max_queued_tasks < 0 || c.max_queued_tasks > 1'000'000) {
    return bad("max_queued_tasks", c.max_queued_tasks,
               "must be between 0 and 1000000");
  }
  // count_primes keeps the primes below sqrt(limit): 1e15 bounds that at
  // ~32 MB per running call, and keeps sqrt_sum's counter exact in a double.
  if (c.kernel_limits.max_n < 0 ||
      c.kernel_limits.max_n > 1'000'000'000'000'000) {
    return bad("max_compute_n", c.kernel_limits.max_n,
               "must be between 0 and 1000000000000000");
  }
  if (c.kernel_limits.max_data_bytes < 0 ||
      c.kernel_limits.max_data_bytes >= c.max_request_bytes) {
    return bad("max_compute_data_bytes", c.kernel_limits.max_data_bytes,
               "must be >= 0 and below --max_request_bytes");
  }
  if (c.kernel_limits.max_rounds < 1 ||
      c.kernel_limits.max_rounds > 1'000'000'000'000) {
    return bad("max_compute_rounds", c.kernel_limits.max_rounds,
               "must be between 1 and 1000000000000");
  }
  if (c.kernel_limits.max_time < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_compute_time=", absl::FormatDuration(c.kernel_limits.max_time),
        " is invalid: must be >= 0 (0: no limit)"));
  }
  if (c.fetch.max_process_time < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_process_time=", absl::FormatDuration(c.fetch.max_process_time),
        " is invalid: must be >= 0 (0: no limit)"));
  }
  const request::FetchConfig& f = c.fetch;
  if (f.engine.max_inflight < 1) {
    return bad("max_inflight_fetches", f.engine.max_inflight, "must be >= 1");
  }
  if (f.memory_budget_bytes < 1) {
    return bad("memory_budget_bytes", f.memory_budget_bytes,
               "must be >= 1 (0 is resolved before: the cgroup's limit)");
  }
  if (f.engine.max_per_host < 1) {
    return bad("max_per_host", f.engine.max_per_host, "must be >= 1");
  }
  if (f.engine.min_bytes_per_second < 0) {
    return bad("min_bytes_per_second", f.engine.min_bytes_per_second,
               "must be >= 0 (0 = off)");
  }
  if (f.engine.min_bytes_per_second > 0 &&
      f.engine.low_speed_window < absl::Seconds(1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--low_speed_window=", absl::FormatDuration(f.engine.low_speed_window),
        " is invalid: must be >= 1s"));
  }
  if (f.engine.max_inflight_per_identity < 0) {
    return bad("max_inflight_per_identity", f.engine.max_inflight_per_identity,
               "must be >= 0 (0 = no cap)");
  }
  if (f.engine.max_response_headers < 0) {
    return bad("max_response_headers", f.engine.max_response_headers,
               "must be >= 0 (0 = no cap)");
  }
  if (f.engine.max_response_header_bytes < 0) {
    return bad("max_response_header_bytes", f.engine.max_response_header_bytes,
               "must be >= 0 (0 = no cap)");
  }
  if (f.max_batch_items < 1) {
    return bad("max_batch_items", f.max_batch_items, "must be >= 1");
  }
  if (f.max_concurrency < 1) {
    return bad("max_concurrency", f.max_concurrency, "must be >= 1");
  }
  if (f.default_concurrency < 1 || f.default_concurrency > f.max_concurrency) {
    return bad("default_concurrency", f.default_concurrency,
               "must be between 1 and --max_concurrency");
  }
  if (f.default_max_body_bytes < 1 ||
      f.default_max_body_bytes > f.engine.limits.max_body_bytes) {
    return bad("default_max_body_bytes", f.default_max_body_bytes,
               "must be between 1 and --max_body_bytes");
  }
  if (f.default_max_redirects < 0 ||
      f.default_max_redirects > f.engine.limits.max_redirects) {
    return bad("default_max_redirects", f.default_max_redirects,
               "must be between 0 and --max_redirects");
  }
  if (f.engine.limits.max_attempts < 1) {
    return bad("max_attempts", f.engine.limits.max_attempts, "must be >= 1");
  }
  if (!(f.engine.retry_budget_ratio >= 0) ||
      !(f.engine.retry_budget_tokens >= 0)) {
    return absl::InvalidArgumentError(
        "--retry_budget_ratio and --retry_budget_burst must be >= 0");
  }
  if (f.default_item_timeout <= absl::ZeroDuration() ||
      f.default_item_timeout > f.engine.limits.max_timeout) {
    return absl::InvalidArgumentError(
        "--default_item_timeout must be above 0 and at most "
        "--max_item_timeout");
  }
  if (f.deadline_reserve < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--deadline_reserve must be >= 0");
  }
  if (f.default_prefetch < 1 || f.default_prefetch > f.max_prefetch) {
    return absl::InvalidArgumentError(
        "--max_prefetch must be >= 1 (and >= the default prefetch, 2)");
  }
  if (f.max_walk_pages < 1) {
    return bad("max_walk_pages", f.max_walk_pages, "must be >= 1");
  }
  if (!f.resume_token_key.empty() &&
      f.resume_token_key.size() < request::kMinResumeTokenKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_key_file holds ", f.resume_token_key.size(),
                     " bytes of key; at least ",
                     request::kMinResumeTokenKeyBytes, " are needed"));
  }
  if (!f.engine.proxy.empty() && !absl::StrContains(f.engine.proxy, "://")) {
    return absl::InvalidArgumentError(
        "--upstream_proxy must be a URL, e.g. http://proxy.internal:3128");
  }
  if (c.max_request_bytes < 1024) {
    return bad("max_request_bytes", c.max_request_bytes, "must be >= 1024");
  }
  if (c.tls_reload_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError("--tls_reload_interval must be >= 1s");
  }
  if (c.max_concurrent_rpcs < 1) {
    return bad("max_concurrent_rpcs", c.max_concurrent_rpcs, "must be >= 1");
  }
  if (c.max_concurrent_streams < 1) {
    return bad("max_concurrent_streams", c.max_concurrent_streams,
               "must be >= 1");
  }
  if (c.grpc_memory_quota_bytes < (1 << 20)) {
    return bad("grpc_memory_quota_bytes", c.grpc_memory_quota_bytes,
               "must be >= 1048576");
  }
  if (c.auth_tokens_poll_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "the tokens file poll interval must be above 0");
  }
  return auth::CheckTlsFiles(c.tls);
}

namespace {

// gRPC core's own log lines while a server is built. A failed bind is
// printed by gRPC core itself (an error tree on stderr) before
// BuildAndStart returns null; fetchd folds its gist into the one
// start_failed line instead. gpr's log function is process-wide, so the
// capture is as short as BuildAndStart and one at a time; what it caught on
// a successful start (another thread's line, say) is printed after all, so
// nothing is hidden.
class GrpcLogCapture {
 public:
  GrpcLogCapture() ABSL_EXCLUSIVE_LOCK_FUNCTION(one_at_a_time_) {
    one_at_a_time_.Lock();
    gpr_set_log_function(&GrpcLogCapture::Keep);
  }
  ~GrpcLogCapture() ABSL_UNLOCK_FUNCTION(one_at_a_time_) {
    gpr_set_log_function(nullptr);  // gpr's default (stderr)
    std::vector<Line> lines;
    {
      absl::MutexLock lock(&lines_mu_);
      lines.swap(lines_);
    }
    if (!discard_) {
      for (const Line& line : lines) {
        gpr_log(line.file.c_str(), line.line, line.severity, "%s",
                line.message.c_str());
      }
    }
    one_at_a_time_.Unlock();
  }
  GrpcLogCapture(const GrpcLogCapture&) = delete;
  GrpcLogCapture& operator=(const GrpcLogCapture&) = delete;

  // The start failed: what gRPC said goes into its error (Detail), not to
  // stderr.
  void Discard() { discard_ = true; }

  // The gist of the errors caught: "bind: Address already in use" from an
  // error tree that names the syscall and OS error, else the first error's
  // message without its tree; empty when there was none.
  std::string Detail() const ABSL_LOCKS_EXCLUDED(lines_mu_) {
    absl::MutexLock lock(&lines_mu_);
    for (const Line& line : lines_) {
      if (line.severity != GPR_LOG_SEVERITY_ERROR) continue;
      const std::string os_error = Quoted(line.message, "os_error:\"");
      if (!os_error.empty()) {
        const std::string syscall = Quoted(line.message, "syscall:\"");
        return syscall.empty() ? os_error
                               : absl::StrCat(syscall, ": ", os_error);
      }
    }
    for (const Line& line : lines_) {
      if (line.severity != GPR_LOG_SEVERITY_ERROR) continue;
      std::string message = line.message.substr(0, line.message.find(" {"));
      if (absl::StartsWith(message, "UNKNOWN:")) message.erase(0, 8);
      return message;
    }
    return "";
  }

 private:
  struct Line {
    std::string file;
    int line;
    gpr_log_severity severity;
    std::string message;
  };

  static void Keep(gpr_log_func_args* args) ABSL_LOCKS_EXCLUDED(lines_mu_) {
    absl::MutexLock lock(&lines_mu_);
    if (lines_.size() < 64) {  // bounded: a start logs a handful at most
      lines_.push_back({args->file != nullptr ? args->file : "", args->line,
                        args->severity,
                        args->message != nullptr ? args->message : ""});
    }
  }

  // The text between `key` (ending in a quote) and the next quote.
  static std::string Quoted(const std::string& text, const std::string& key) {
    const size_t start = text.find(key);
    if (start == std::string::npos) return "";
    const size_t from = start + key.size();
    const size_t end = text.find('"', from);
    return end == std::string::npos ? "" : text.substr(from, end - from);
  }

  static absl::Mutex one_at_a_time_;
  static absl::Mutex lines_mu_;
  static std::vector<Line> lines_ ABSL_GUARDED_BY(lines_mu_);
  bool discard_ = false;
};

ABSL_CONST_INIT absl::Mutex GrpcLogCapture::one_at_a_time_(absl::kConstInit);
ABSL_CONST_INIT absl::Mutex GrpcLogCapture::lines_mu_(absl::kConstInit);
std::vector<GrpcLogCapture::Line> GrpcLogCapture::lines_;

// The SSRF guard as the engine's address and host policy. With nothing it
// could refuse (--allow_private_networks and no deny or host rule), no
// policy runs at all.
template <typename State>
absl::Status InstallAddressGuard(const request::FetchConfig& config,
                                 State& state, fetch::Engine::Options& engine) {
  fetch::AddressGuardOptions options = config.address_guard;
  options.behind_proxy = !engine.proxy.empty();
  absl::StatusOr<std::unique_ptr<fetch::AddressGuard>> guard =
      fetch::AddressGuard::Create(options);
  if (!guard.ok()) return guard.status();
  state.guard = *std::move(guard);
  const fetch::AddressGuard* g = state.guard.get();
  engine.address_policy = nullptr;
  engine.host_policy = nullptr;
  if (g->refuses_anything() || config.wrap_address_policy) {
    fetch::AddressPolicy policy = [g](const sockaddr* address, socklen_t length,
                                      absl::string_view host) {
      return g->CheckConnection(address, length, host);
    };
    if (config.wrap_address_policy) {
      policy = config.wrap_address_policy(std::move(policy));
    }
    engine.address_policy = std::move(policy);
  }
  if (g->has_host_rules()) {
    engine.host_policy = [g](absl::string_view host) {
      return g->CheckHost(host);
    };
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerConfig config) {
  if (absl::Status valid = ValidateServerConfig(config); !valid.ok()) {
    return valid;
  }
  if (config.fetch.resume_token_key.empty()) {  // no --token_key_file
    absl::StatusOr<std::string> key = request::RandomResumeTokenKey();
    if (!key.ok()) return key.status();
    config.fetch.resume_token_key = *std::move(key);
  }
  absl::StatusOr<std::unique_ptr<auth::Authenticator>> authenticator =
      auth::Authenticator::Start(
          {.tokens_file = config.auth_tokens_file,
           .poll_interval = config.auth_tokens_poll_interval,
           .logger = config.logger});
  if (!authenticator.ok()) return authenticator.status();
  auto state = std::make_unique<State>(config, *std::move(authenticator));
  absl::StatusOr<std::unique_ptr<RpcAdmission>> admission =
      RpcAdmission::Create({.max_concurrent_rpcs = config.max_concurrent_rpcs,
                            .identity_limits_file = config.identity_limits_file,
                            .logger = config.logger});
  if (!admission.ok()) return admission.status();
  state->admission = *std::move(admission);
  const bool mtls = !config.tls.client_ca.empty();
  if (state->authenticator->tokens_required() || mtls) {
    state->call_authenticator =
        std::make_unique<CallAuthenticator>(state->authenticator.get(), mtls);
  }
  fetch::Engine::Options engine_options = config.fetch.engine;
  engine_options.memory_budget = &state->memory_budget;
  if (absl::Status s =
          InstallAddressGuard(config.fetch, *state, engine_options);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<std::unique_ptr<fetch::Engine>> engine =
      fetch::Engine::Start(std::move(engine_options));
  if (!engine.ok()) return engine.status();
  state->engine = *std::move(engine);
  if (!config.jobs.store.empty()) {
    absl::StatusOr<std::unique_ptr<jobs::JobsService>> jobs =
        jobs::JobsService::Start(config.jobs, state->fetch_services().request,
                                 &state->runner);
    if (!jobs.ok()) return jobs.status();
    state->jobs = *std::move(jobs);
  }
  if (!config.metrics_listen.empty()) {
    State* st = state.get();
    auto endpoint = metrics::HttpEndpoint::Start(config.metrics_listen, [st] {
      std::string text =
          RenderMetrics(st->rpc_metrics, st->engine->stats(), st->pool.stats(),
                        st->config.logger, st->guard.get(), &st->memory_budget);
      metrics::Exposition admission;
      st->admission->Render(admission);
      if (st->jobs != nullptr) st->jobs->Render(admission);
      return text + admission.text();
    });
    if (!endpoint.ok()) return endpoint.status();
    state->metrics = *std::move(endpoint);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(
      config.listen,
      MakeServerCredentials(config.tls, config.tls_reload_interval),
      &state->port);
  // Without this, Linux lets a second fetchd bind the same port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(config.max_request_bytes);
  // Caller limits (#16): streams per connection, and a memory bound for
  // gRPC's own buffers (connections, messages in flight); past it gRPC
  // refuses new work rather than growing.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             config.max_concurrent_streams);
  grpc::ResourceQuota quota("fetchd");
  quota.Resize(static_cast<size_t>(config.grpc_memory_quota_bytes));
  builder.SetResourceQuota(quota);
  builder.RegisterService(&state->compute_service);
  builder.RegisterService(&state->fetch_service);
  std::vector<std::string> reflected = {v1::Compute::service_full_name(),
                                        v1::Fetch::service_full_name()};
  if (state->jobs != nullptr) {
    builder.RegisterService(&state->jobs_service);
    reflected.push_back(v1::Jobs::service_full_name());
  }
  if (config.reflection) {
    reflected.insert(
        reflected.end(),
        {"grpc.health.v1.Health",
         grpc::reflection::v1alpha::ServerReflection::service_full_name()});
    state->reflection_service = std::make_unique<ReflectionService>(
        reflected, state->call_authenticator.get());
    builder.RegisterService(state->reflection_service.get());
  }
  // Health and reflection are gRPC's own synchronous services; they need
  // only a poller or two, the CQ threads below carry fetchd's RPCs.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS,
                              1);
  builder.SetSyncServerOption(
      grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(
      grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> cqs;
  for (int i = 0; i < config.cq_threads; ++i) {
    cqs.push_back(builder.AddCompletionQueue());
  }
  std::string start_error;
  {
    GrpcLogCapture capture;
    state->server = builder.BuildAndStart();
    if (state->server == nullptr || state->port == 0) {
      start_error = capture.Detail();
      capture.Discard();
    }
  }
  if (state->server == nullptr || state->port == 0) {
    // The server goes before its CQs. A BuildAndStart that failed has
    // destroyed its server already, but left it registered with our CQs
    // (grpc::Server unregisters only in Shutdown), so the C++
    // CompletionQueue::Shutdown would log "CompletionQueue shutdown being
    // shutdown before its server" once per CQ. Nothing was ever queued on
    // them: shut them down in the core, drain, and let them go.
    if (state->server != nullptr) {
      state->server->Shutdown();
      state->server.reset();
    }
    for (auto& cq : cqs) {
      grpc_completion_queue_shutdown(cq->cq());
      void* tag;
      bool ok;
      while (cq->Next(&tag, &ok)) {
      }
    }
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on --listen=", config.listen, ": ",
        start_error.empty() ? "address in use, or not a valid host:port"
                            : start_error));
  }
  for (auto& cq : cqs) {
    state->loops.push_back(std::make_unique<CqLoop>(
        std::move(cq), &state->reporter, state->call_authenticator.get(),
        state->admission.get()));
  }
  // NOTE: many requests armed per method, not one. gRPC 1.51 matches an
  // arriving call against the requests armed for its method (any CQ); with
  // none armed the call waits in the method's pending queue until a CQ
  // thread re-arms (each started call re-arms one). Server::Shutdown
  // (KillPendingWorkLocked) fails the armed requests (ok=false; CqLoop::Stop
  // waits for them) and zombifies every pending call: grpc_call_unref on a
  // call whose final op never ran cancels it, and the client sees
  // CANCELLED, which a retry on UNAVAILABLE does not cover. With enough
  // armed, a call that arrived before Shutdown runs (within
  // --shutdown_grace). Calls arriving after Shutdown began are zombified the
  // same way (CallData::StartNewRpc/PublishNewRpc), however many are armed:
  // that is what the drain (health NOT_SERVING for --drain_delay, seen by
  // clients with healthCheckConfig) is for. Cost: one idle call object per
  // armed request, and measured throughput: 8 or 64 armed cost 13-21% of
  // BatchFetch and small-Compute rates against 1 (bench/armed_calls.sh),
  // while the rollout losses did not change; hence a default of 1.
  for (auto& loop : state->loops) {
    for (int i = 0; i < config.armed_calls_per_method; ++i) {
      Call::Arm(new ComputeRunCall(&state->compute_service, &state->runner,
                                   loop.get()));
      Call::Arm(new BatchFetchCall(state->fetch_services(), loop.get()));
      Call::Arm(new StreamBatchFetchCall(state->fetch_services(), loop.get()));
      Call::Arm(new FetchPagesCall(state->fetch_services(), loop.get()));
      if (state->jobs != nullptr) {
        ArmJobsCalls(&state->jobs_service, state->jobs.get(), loop.get());
      }
    }
    loop->Start();
  }
  // Every service answers Check and Watch by its own name, as gRPC's
  // health protocol expects (only "" is registered by default). Jobs alone
  // goes NOT_SERVING while its store is down; Fetch and Compute go on.
  if (auto* health = state->server->GetHealthCheckService()) {
    health->SetServingStatus(v1::Fetch::service_full_name(), true);
    health->SetServingStatus(v1::Compute::service_full_name(), true);
    if (state->jobs != nullptr) {
      health->SetServingStatus(v1::Jobs::service_full_name(),
                               state->jobs->healthy());
      State* st = state.get();
      state->jobs->OnHealthChange([st, health](bool up) {
        absl::MutexLock lock(&st->health_mu);
        if (st->draining) return;
        health->SetServingStatus(v1::Jobs::service_full_name(), up);
      });
    }
  }
  return std::unique_ptr<Server>(new Server(std::move(state)));
}

Server::Server(std::unique_ptr<State> state) : state_(std::move(state)) {}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

int Server::port() const { return state_->port; }

int Server::metrics_port() const {
  return state_->metrics != nullptr ? state_->metrics->port() : 0;
}

compute::WorkerPool::Stats Server::worker_stats() const {
  return state_->pool.stats();
}

fetch::Engine::Stats Server::fetch_stats() const {
  return state_->engine->stats();
}

const memory::Budget& Server::memory_budget() const {
  return state_->memory_budget;
}

absl::Status Server::Reload() {
  absl::Status tokens = state_->authenticator->Reload("SIGHUP");
  absl::Status limits = state_->admission->Reload("SIGHUP");
  absl::Status secrets =
      state_->jobs != nullptr ? state_->jobs->Reload() : absl::OkStatus();
  if (!tokens.ok()) return tokens;
  return limits.ok() ? secrets : limits;
}

void Server::StartDraining() {
  // Leaves the overall and every per-service status NOT_SERVING; Shutdown
  // later makes it final. Clients with client-side health checking learn
  // it on their Health/Watch stream and stop picking this server. No
  // GOAWAY here: gRPC 1.51's C++ API sends one only from Shutdown, which
  // also stops the listener and cancels every call that arrives after it.
  absl::MutexLock lock(&state_->health_mu);
  state_->draining = true;
  if (auto* health = state_->server->GetHealthCheckService()) {
    health->SetServingStatus(false);  // "" and every registered name
  }
}

void KeepGrpcUntilExit() {
  grpc_init();  // never balanced: see rpc.h
}

void Server::Shutdown(absl::Duration grace) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return;
  shut_down_ = true;
  // Scrapes stop first: they read the engine, which goes below.
  state_->metrics.reset();
  {
    absl::MutexLock lock(&state_->health_mu);
    state_->draining = true;
    if (auto* health = state_->server->GetHealthCheckService()) {
      health->Shutdown();  // NOT_SERVING from now on
    }
  }
  // Watches end (UNAVAILABLE: resume elsewhere with from_seq) rather than
  // hold the grace; running jobs go back to the queue for another replica.
  if (state_->jobs != nullptr) state_->jobs->Drain();
  // Stops accepting, waits for in-flight calls until the deadline, then
  // cancels them (their OnCancel stops the kernels) and waits for them.
  state_->server->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  for (auto& loop : state_->loops) loop->Shutdown();
  state_->jobs.reset();
  state_->engine.reset();  // no call uses it any more
  state_->pool.Shutdown();
}

}  // namespace fetchd::rpc
