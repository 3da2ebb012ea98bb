// JobStore: where jobs, their results, events and webhook deliveries live.
// One interface, two real backends: SQLite (one machine; the default) and
// PostgreSQL (shared by replicas; claims with FOR UPDATE SKIP LOCKED and a
// lease per job). No gRPC here: payloads and results are opaque bytes
// (serialized protos) to the store.
//
// Every method is thread-safe and BLOCKS on the database: call them from
// the jobs threads (runner, store executor, watch poller), never from a
// completion-queue thread or the engine's I/O thread.
#ifndef FETCHD_SERVER_JOBS_STORE_H_
#define FETCHD_SERVER_JOBS_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fetchd::jobs {

// The values are the API's JobState / JobKind numbers (stored as integers).
enum class State {
  kQueued = 1,
  kRunning = 2,
  kSucceeded = 3,
  kFailed = 4,
  kCancelled = 5
};
enum class Kind { kBatchFetch = 1, kFetchPages = 2, kCompute = 3 };

inline bool IsTerminal(State state) {
  return state == State::kSucceeded || state == State::kFailed ||
         state == State::kCancelled;
}

struct Counts {
  int64_t total = 0;   // items (batch), pages so far (walk), 1 (compute)
  int64_t done = 0;    // items with a result, failed ones included
  int64_t failed = 0;  // results with an error
  int64_t bytes = 0;   // body bytes fetched
};

// The webhook a job was submitted with.
struct WebhookConfig {
  std::string url;        // empty: no webhook
  std::string secret;     // inline secret, or
  std::string secret_id;  // a name in --webhook_secrets_file
  bool progress = false;  // also job.progress events
};

// Values are the API's WebhookDeliveryState numbers.
enum class DeliveryState {
  kNone = 0,
  kPending = 1,
  kDelivered = 2,
  kFailed = 3
};

// One webhook POST to make (an event of a job), and how it went.
struct Delivery {
  int64_t id = 0;  // store-assigned
  std::string job_id;
  std::string event;  // "job.completed", "job.failed", "job.progress"
  std::string body;   // the JSON to POST (signed at send time)
  DeliveryState state = DeliveryState::kPending;
  int attempts = 0;
  std::string last_error;
  absl::Time next_attempt_at = absl::InfinitePast();
  WebhookConfig webhook;  // filled by ClaimDeliveries
};

struct Job {
  std::string id;  // random, URL-safe; unique in the store
  std::string identity;
  std::string idempotency_key;  // empty: none
  Kind kind = Kind::kBatchFetch;
  // The serialized SubmitRequest. Filled by Claim only (the runner needs
  // it); every other method leaves it empty, since a big batch's request
  // is megabytes and Get, List and Watch are frequent.
  std::string request;
  std::string request_hash;  // hex SHA-256 of `request` (idempotency)
  State state = State::kQueued;
  Counts counts;
  // A FAILED or CANCELLED job: why (absl::StatusCode as int, and text).
  int error_code = 0;
  std::string error_message;
  absl::Time created_at = absl::InfinitePast();
  absl::Time started_at = absl::InfinitePast();   // InfinitePast: not yet
  absl::Time finished_at = absl::InfinitePast();  // InfinitePast: not yet
  absl::Time expires_at = absl::InfinitePast();
  absl::Duration ttl;  // kept this long after it ends
  int attempts = 0;    // claims so far
  std::string owner;   // the replica holding the lease; empty: none
  absl::Time lease_until = absl::InfinitePast();
  // A walk's resume token after its last committed page; empty: from the
  // start.
  std::string checkpoint;
  int64_t seq = 0;  // the latest event's sequence number
  WebhookConfig webhook;
  // The latest delivery of this job's webhook (state kNone: none yet).
  Delivery last_delivery;
};

// What Submit stores.
struct NewJob {
  std::string id;  // made by the caller (NewJobId)
  std::string identity;
  std::string idempotency_key;
  Kind kind = Kind::kBatchFetch;
  std::string request;
  std::string request_hash;
  int64_t total = 0;  // counts.total at submit
  absl::Duration ttl;
  WebhookConfig webhook;
  absl::Time now;
};

