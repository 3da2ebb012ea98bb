// fetchd: flags -> ServerConfig -> Server; waits for SIGTERM/SIGINT and
// shuts down gracefully. Nothing else lives here.
#include <signal.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/log/log.h"
#include "server/memory/memory.h"
#include "server/request/resume_token.h"
#include "server/rpc/rpc.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051",
          "gRPC listen address, host:port (port 0 picks a free port)");
ABSL_FLAG(int, cq_threads, 0,
          "completion-queue threads serving RPCs; 0 = number of cores");
ABSL_FLAG(int, workers, 0, "compute worker threads; 0 = number of cores");
ABSL_FLAG(int, max_queued_tasks, 256,
          "compute tasks that may wait for a worker; past it Compute.Run "
          "answers RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_compute_n, 10'000'000'000,
          "largest sqrt_sum.n and count_primes.limit a request may ask "
          "for");
ABSL_FLAG(int64_t, max_compute_data_bytes, 1 << 20,
          "largest sha256_chain.data, in bytes");
ABSL_FLAG(int, max_request_bytes, 4 << 20,
          "largest gRPC request message, in bytes (RESOURCE_EXHAUSTED past "
          "it)");
ABSL_FLAG(std::string, log_level, "info",
          "debug, info, warn or error: JSON lines on stderr at this level "
          "and above; info has one line per RPC (method, peer, code, items, "
          "duration). Start, drain and stop events always print.");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9090",
          "Prometheus metrics (text format) on GET /metrics at this "
          "host:port; empty turns the endpoint off");
ABSL_FLAG(absl::Duration, drain_delay, absl::Seconds(5),
          "on SIGTERM, how long fetchd keeps serving with health NOT_SERVING "
          "before it stops accepting RPCs, so that load balancers and "
          "Kubernetes endpoints stop routing to it first; SIGINT, or a "
          "second signal, skips the rest of it");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(10),
          "on SIGTERM/SIGINT, after the drain delay, how long in-flight RPCs "
          "may run before they are cancelled");

// Fetch: limits (each request's knobs are bounded by these) and defaults.
ABSL_FLAG(int, max_inflight_fetches, 512,
          "HTTP transfers in flight at once, all RPCs together; more wait in "
          "a FIFO");
ABSL_FLAG(int, max_per_host, 64,
          "transfers (so connections) per origin host at once; more wait in "
          "a FIFO");
ABSL_FLAG(int, max_prefetch, 16,
          "FetchPages: most pages a walk may fetch ahead of its reader "
          "(request field prefetch; default 2)");
ABSL_FLAG(int64_t, max_walk_pages, 1000000,
          "FetchPages: most pages one call walks (request field max_pages; "
          "a resume token continues)");
ABSL_FLAG(int, max_batch_items, 20000,
          "items in one BatchFetch/StreamBatchFetch (RESOURCE_EXHAUSTED past "
          "it)");
ABSL_FLAG(int, default_concurrency, 64,
          "a request's max_concurrency when it sets none");
ABSL_FLAG(int, max_concurrency, 1024,
          "largest max_concurrency a request may ask");
ABSL_FLAG(int64_t, default_max_body_bytes, 8 << 20,
          "a request's max_body_bytes when it sets none");
ABSL_FLAG(int64_t, max_body_bytes, 64 << 20,
          "largest max_body_bytes a request may ask");
ABSL_FLAG(int, default_max_redirects, 5,
          "redirects followed when a request sets no max_redirects");
ABSL_FLAG(int, max_redirects, 10, "largest max_redirects a request may ask");
ABSL_FLAG(int, max_attempts, 5, "largest retry.max_attempts a request may ask");
ABSL_FLAG(absl::Duration, max_backoff, absl::Seconds(30),
          "largest retry.max_backoff a request may ask");
ABSL_FLAG(absl::Duration, default_item_timeout, absl::Seconds(30),
          "per-attempt timeout of an item that sets none");
ABSL_FLAG(absl::Duration, max_item_timeout, absl::Minutes(5),
          "largest per-item timeout a request may ask");
