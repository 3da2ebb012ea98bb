// jobs/webhook: signed webhook deliveries of job events (issue #17 item 5).
//
//   SignWebhook / VerifyWebhookSignature   the X-Fetchd-Signature scheme
//                                          (Stripe's): t=<unix>,v1=<hex
//                                          HMAC-SHA256(secret, "t.body")>
//   WebhookSecrets                         --webhook_secrets_file, by id;
//                                          reloadable (SIGHUP)
//   ValidateWebhook                        Submit's checks of a webhook
//   WebhookEventBody / NewWebhookDelivery  the JSON an event POSTs
//   ProgressDue                            at most one job.progress per
//                                          --webhook_progress_interval
//   WebhookSender                          a thread that claims due
//                                          deliveries from the JobStore and
//                                          POSTs them through the fetch
//                                          engine (so through its address
//                                          guard), retrying with backoff
//
// Delivery state lives in the store (JobStore::ClaimDeliveries and
// RecordDelivery), so a delivery survives a restart and, with PostgreSQL,
// any replica's sender may send it. No gRPC here.
#ifndef FETCHD_SERVER_JOBS_WEBHOOK_H_
#define FETCHD_SERVER_JOBS_WEBHOOK_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/fetch/fetch.h"
#include "server/jobs/store.h"
#include "server/log/log.h"

namespace fetchd::jobs {

// Event types (Delivery::event, the body's "type", X-Fetchd-Event).
inline constexpr absl::string_view kJobCompleted = "job.completed";
inline constexpr absl::string_view kJobFailed = "job.failed";
inline constexpr absl::string_view kJobProgress = "job.progress";

// The request headers of a delivery POST.
inline constexpr absl::string_view kSignatureHeader = "X-Fetchd-Signature";
inline constexpr absl::string_view kEventHeader = "X-Fetchd-Event";
// The delivery's id: the same on every retry of one event, so a receiver
// can drop a duplicate (delivery is at least once).
inline constexpr absl::string_view kDeliveryHeader = "X-Fetchd-Delivery";

// Secret bounds (an inline webhook.secret or a secrets-file secret).
inline constexpr size_t kMinWebhookSecretBytes = 16;
inline constexpr size_t kMaxWebhookSecretBytes = 1024;

// --- signatures -------------------------------------------------------------

// The X-Fetchd-Signature value for `body` sent at `unix_seconds`:
// "t=<unix_seconds>,v1=<64 lower-case hex digits of HMAC-SHA256(secret,
// "<unix_seconds>.<body>")>".
std::string SignWebhook(absl::string_view secret, int64_t unix_seconds,
                        absl::string_view body);

// What a receiver does with a POST: OK when `header` (the X-Fetchd-Signature
// value) carries a t within `tolerance` of `now` and a v1 that is the HMAC
// of "t.body" under `secret` (compared in constant time; several v1 entries
// may be given, one must match; unknown entries are ignored).
// INVALID_ARGUMENT for a malformed header or an empty secret;
// PERMISSION_DENIED for a t outside the tolerance (an old request replayed)
// or no matching v1.
absl::Status VerifyWebhookSignature(
    absl::string_view secret, absl::string_view header, absl::string_view body,
    absl::Time now, absl::Duration tolerance = absl::Minutes(5));

// --- secrets ----------------------------------------------------------------

// The secrets of --webhook_secrets_file, by id. The file has one
//   ID SECRET
// per line (spaces or tabs between; blank lines and lines starting with '#'
// skipped). An id is 1 to 64 characters of [A-Za-z0-9._:@/+-]; a secret is
// 16 to 1024 printable ASCII characters without spaces. A bad line or an
// id on two lines is an error naming the file and line (never the secret).
// Thread-safe: Find may run while Reload swaps the set.
class WebhookSecrets {
 public:
  // No file: no secret ids (Find always misses).
  WebhookSecrets() = default;
  WebhookSecrets(const WebhookSecrets&) = delete;
  WebhookSecrets& operator=(const WebhookSecrets&) = delete;

  // Reads `path`. NOT_FOUND if it cannot be read, INVALID_ARGUMENT
  // "--webhook_secrets_file PATH line N: why" for a bad line.
  static absl::StatusOr<std::unique_ptr<WebhookSecrets>> Load(
      const std::string& path);
  // The same from text; `path` only names the source in errors.
  static absl::StatusOr<std::unique_ptr<WebhookSecrets>> Parse(
      absl::string_view text, const std::string& path);

  // Reads the file again (SIGHUP). On an error the secrets in force stay
  // and the error is returned. OK and nothing done without a file.
  absl::Status Reload() ABSL_LOCKS_EXCLUDED(mu_);