struct CreateLimits {
  // QUEUED or RUNNING jobs one identity may have (--max_jobs_queued);
  // 0: no cap.
  int max_jobs_queued = 0;
  // The store's size (StoreBytes) past which Create refuses
  // (--max_store_bytes); 0: no cap.
  int64_t max_store_bytes = 0;
};

struct Created {
  Job job;
  bool created = false;  // false: the idempotency key's existing job
};

// One event: the job's state and counts as of `seq` (Watch).
struct Event {
  int64_t seq = 0;
  State state = State::kQueued;
  Counts counts;
  absl::Time time;
  int error_code = 0;
  std::string error_message;
};

// One item's result.
struct ResultRow {
  int64_t index = 0;
  bool failed = false;
  int64_t body_bytes = 0;  // added to counts.bytes
  std::string data;        // a serialized JobResult
};

// What a runner commits in one transaction.
struct Commit {
  std::string job_id;
  std::string replica;
  std::vector<ResultRow> rows;
  // Walks: counts.total becomes this when set (pages known so far).
  std::optional<int64_t> total;
  std::string checkpoint;            // non-empty: replaces Job::checkpoint
  std::optional<Delivery> delivery;  // a job.progress webhook to enqueue
  absl::Time now;
};

struct JobPage {
  std::vector<Job> jobs;
  std::string next_page_token;  // empty: last page
};

struct StoreOptions {
  // How long a statement waits for a lock held by another connection.
  absl::Duration busy_timeout = absl::Seconds(10);
  // PostgreSQL: connections kept open (statements wait for a free one).
  int pool_size = 4;
};

class JobStore {
 public:
  virtual ~JobStore() = default;

  virtual absl::string_view backend() const = 0;  // "sqlite", "postgres"

  // Stores `job` QUEUED with its first event (seq 1), or, when
  // (identity, idempotency_key) exists, returns that job with created =
  // false if its request_hash matches, else ALREADY_EXISTS naming the key.
  // RESOURCE_EXHAUSTED naming the flag past a limit. All or nothing; two
  // concurrent Creates with one key (even on two replicas) make one job.
  virtual absl::StatusOr<Created> Create(const NewJob& job,
                                         const CreateLimits& limits) = 0;

  // NOT_FOUND ("job <id> not found") for an unknown id, another identity's
  // job, or a terminal job past expires_at.
  virtual absl::StatusOr<Job> Get(absl::string_view identity,
                                  absl::string_view id, absl::Time now) = 0;

  // This identity's jobs not expired, newest first (created_at, then id);
  // `state` filters when set. `page_token` is an earlier next_page_token
  // (opaque to callers; INVALID_ARGUMENT naming page_token if malformed).
  virtual absl::StatusOr<JobPage> List(absl::string_view identity,
                                       std::optional<State> state,
                                       absl::string_view page_token,
                                       int page_size, absl::Time now) = 0;

  // QUEUED or RUNNING -> CANCELLED (error CANCELLED "cancelled by the
  // caller", finished_at, expires_at = now + ttl, an event); a terminal
  // job is returned unchanged. NOT_FOUND as Get.
  virtual absl::StatusOr<Job> Cancel(absl::string_view identity,
                                     absl::string_view id, absl::Time now) = 0;

  // Removes the job, its results, events and deliveries. NOT_FOUND as Get.
  virtual absl::Status Delete(absl::string_view identity, absl::string_view id,
                              absl::Time now) = 0;

  // --- runners -------------------------------------------------------------

  // Takes up to `max_jobs` jobs for `replica`: QUEUED ones, and RUNNING
  // ones whose lease ended (their replica died), oldest first. Each becomes
  // RUNNING with owner = replica, lease_until = now + lease, attempts + 1,
  // started_at set the first time, and an event. Never gives one job to two
  // replicas (PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED).
  virtual absl::StatusOr<std::vector<Job>> Claim(absl::string_view replica,
                                                 int max_jobs,
                                                 absl::Duration lease,
                                                 absl::Time now) = 0;

  // Extends the leases `replica` holds on `ids` to now + lease. Returns the
  // ids it must stop: cancelled, deleted, or taken by another replica.
  virtual absl::StatusOr<std::vector<std::string>> Renew(
      absl::string_view replica, const std::vector<std::string>& ids,
      absl::Duration lease, absl::Time now) = 0;