ABSL_FLAG(double, retry_budget_ratio, 0.2,
          "retries may add at most this fraction to the request load, "
          "server-wide; past it failures return at once");
ABSL_FLAG(double, retry_budget_burst, 20,
          "retries allowed before the ratio applies (the budget's cap)");
ABSL_FLAG(int64_t, max_response_bytes, 256 << 20,
          "body bytes one fetch RPC may hold unsent; past it bodies are "
          "dropped with RESOURCE_EXHAUSTED on the item");
ABSL_FLAG(absl::Duration, deadline_reserve, absl::Milliseconds(50),
          "taken off each RPC deadline so results reach the caller in time");
ABSL_FLAG(int64_t, process_inline_max_bytes, 64 << 10,
          "bodies up to this size are processed on the I/O thread, bigger "
          "ones on the worker pool");

// Upstream credentials and TLS
ABSL_FLAG(std::vector<std::string>, credential_headers, {"X-Api-Key"},
          "request headers (comma list, case-insensitive) that, like "
          "Authorization, Cookie and Proxy-Authorization, never go to "
          "another origin than the item's: a redirect or next page there "
          "fails FAILED_PRECONDITION unless the request sets "
          "allow_cross_origin, which leaves them out instead");
ABSL_FLAG(std::string, upstream_ca_file, "",
          "PEM bundle of CAs trusted for HTTPS origins on top of the system "
          "bundle (private origins); read once at start. Peer and host-name "
          "verification are always on");

// Trace context (#18): W3C traceparent from callers to origins.
ABSL_FLAG(bool, propagate_trace, true,
          "a live RPC whose caller sent a valid W3C traceparent (gRPC "
          "metadata) passes it on to every origin request it makes, as a "
          "child span: the same trace id, a new span id per attempt, the "
          "caller's flags; an item's own traceparent header wins. The trace "
          "id, span id and any x-request-id are in the RPC's log line "
          "either way. Jobs and webhooks carry none");

// Resume tokens: FetchPages tokens are signed with this key, shared by
// every replica.
ABSL_FLAG(std::string, token_key_file, "",
          "file holding the key (at least 32 bytes; trailing whitespace "
          "ignored) that signs FetchPages resume tokens; give every replica "
          "the same file so any replica resumes any replica's walk. Empty: a "
          "random key per process, so tokens work only on the fetchd that "
          "made them and not after a restart");
// --- SSRF guard, international names, upstream proxy (issue #14, item 1) --
ABSL_FLAG(bool, allow_private_networks, false,
          "let fetches reach loopback, private, link-local (cloud metadata), "
          "CGNAT, unique-local and the other special-purpose addresses, "
          "which are refused by default; for local demos and tests only");
ABSL_FLAG(std::vector<std::string>, allow_cidrs, {},
          "comma list of CIDRs fetches may reach even though they are "
          "special-purpose, e.g. 10.20.0.0/16,fd00:1::/64");
ABSL_FLAG(std::vector<std::string>, deny_cidrs, {},
          "comma list of CIDRs fetches may never reach; wins over "
          "--allow_cidrs and --allow_private_networks");
ABSL_FLAG(std::vector<std::string>, allow_hosts, {},
          "comma list of hosts (api.example.com, or *.example.com for the "
          "names below it); when set, every other host is refused. An "
          "allowed host still may not reach a special-purpose address");
ABSL_FLAG(std::vector<std::string>, deny_hosts, {},
          "comma list of hosts (api.example.com or *.example.com) that are "
          "refused; wins over --allow_hosts");
ABSL_FLAG(std::string, upstream_proxy, "",
          "send every fetch through this HTTP(S) proxy URL, which then does "
          "the address checks (host rules still apply here). Without it, "
          "fetchd refuses to start while http_proxy, https_proxy or "
          "all_proxy is set");

// Transport security and authentication (server/auth, docs: security).
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain for TLS on the gRPC port (with --tls_key); "
          "empty: plaintext. Re-read every --tls_reload_interval");