  // The secret of `id`, or nullopt.
  std::optional<std::string> Find(absl::string_view id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  size_t size() const ABSL_LOCKS_EXCLUDED(mu_);
  const std::string& path() const { return path_; }

 private:
  using Map = absl::flat_hash_map<std::string, std::string>;
  static absl::StatusOr<Map> ParseMap(absl::string_view text,
                                      const std::string& path);

  std::string path_;  // empty: no file
  mutable absl::Mutex mu_;
  Map secrets_ ABSL_GUARDED_BY(mu_);
};

// --- Submit
// -------------------------------------------------------------------

// Submit's checks of a job's webhook. An empty config (no url, secret,
// secret_id or progress) is no webhook: OK. Otherwise the url must be http
// or https with a host (fetch::ValidateUrl against `limits`), and exactly
// one of a secret of 16 to 1024 bytes or a secret_id known to `secrets`.
// INVALID_ARGUMENT naming webhook.url, webhook.secret or webhook.secret_id
// and the limit. Where the url points is checked when it is sent (the
// engine's address guard), not here.
absl::Status ValidateWebhook(const WebhookConfig& webhook,
                             const WebhookSecrets& secrets,
                             const fetch::FetchLimits& limits = {});

// --- events
// -------------------------------------------------------------------

// The event a job's terminal state sends: job.completed for SUCCEEDED,
// job.failed for FAILED and CANCELLED (the body's job.state tells which).
absl::string_view TerminalWebhookEvent(State state);

// The JSON body of event `event` about `job`, made at `created`. Field
// names are stable (receivers parse them):
//   {
//     "type": "job.completed" | "job.failed" | "job.progress",
//     "created": <unix seconds the event was made>,
//     "job": {
//       "id": "j_...",
//       "kind": "batch_fetch" | "fetch_pages" | "compute",
//       "state": "queued" | "running" | "succeeded" | "failed" |
//                "cancelled",
//       "idempotency_key": "..." (empty: none),
//       "counts": {"total": n, "done": n, "failed": n, "bytes": n},
//       "created_at", "started_at", "finished_at", "expires_at":
//           RFC 3339 UTC ("2026-12-02T04:30:00.123Z"), or null when not
//           yet set,
//       "error": null, or {"code": <google.rpc.Code number>,
//                          "status": "NOT_FOUND"-style name,
//                          "message": "..."} for a FAILED or CANCELLED job
//     }
//   }
// Text that is not UTF-8 (an error message) has its bad bytes replaced.
std::string WebhookEventBody(absl::string_view event, const Job& job,
                             absl::Time created);

// A pending delivery of `event` about `job`, due at once: what a runner
// hands to JobStore::CommitResults (progress) or Finish (terminal). Null
// when the job has no webhook, or for job.progress when it did not ask for
// progress events. The state and counts in the body are the job's as
// given: pass the job as it will be once the commit is in.
std::optional<Delivery> NewWebhookDelivery(const Job& job,
                                           absl::string_view event,
                                           absl::Time now);

// Whether a job.progress event may be sent now: none sent yet
// (`last_sent` InfinitePast) or at least `interval` since the last one.
bool ProgressDue(absl::Time last_sent, absl::Time now, absl::Duration interval);

// The wait after failed attempt number `attempts` (1 = the first):
// base * 2^(attempts-1), capped at `cap`, with "equal jitter": uniform in
// [d/2, d] for `random01` uniform in [0, 1), so retries of many deliveries
// spread out but none comes back at once.
absl::Duration WebhookBackoff(int attempts, absl::Duration base,
                              absl::Duration cap, double random01);

// --- sending
// ------------------------------------------------------------------

struct WebhookSenderOptions {
  // The name leases are taken under (the replica id; unique per process).
  std::string replica = "fetchd";
  // How often the store is asked for due deliveries (also at Wake, and
  // when a retry of this sender's comes due).
  absl::Duration poll_interval = absl::Seconds(1);
  int batch_size = 32;    // deliveries per ClaimDeliveries
  int max_inflight = 64;  // POSTs at once
  // How long a claimed delivery is this sender's: longer than `timeout`,
  // or another replica could send it again while this one still is.
  absl::Duration lease = absl::Minutes(1);
  absl::Duration timeout = absl::Seconds(10);  // per POST (--webhook_timeout)
  // Attempts per event before it is kFailed (--webhook_max_attempts).
  int max_attempts = 8;
  absl::Duration backoff_base = absl::Seconds(5);
  absl::Duration backoff_cap = absl::Minutes(10);
  // Receiver answers are read up to this many bytes (only a prefix shows in
  // last_error); a 2xx is a delivery whatever its body.
  int64_t max_response_bytes = 64 << 10;
  // The engine's Options::limits: Start refuses options whose POSTs the
  // engine would refuse (e.g. a timeout over --max_timeout).
  fetch::FetchLimits limits;
  // The engine's fair-share identity of webhook POSTs.
  std::string identity = "fetchd-webhooks";
  // For secret_id deliveries (not owned; may be null: no secret ids).
  const WebhookSecrets* secrets = nullptr;
  // The store's clock (claims, signatures, next_attempt_at); null:
  // absl::Now. Tests may shift it.
  std::function<absl::Time()> clock;
  log::Logger* logger = nullptr;  // not owned; may be null
};

// Sends due deliveries from its own thread. Each POST carries the body,
// Content-Type: application/json, X-Fetchd-Event, X-Fetchd-Delivery and
// X-Fetchd-Signature (signed at send time), follows no redirect, and goes
// through `engine` (its address policy: a refused address is a delivery
// error). Outcomes, recorded with JobStore::RecordDelivery:
//   - a 2xx answer: kDelivered;
//   - anything else (another status, a transport error, a timeout, an
//     unknown secret_id): kPending again with next_attempt_at = now +
//     WebhookBackoff, until max_attempts attempts: then kFailed;
//   - an address or host the engine's guard refuses (PERMISSION_DENIED):
//     kFailed at once, since a retry would be refused the same way;
//   last_error says what happened ("HTTP 500: <body prefix>", the
//   transport error).
// A store error is logged; the delivery's lease runs out and it is claimed
// again.
// NOTE: `store` and `engine` must outlive the sender (Shutdown it first).
class WebhookSender {
 public:
  struct Stats {
    int64_t polls = 0;      // ClaimDeliveries calls
    int64_t claimed = 0;    // deliveries taken from the store
    int64_t delivered = 0;  // 2xx
    int64_t retrying = 0;   // attempts that failed and will be retried
    int64_t failed = 0;     // deliveries that ended kFailed
    int64_t released = 0;   // in flight at Shutdown, left pending
    int64_t store_errors = 0;
  };