  // RUNNING jobs of `ids` that `replica` holds go back to QUEUED with no
  // owner (a graceful stop: another runner takes them at once instead of
  // after the lease). Others are left alone.
  virtual absl::Status Release(absl::string_view replica,
                               const std::vector<std::string>& ids,
                               absl::Time now) = 0;

  // One transaction: the rows (an index that already has a result keeps
  // the first: exactly one result per item), the counts they add,
  // `total`/`checkpoint` when set, one event, and the delivery if any.
  // FAILED_PRECONDITION ("lease lost") when `replica` does not hold the
  // job's lease or the job is terminal: nothing is written.
  virtual absl::Status CommitResults(const Commit& commit) = 0;

  // The indexes that have a result, ascending (a resumed batch runs the
  // others).
  virtual absl::StatusOr<std::vector<int64_t>> ResultIndexes(
      absl::string_view job_id) = 0;

  // RUNNING -> `state` (terminal) with `error` (OK for SUCCEEDED),
  // finished_at = now, expires_at = now + ttl, owner cleared, a final
  // event, and the delivery if any, in one transaction. FAILED_PRECONDITION
  // when `replica` does not hold the lease (a cancelled job stays
  // CANCELLED).
  virtual absl::Status Finish(absl::string_view job_id,
                              absl::string_view replica, State state,
                              const absl::Status& error,
                              std::optional<Delivery> delivery,
                              absl::Time now) = 0;

  // --- readers -------------------------------------------------------------

  // Results with index > after_index in index order: at most max_rows, and
  // no more than max_bytes of data (but always one row if any exists).
  // NOT_FOUND as Get.
  virtual absl::StatusOr<std::vector<ResultRow>> Results(
      absl::string_view identity, absl::string_view id, int64_t after_index,
      int max_rows, int64_t max_bytes, absl::Time now) = 0;

  // Events with seq > after_seq, in order, at most max_events. NOT_FOUND
  // as Get.
  virtual absl::StatusOr<std::vector<Event>> Events(absl::string_view identity,
                                                    absl::string_view id,
                                                    int64_t after_seq,
                                                    int max_events,
                                                    absl::Time now) = 0;

  // --- webhooks ------------------------------------------------------------

  // Up to `max` PENDING deliveries due at `now` (next_attempt_at <= now),
  // oldest first, each leased to `replica` for `lease` (no other replica
  // sends it meanwhile), with their job's WebhookConfig.
  virtual absl::StatusOr<std::vector<Delivery>> ClaimDeliveries(
      absl::string_view replica, int max, absl::Duration lease,
      absl::Time now) = 0;

  // Records an attempt: kDelivered, kPending with next_attempt_at (a
  // retry), or kFailed (retries used up); attempts and last_error as given.
  virtual absl::Status RecordDelivery(const Delivery& delivery) = 0;

  // --- upkeep --------------------------------------------------------------

  // Deletes up to `max_jobs` terminal jobs past expires_at, with their
  // results, events and deliveries, in one transaction; returns how many.
  virtual absl::StatusOr<int> Sweep(absl::Time now, int max_jobs) = 0;

  // The bytes the store holds (SQLite: the file's used pages; PostgreSQL:
  // the tables' total relation size).
  virtual absl::StatusOr<int64_t> StoreBytes() = 0;

  // OK when the database answers (health); UNAVAILABLE otherwise.
  virtual absl::Status Ping() = 0;
};

// Opens "sqlite:PATH" or "postgres://..." / "postgresql://..." and applies
// the schema migrations this build knows (versioned; a store newer than
// the build is refused). INVALID_ARGUMENT naming --job_store for an unknown
// scheme; for a file that is not a database (corrupt), FAILED_PRECONDITION
// naming the file and saying to move it aside; UNAVAILABLE when PostgreSQL
// cannot be reached.
absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(
    absl::string_view spec, const StoreOptions& options = {});

// The backends (OpenJobStore picks one).
absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteStore(
    const std::string& path, const StoreOptions& options);
absl::StatusOr<std::unique_ptr<JobStore>> OpenPostgresStore(
    const std::string& conninfo, const StoreOptions& options);

// A new job id: 128 random bits (OpenSSL CSPRNG), "j_" + 26 base32 chars.
std::string NewJobId();

}  // namespace fetchd::jobs

#endif  // FETCHD_SERVER_JOBS_STORE_H_