ABSL_FLAG(std::string, tls_key, "",
          "PEM private key of --tls_cert (unencrypted)");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: with it every client must present a certificate "
          "signed by it (mTLS), and its subject (CN, else first SAN) names "
          "the caller when there is no tokens file");
ABSL_FLAG(absl::Duration, tls_reload_interval, absl::Seconds(60),
          "how often the TLS files are re-read, so a rotated certificate "
          "(e.g. a cert-manager Secret) is served to new connections "
          "without a restart; >= 1s");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "bearer tokens, one per line: \"IDENTITY TOKEN\" or \"TOKEN\" "
          "(identity token-N, N its index from 0); '#' comments. With it "
          "every RPC but grpc.health.v1.Health needs \"authorization: "
          "Bearer TOKEN\", else UNAUTHENTICATED. Re-read on SIGHUP and when "
          "the file changes");
ABSL_FLAG(bool, reflection, true,
          "serve gRPC server reflection (grpcurl), to authenticated callers "
          "only");

// --- Rolling restarts (issue #15) ------------------------------------------
ABSL_FLAG(int, armed_calls_per_method, 1,
          "requests armed per RPC method on each completion queue: calls "
          "that arrive at once beyond cq_threads x this wait unmatched in "
          "gRPC (each started call re-arms one), and a shutdown cancels "
          "those (CANCELLED); 1..4096. More cost throughput: see "
          "docs/benchmarks.md");

// --- Caller limits and quotas (#16) ---------------------------------------
ABSL_FLAG(int, max_concurrent_rpcs, 1024,
          "fetchd RPCs in progress at once, every method together (streams "
          "and walks included; health and reflection not); past it a new "
          "RPC is answered RESOURCE_EXHAUSTED at once");
ABSL_FLAG(std::string, identity_limits_file, "",
          "per-identity quotas, one line each: \"IDENTITY "
          "[rpcs_per_second=R] [items_per_second=I] [burst=SECONDS]\", and "
          "\"default ...\" for identities without a line; '#' comments. "
          "IDENTITY is a token identity or mTLS subject, or for anonymous "
          "callers the peer IP address. Past a quota: RESOURCE_EXHAUSTED "
          "with retry-after trailing metadata. Re-read on SIGHUP; empty: no "
          "quotas");
ABSL_FLAG(int, max_concurrent_streams, 256,
          "gRPC streams (calls) one client connection may have open at once "
          "(GRPC_ARG_MAX_CONCURRENT_STREAMS)");
ABSL_FLAG(int64_t, grpc_memory_quota_bytes, int64_t{1} << 30,
          "memory gRPC itself may use for connections and messages in "
          "flight (a grpc::ResourceQuota); >= 1 MiB");

// --- Processing and compute limits (#16) -----------------------------------
ABSL_FLAG(absl::Duration, max_process_time, absl::Seconds(2),
          "CPU time one processor run (html_title, json_pointer, ...) may "
          "use; past it the item fails with RESOURCE_EXHAUSTED. 0: no limit");
ABSL_FLAG(absl::Duration, max_compute_time, absl::Seconds(60),
          "server-side deadline for every Compute.Run, from its arrival, "
          "even when the caller sets none; past it DEADLINE_EXCEEDED naming "
          "this flag. 0: none (the caller's deadline only)");
ABSL_FLAG(int64_t, max_compute_rounds, 100'000'000,
          "largest sha256_chain.rounds a request may ask for (~9 s of CPU "
          "at the default, inside --max_compute_time)");

// Engine: hostile origins and fair shares (#16)
ABSL_FLAG(int64_t, min_bytes_per_second, 1024,
          "a transfer that receives fewer bytes a second than this for "
          "--low_speed_window ends DEADLINE_EXCEEDED (retried as a timeout); "
          "0 = off");
ABSL_FLAG(absl::Duration, low_speed_window, absl::Seconds(30),
          "how long a transfer may stay under --min_bytes_per_second (whole "
          "seconds, at least 1)");