  // INVALID_ARGUMENT naming the option for a bad value (lease not above
  // timeout, max_attempts < 1, a timeout over limits.max_timeout, ...).
  // Starts the thread.
  static absl::StatusOr<std::unique_ptr<WebhookSender>> Start(
      JobStore* store, fetch::Engine* engine, WebhookSenderOptions options);
  ~WebhookSender();  // Shutdown()
  WebhookSender(const WebhookSender&) = delete;
  WebhookSender& operator=(const WebhookSender&) = delete;

  // Look for due deliveries now (a runner just enqueued one). Thread-safe.
  void Wake() ABSL_LOCKS_EXCLUDED(mu_);

  // Cancels the POSTs in flight (they stay pending, due at once, for the
  // next sender) and joins the thread. Idempotent; thread-safe.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  Stats stats() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // A POST's outcome, handed from the engine's I/O thread.
  struct Outcome {
    uint64_t batch = 0;
    Delivery delivery;
    int http_status = 0;
    absl::Status status;
    std::string body_prefix;
  };
  struct Batch {
    uint64_t id = 0;
    std::shared_ptr<fetch::BatchHandle> handle;
    int remaining = 0;
  };

  WebhookSender(JobStore* store, fetch::Engine* engine,
                WebhookSenderOptions options);
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  absl::Time Now() const;
  // Claims up to `max` deliveries and starts their POSTs; how many were
  // claimed, or the store's error.
  absl::StatusOr<int> ClaimAndSend(int max) ABSL_LOCKS_EXCLUDED(mu_);
  // Records one outcome; a retry's due time (store clock) when it was
  // left pending by this attempt.
  std::optional<absl::Time> Record(Outcome outcome, bool stopping)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Log(log::Level level, const std::string& fields) const;
  bool Ready() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return stopping_ || woken_ || !outcomes_.empty();
  }
  bool HasOutcomes() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return !outcomes_.empty();
  }

  JobStore* const store_;
  fetch::Engine* const engine_;
  const WebhookSenderOptions options_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Outcome> outcomes_ ABSL_GUARDED_BY(mu_);
  Stats stats_ ABSL_GUARDED_BY(mu_);

  // The sender thread's own.
  std::vector<Batch> batches_;
  uint64_t next_batch_ = 1;
  int inflight_ = 0;
  absl::BitGen bitgen_;  // backoff jitter

  absl::Mutex join_mu_;  // one Shutdown joins
  std::thread thread_;
};

}  // namespace fetchd::jobs

#endif  // FETCHD_SERVER_JOBS_WEBHOOK_H_