ABSL_FLAG(int, max_response_headers, 256,
          "response header lines per response (each redirect hop on its "
          "own); past it the item fails RESOURCE_EXHAUSTED; 0 = no cap");
ABSL_FLAG(int64_t, max_response_header_bytes, 64 << 10,
          "bytes of one response's header lines together, and so of any one "
          "line; past it the item fails RESOURCE_EXHAUSTED; 0 = no cap "
          "(curl still refuses a line over 100 KB)");
ABSL_FLAG(int, max_inflight_per_identity, 0,
          "transfers one caller (token or mTLS identity, else peer address) "
          "may have running at once; 0 = no cap. Slots are shared round "
          "robin across callers either way");

// --- Memory budget (issue #16, item 3) ---------------------------------------
ABSL_FLAG(int64_t, memory_budget_bytes, 0,
          "bytes that response bodies, processed output, kept headers, page "
          "items and queued messages may hold at once, process-wide; at the "
          "budget new transfers wait, and a body that cannot fit fails "
          "RESOURCE_EXHAUSTED. 0 = 60% of the cgroup's memory limit "
          "(memory.max, or v1 memory.limit_in_bytes), else 1 GiB");

// --- Jobs (issue #17)
// ---------------------------------------------------------
ABSL_FLAG(std::string, data_dir, "/var/lib/fetchd",
          "directory for fetchd's files (the default SQLite job store); "
          "created if missing (one level)");
ABSL_FLAG(std::string, job_store, "",
          "where jobs live: sqlite:PATH (WAL mode), or postgres://... / "
          "postgresql://... (shared by replicas); empty = "
          "sqlite:DATA_DIR/jobs.db; none = no Jobs service");
ABSL_FLAG(int, max_jobs_running, 2, "jobs this replica runs at once");
ABSL_FLAG(int, max_jobs_queued, 100,
          "QUEUED or RUNNING jobs one identity may have; past it Submit is "
          "RESOURCE_EXHAUSTED; 0 = no cap");
ABSL_FLAG(int64_t, max_job_items, 1'000'000, "items of one batch job");
ABSL_FLAG(int64_t, max_store_bytes, 0,
          "job store size past which Submit is RESOURCE_EXHAUSTED; 0 = no "
          "cap");
ABSL_FLAG(absl::Duration, job_lease, absl::Seconds(30),
          "how long a replica holds a job without renewing it (every "
          "lease/3); a job whose replica died is taken again after it");
ABSL_FLAG(absl::Duration, default_job_ttl, absl::Hours(24),
          "how long a job and its results are kept after it ends, unless "
          "Submit's ttl says otherwise");
ABSL_FLAG(absl::Duration, max_job_ttl, absl::Hours(24 * 7),
          "the longest ttl Submit may ask for");
ABSL_FLAG(absl::Duration, job_poll_interval, absl::Milliseconds(500),
          "how often a replica looks for jobs and progress it was not told "
          "of (other replicas' submits and progress)");
ABSL_FLAG(int, job_store_threads, 2, "threads running Jobs RPCs' store calls");
ABSL_FLAG(int, max_job_watchers, 1024,
          "Jobs.Watch streams open at once on this replica; past it "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(std::string, webhook_secrets_file, "",
          "webhook secrets by id, one 'ID SECRET' per line (Submit's "
          "webhook.secret_id); re-read on SIGHUP");
ABSL_FLAG(absl::Duration, webhook_progress_interval, absl::Seconds(10),
          "at most one job.progress webhook per job per interval");
ABSL_FLAG(int, webhook_max_attempts, 8,
          "webhook delivery attempts before it is given up (FAILED)");
ABSL_FLAG(absl::Duration, webhook_timeout, absl::Seconds(10),
          "time a webhook receiver has to answer one POST");

namespace {

// A proxy URL without its user:password@, for the log.
std::string RedactedUrl(const std::string& url) {
  const size_t scheme = url.find("://");
  const size_t start = scheme == std::string::npos ? 0 : scheme + 3;
  const size_t at = url.find('@', start);
  const size_t slash = url.find('/', start);
  if (at == std::string::npos || (slash != std::string::npos && slash < at)) {
    return url;
  }
  return url.substr(0, start) + "***@" + url.substr(at + 1);
}

int OrCores(int value) {
  if (value > 0) return value;
  const unsigned cores = std::thread::hardware_concurrency();
  return cores == 0 ? 1 : static_cast<int>(cores);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "a gRPC service that fetches and computes for other services.\n"
      "Usage: fetchd [--flag=value ...]");
  // --help lists the flags of this file (absl matches on the file name,
  // which is main.cc, not fetchd.cc).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "server/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
#ifdef NDEBUG
  // Debian builds Abseil with its debug-only deadlock detector on, which
  // costs a graph lookup per lock on the hot paths; the sanitizer build
  // keeps it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif

  // Block the stop signals (and SIGHUP, reload) before any thread starts so
  // every thread inherits the mask and only sigwait below sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  using fetchd::log::JsonEscape;
  using fetchd::log::Level;
  const absl::StatusOr<Level> level =
      fetchd::log::ParseLevel(absl::GetFlag(FLAGS_log_level));
  if (!level.ok()) {
    std::fprintf(stderr, "fetchd: %s\n",
                 std::string(level.status().message()).c_str());
    return 1;
  }
  // Lifecycle events and one line per RPC; written on its own thread, and
  // flushed when main returns.
  fetchd::log::Logger logger({.level = *level});

  fetchd::rpc::ServerConfig config;
  config.logger = &logger;
  config.listen = absl::GetFlag(FLAGS_listen);
  config.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  config.cq_threads = OrCores(absl::GetFlag(FLAGS_cq_threads));
  config.workers = OrCores(absl::GetFlag(FLAGS_workers));
  config.max_queued_tasks = absl::GetFlag(FLAGS_max_queued_tasks);
  config.armed_calls_per_method = absl::GetFlag(FLAGS_armed_calls_per_method);
  config.kernel_limits.max_n = absl::GetFlag(FLAGS_max_compute_n);
  config.kernel_limits.max_data_bytes =
      absl::GetFlag(FLAGS_max_compute_data_bytes);
  config.max_request_bytes = absl::GetFlag(FLAGS_max_request_bytes);
  // Processing and compute limits (#16)
  config.kernel_limits.max_rounds = absl::GetFlag(FLAGS_max_compute_rounds);
  config.kernel_limits.max_time = absl::GetFlag(FLAGS_max_compute_time);
  config.fetch.max_process_time = absl::GetFlag(FLAGS_max_process_time);
  fetchd::request::FetchConfig& fetch = config.fetch;
  fetch.engine.max_inflight = absl::GetFlag(FLAGS_max_inflight_fetches);
  fetch.engine.max_per_host = absl::GetFlag(FLAGS_max_per_host);
  fetch.engine.retry_budget_ratio = absl::GetFlag(FLAGS_retry_budget_ratio);
  fetch.engine.retry_budget_tokens = absl::GetFlag(FLAGS_retry_budget_burst);
  fetch.engine.limits.max_body_bytes = absl::GetFlag(FLAGS_max_body_bytes);
  fetch.engine.limits.max_redirects = absl::GetFlag(FLAGS_max_redirects);
  fetch.engine.limits.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  fetch.engine.limits.max_backoff = absl::GetFlag(FLAGS_max_backoff);
  fetch.engine.limits.max_timeout = absl::GetFlag(FLAGS_max_item_timeout);
  fetch.max_batch_items = absl::GetFlag(FLAGS_max_batch_items);
  fetch.max_prefetch = absl::GetFlag(FLAGS_max_prefetch);
  fetch.max_walk_pages = absl::GetFlag(FLAGS_max_walk_pages);
  fetch.default_concurrency = absl::GetFlag(FLAGS_default_concurrency);
  fetch.max_concurrency = absl::GetFlag(FLAGS_max_concurrency);
  fetch.default_max_body_bytes = absl::GetFlag(FLAGS_default_max_body_bytes);
  fetch.default_max_redirects = absl::GetFlag(FLAGS_default_max_redirects);
  fetch.default_item_timeout = absl::GetFlag(FLAGS_default_item_timeout);
  fetch.max_response_bytes = absl::GetFlag(FLAGS_max_response_bytes);
  fetch.deadline_reserve = absl::GetFlag(FLAGS_deadline_reserve);
  fetch.propagate_trace = absl::GetFlag(FLAGS_propagate_trace);
  // Memory budget: the flag, else the cgroup's limit, else the default.
  if (absl::GetFlag(FLAGS_memory_budget_bytes) < 0) {
    logger.LogAlways(
        Level::kError,
        R"("event":"start_failed","error":"--memory_budget_bytes must be >= 0, and 0 derives it from the cgroup")");
    return 1;
  }
  const fetchd::memory::BudgetChoice memory_budget =
      fetchd::memory::ChooseBudgetForThisProcess(
          absl::GetFlag(FLAGS_memory_budget_bytes));
  fetch.memory_budget_bytes = memory_budget.bytes;
  logger.LogAlways(
      Level::kInfo,
      absl::StrFormat(R"("event":"memory_budget","bytes":%d,"source":"%s")",
                      memory_budget.bytes, JsonEscape(memory_budget.source)));
  fetch.process_inline_max_bytes = static_cast<size_t>(
      std::max<int64_t>(0, absl::GetFlag(FLAGS_process_inline_max_bytes)));
  // Upstream credentials and TLS
  fetch.engine.credential_headers.clear();
  for (const std::string& name : absl::GetFlag(FLAGS_credential_headers)) {
    const std::string trimmed(absl::StripAsciiWhitespace(name));
    if (!trimmed.empty()) {
      fetch.engine.credential_headers.push_back(absl::AsciiStrToLower(trimmed));
    }
  }
  fetch.engine.upstream_ca_file = absl::GetFlag(FLAGS_upstream_ca_file);
  // Engine: hostile origins and fair shares (#16)
  fetch.engine.min_bytes_per_second = absl::GetFlag(FLAGS_min_bytes_per_second);
  fetch.engine.low_speed_window = absl::GetFlag(FLAGS_low_speed_window);
  fetch.engine.max_response_headers = absl::GetFlag(FLAGS_max_response_headers);
  fetch.engine.max_response_header_bytes =
      absl::GetFlag(FLAGS_max_response_header_bytes);
  fetch.engine.max_inflight_per_identity =
      absl::GetFlag(FLAGS_max_inflight_per_identity);
  // Resume tokens
  if (const std::string path = absl::GetFlag(FLAGS_token_key_file);
      !path.empty()) {
    absl::StatusOr<std::string> key = fetchd::request::ReadResumeTokenKey(path);
    if (!key.ok()) {
      logger.LogAlways(Level::kError,
                       absl::StrFormat(R"("event":"start_failed","error":"%s")",
                                       JsonEscape(key.status().message())));
      return 1;
    }
    fetch.resume_token_key = *std::move(key);
  } else {
    logger.LogAlways(
        Level::kWarn,
        R"("event":"resume_token_key","source":"random","note":"no --token_key_file: FetchPages resume tokens work only on this process, not on other replicas or after a restart")");
  }
  // The SSRF guard. A proxy taken from the environment would hide the real
  // address from it, so only an explicit --upstream_proxy is accepted.
  fetch.address_guard.allow_private_networks =
      absl::GetFlag(FLAGS_allow_private_networks);
  fetch.address_guard.allow_cidrs = absl::GetFlag(FLAGS_allow_cidrs);
  fetch.address_guard.deny_cidrs = absl::GetFlag(FLAGS_deny_cidrs);
  fetch.address_guard.allow_hosts = absl::GetFlag(FLAGS_allow_hosts);
  fetch.address_guard.deny_hosts = absl::GetFlag(FLAGS_deny_hosts);
  fetch.engine.proxy = absl::GetFlag(FLAGS_upstream_proxy);
  if (fetch.engine.proxy.empty()) {
    for (const char* name : {"http_proxy", "HTTP_PROXY", "https_proxy",
                             "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
      const char* value = std::getenv(name);
      if (value == nullptr || value[0] == '\0') continue;
      logger.LogAlways(
          Level::kError,
          absl::StrFormat(
              R"("event":"start_failed","error":"the environment sets %s: fetchd's address guard would see only the proxy's address. Unset it, or pass --upstream_proxy=URL to send every fetch through a proxy that does the address checks")",
              name));
      return 1;
    }
  } else {
    logger.LogAlways(
        Level::kInfo,
        absl::StrFormat(
            R"("event":"upstream_proxy","proxy":"%s","note":"every fetch goes through this proxy, which does the address checks; fetchd checks host rules and IP-literal hosts only; proxy variables of the environment are ignored")",
            JsonEscape(RedactedUrl(fetch.engine.proxy))));
  }
  if (fetch.address_guard.allow_private_networks) {
    logger.LogAlways(
        Level::kWarn,
        R"("event":"address_guard","allow_private_networks":true,"note":"fetches may reach loopback, private and link-local (cloud metadata) addresses")");
  }
  config.tls = {.cert = absl::GetFlag(FLAGS_tls_cert),
                .key = absl::GetFlag(FLAGS_tls_key),
                .client_ca = absl::GetFlag(FLAGS_tls_client_ca)};
  config.tls_reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  config.auth_tokens_file = absl::GetFlag(FLAGS_auth_tokens_file);
  config.reflection = absl::GetFlag(FLAGS_reflection);
  // Caller limits and quotas (#16)
  config.max_concurrent_rpcs = absl::GetFlag(FLAGS_max_concurrent_rpcs);
  config.identity_limits_file = absl::GetFlag(FLAGS_identity_limits_file);
  config.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  config.grpc_memory_quota_bytes = absl::GetFlag(FLAGS_grpc_memory_quota_bytes);
  // Jobs (#17)
  {
    fetchd::jobs::JobsConfig& jobs = config.jobs;
    jobs.store = absl::GetFlag(FLAGS_job_store);
    if (jobs.store.empty()) {
      const std::string dir = absl::GetFlag(FLAGS_data_dir);
      if (mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
        logger.LogAlways(
            Level::kError,
            absl::StrFormat(
                R"("event":"start_failed","error":"--data_dir=%s: cannot create it: %s; set --data_dir or --job_store")",
                JsonEscape(dir), JsonEscape(strerror(errno))));
        return 1;
      }
      jobs.store = absl::StrCat("sqlite:", dir, "/jobs.db");
    } else if (jobs.store == "none") {
      jobs.store.clear();
    }
    jobs.max_jobs_running = absl::GetFlag(FLAGS_max_jobs_running);
    jobs.max_jobs_queued = absl::GetFlag(FLAGS_max_jobs_queued);
    jobs.max_job_items = absl::GetFlag(FLAGS_max_job_items);
    jobs.max_store_bytes = absl::GetFlag(FLAGS_max_store_bytes);
    jobs.lease = absl::GetFlag(FLAGS_job_lease);
    jobs.default_ttl = absl::GetFlag(FLAGS_default_job_ttl);
    jobs.max_ttl = absl::GetFlag(FLAGS_max_job_ttl);
    jobs.poll_interval = absl::GetFlag(FLAGS_job_poll_interval);
    jobs.store_threads = absl::GetFlag(FLAGS_job_store_threads);
    jobs.max_watchers = absl::GetFlag(FLAGS_max_job_watchers);
    jobs.webhook_secrets_file = absl::GetFlag(FLAGS_webhook_secrets_file);
    jobs.webhook_progress_interval =
        absl::GetFlag(FLAGS_webhook_progress_interval);
    jobs.webhook_max_attempts = absl::GetFlag(FLAGS_webhook_max_attempts);
    jobs.webhook_timeout = absl::GetFlag(FLAGS_webhook_timeout);
  }
  const absl::Duration grace = absl::GetFlag(FLAGS_shutdown_grace);
  if (grace < absl::ZeroDuration()) {
    logger.LogAlways(
        Level::kError,
        R"("event":"start_failed","error":"--shutdown_grace must be >= 0")");
    return 1;
  }
  const absl::Duration drain = absl::GetFlag(FLAGS_drain_delay);
  if (drain < absl::ZeroDuration()) {
    logger.LogAlways(
        Level::kError,
        R"("event":"start_failed","error":"--drain_delay must be >= 0")");
    return 1;
  }

  fetchd::rpc::KeepGrpcUntilExit();  // a prompt exit after "stopped"
  auto server = fetchd::rpc::Server::Start(config);
  if (!server.ok()) {
    logger.LogAlways(Level::kError,
                     absl::StrFormat(R"("event":"start_failed","error":"%s")",
                                     JsonEscape(server.status().ToString())));
    return 1;
  }
  logger.LogAlways(
      Level::kInfo,
      absl::StrFormat(
          R"("event":"serving","listen":"%s","port":%d,"metrics_port":%d,"cq_threads":%d,"workers":%d)",
          JsonEscape(config.listen), (*server)->port(),
          (*server)->metrics_port(), config.cq_threads, config.workers));
  logger.LogAlways(
      Level::kInfo,
      absl::StrFormat(
          R"("event":"security","tls":%s,"mtls":%s,"tokens":%s,"reflection":%s)",
          config.tls.cert.empty() ? "false" : "true",
          config.tls.client_ca.empty() ? "false" : "true",
          config.auth_tokens_file.empty() ? "false" : "true",
          config.reflection ? "true" : "false"));
  if (!config.jobs.store.empty()) {
    logger.LogAlways(
        Level::kInfo,
        absl::StrFormat(
            R"("event":"jobs","store":"%s","max_jobs_running":%d,"job_lease":"%s")",
            JsonEscape(RedactedUrl(config.jobs.store)),
            config.jobs.max_jobs_running,
            absl::FormatDuration(config.jobs.lease)));
  }
  if (!config.auth_tokens_file.empty() && config.tls.cert.empty()) {
    logger.LogAlways(
        Level::kWarn,
        R"("event":"tokens_without_tls","message":"--auth_tokens_file without --tls_cert: bearer tokens cross the network in plaintext")");
  }

  // SIGHUP reloads (the tokens file; TLS files reload on their interval)
  // and keeps serving; SIGTERM or SIGINT stop.
  auto reload = [&] {
    logger.LogAlways(Level::kInfo, R"("event":"reload","signal":"SIGHUP")");
    // The outcome is logged by the reload itself.
    (*server)->Reload().IgnoreError();
  };
  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) == 0 &&
         signal_number == SIGHUP) {
    reload();
  }
  if (signal_number == SIGTERM && drain > absl::ZeroDuration()) {
    (*server)->StartDraining();
    logger.LogAlways(
        Level::kInfo,
        absl::StrFormat(
            R"("event":"draining","signal":"SIGTERM","drain_delay":"%s")",
            absl::FormatDuration(drain)));
    // Serve on until the delay ends or another signal cuts it short.
    const absl::Time until = absl::Now() + drain;
    for (absl::Duration left = drain; left > absl::ZeroDuration();
         left = until - absl::Now()) {
      const timespec wait = absl::ToTimespec(left);
      const int got = sigtimedwait(&stop_signals, nullptr, &wait);
      if (got == SIGHUP) {
        reload();
        continue;
      }
      if (got >= 0) break;
      if (errno != EINTR) break;  // EAGAIN: the delay is over
    }
  }
  logger.LogAlways(
      Level::kInfo,
      absl::StrFormat(R"("event":"shutting_down","signal":"%s","grace":"%s")",
                      signal_number == SIGTERM ? "SIGTERM" : "SIGINT",
                      absl::FormatDuration(grace)));
  (*server)->Shutdown(grace);
  logger.LogAlways(Level::kInfo, R"("event":"stopped")");
  return 0;
}
