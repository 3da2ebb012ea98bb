// The PostgreSQL JobStore (Debian's libpq): shared by replicas. Claims use
// SELECT ... FOR UPDATE SKIP LOCKED with a lease per job; idempotency is a
// partial unique index; results go in as arrays (unnest) in one statement.
//
// Times are bigint microseconds since the epoch, always the caller's `now`
// (never the database's clock), NULL for absl::InfinitePast. Every
// parameter and result travels in binary format, so bytea needs no
// escaping.
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/jobs/store.h"

namespace fetchd::jobs {
namespace {

#define PG_RETURN_IF_ERROR(expr)              \
  do {                                        \
    if (absl::Status s_ = (expr); !s_.ok()) { \
      return s_;                              \
    }                                         \
  } while (0)

#define PG_CONCAT_INNER(a, b) a##b
#define PG_CONCAT(a, b) PG_CONCAT_INNER(a, b)
#define PG_ASSIGN_OR_RETURN(lhs, expr) \
  PG_ASSIGN_OR_RETURN_IMPL(PG_CONCAT(statusor_, __LINE__), lhs, expr)
#define PG_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = *std::move(tmp)

// The schema, one migration per version; each runs in its own transaction
// under an advisory lock. Never edit a released migration: add one.
struct Migration {
  int version;
  const char* description;
  const char* sql;
};

constexpr Migration kMigrations[] = {
    {1, "jobs, results, events, deliveries",
     R"sql(
CREATE TABLE jobs (
  id text PRIMARY KEY,
  identity text NOT NULL,
  idempotency_key text NOT NULL DEFAULT '',
  kind integer NOT NULL,
  request bytea NOT NULL,
  request_hash text NOT NULL,
  state integer NOT NULL,
  total bigint NOT NULL DEFAULT 0,
  done bigint NOT NULL DEFAULT 0,
  failed bigint NOT NULL DEFAULT 0,
  bytes bigint NOT NULL DEFAULT 0,
  error_code integer NOT NULL DEFAULT 0,
  error_message text NOT NULL DEFAULT '',
  created_at bigint NOT NULL,
  started_at bigint,
  finished_at bigint,
  expires_at bigint,
  ttl_us bigint NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  owner text NOT NULL DEFAULT '',
  lease_until bigint,
  checkpoint bytea NOT NULL DEFAULT '',
  seq bigint NOT NULL DEFAULT 0,
  webhook_url text NOT NULL DEFAULT '',
  webhook_secret text NOT NULL DEFAULT '',
  webhook_secret_id text NOT NULL DEFAULT '',
  webhook_progress boolean NOT NULL DEFAULT false
);
-- One job per (identity, key): what makes two replicas' Creates one job.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (identity, idempotency_key)
  WHERE idempotency_key <> '';
CREATE INDEX jobs_runnable ON jobs (created_at, id) WHERE state IN (1, 2);
CREATE INDEX jobs_by_identity ON jobs (identity, created_at DESC, id DESC);
CREATE INDEX jobs_expiry ON jobs (expires_at) WHERE state IN (3, 4, 5);
-- No foreign keys: every writer locks the job row first, and the checks
-- would cost a lookup per result row.
CREATE TABLE results (
  job_id text NOT NULL,
  idx bigint NOT NULL,
  failed boolean NOT NULL,
  body_bytes bigint NOT NULL,
  data bytea NOT NULL,
  PRIMARY KEY (job_id, idx)
);
CREATE TABLE events (
  job_id text NOT NULL,
  seq bigint NOT NULL,
  state integer NOT NULL,
  total bigint NOT NULL,
  done bigint NOT NULL,
  failed bigint NOT NULL,
  bytes bigint NOT NULL,
  at bigint NOT NULL,
  error_code integer NOT NULL,
  error_message text NOT NULL,
  PRIMARY KEY (job_id, seq)
);
CREATE TABLE deliveries (
  id bigserial PRIMARY KEY,
  job_id text NOT NULL,
  event text NOT NULL,
  body bytea NOT NULL,
  state integer NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  last_error text NOT NULL DEFAULT '',
  next_attempt_at bigint,
  lease_owner text NOT NULL DEFAULT '',
  lease_until bigint
);
CREATE INDEX deliveries_by_job ON deliveries (job_id, id);
CREATE INDEX deliveries_pending ON deliveries (id) WHERE state = 1;
)sql"},
};
constexpr int kSchemaVersion = 1;
// pg_advisory_xact_lock key for migrations (any constant; "fetchd" in hex).
constexpr char kMigrationLock[] = "SELECT pg_advisory_xact_lock(6613984109668)";

// --- libpq RAII and binary encoding ----------------------------------------

struct ConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;
struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

// One pooled connection and the statements prepared on it (a statement is
// parsed and planned once per connection, not per call).
struct Session {
  Conn conn;  // nullptr: not connected yet
  absl::flat_hash_map<std::string, std::string> prepared;  // sql -> name
  PGconn* get() const { return conn.get(); }
};

// Type OIDs (pg_type.h is a server header).
constexpr Oid kBoolOid = 16, kByteaOid = 17, kInt8Oid = 20, kInt2Oid = 21,
              kInt4Oid = 23, kTextOid = 25, kBoolArrayOid = 1000,
              kByteaArrayOid = 1001, kTextArrayOid = 1009, kInt8ArrayOid = 1016;

void PutBig32(std::string* out, uint32_t v) {
  v = htonl(v);
  out->append(reinterpret_cast<const char*>(&v), 4);
}
void PutBig64(std::string* out, uint64_t v) {
  PutBig32(out, static_cast<uint32_t>(v >> 32));
  PutBig32(out, static_cast<uint32_t>(v));
}

// A one-dimensional array in PostgreSQL's binary format.
template <typename T, typename Encode>
std::string BinaryArray(Oid element, const std::vector<T>& items,
                        Encode encode) {
  std::string out;
  PutBig32(&out, items.empty() ? 0 : 1);  // dimensions
  PutBig32(&out, 0);                      // no NULLs
  PutBig32(&out, element);
  if (items.empty()) return out;
  PutBig32(&out, items.size());
  PutBig32(&out, 1);  // lower bound
  for (const T& item : items) encode(item, &out);
  return out;
}

// Statement parameters, all in binary format with explicit types.
class Params {
 public:
  Params& Int(int64_t v) {
    std::string b;
    PutBig64(&b, static_cast<uint64_t>(v));
    return Add(kInt8Oid, std::move(b));
  }
  Params& OptInt(std::optional<int64_t> v) {
    return v.has_value() ? Int(*v) : Null(kInt8Oid);
  }
  Params& Text(absl::string_view v) { return Add(kTextOid, std::string(v)); }
  Params& Bytes(absl::string_view v) { return Add(kByteaOid, std::string(v)); }
  Params& Bool(bool v) { return Add(kBoolOid, std::string(1, v ? 1 : 0)); }
  // NULL for InfinitePast ("not yet").
  Params& Time(absl::Time t) {
    return t == absl::InfinitePast() ? Null(kInt8Oid)
                                     : Int(absl::ToUnixMicros(t));
  }
  Params& Null(Oid type) {
    types_.push_back(type);
    values_.emplace_back();
    nulls_.push_back(true);
    return *this;
  }
  Params& TextArray(const std::vector<std::string>& items) {
    return Add(kTextArrayOid,
               BinaryArray(kTextOid, items,
                           [](const std::string& s, std::string* out) {
                             PutBig32(out, s.size());
                             out->append(s);
                           }));
  }
  Params& Raw(Oid type, std::string value) {
    return Add(type, std::move(value));
  }

  int size() const { return static_cast<int>(types_.size()); }
  const Oid* types() const { return types_.data(); }
  // Pointers into this object: valid while it lives unchanged.
  void Views(std::vector<const char*>* values, std::vector<int>* lengths,
             std::vector<int>* formats) const {
    for (size_t i = 0; i < values_.size(); ++i) {
      values->push_back(nulls_[i] ? nullptr : values_[i].data());
      lengths->push_back(static_cast<int>(values_[i].size()));
      formats->push_back(1);
    }
  }

 private:
  Params& Add(Oid type, std::string value) {
    types_.push_back(type);
    values_.push_back(std::move(value));
    nulls_.push_back(false);
    return *this;
  }
  std::vector<Oid> types_;
  std::vector<std::string> values_;
  std::vector<bool> nulls_;
};

uint32_t Big32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return ntohl(v);
}

// Binary-format result readers. NULL reads as 0 / "" / InfinitePast.
int64_t GetInt(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return 0;
  const char* p = PQgetvalue(r, row, col);
  switch (PQftype(r, col)) {
    case kInt8Oid:
      return static_cast<int64_t>((static_cast<uint64_t>(Big32(p)) << 32) |
                                  Big32(p + 4));
    case kInt4Oid:
      return static_cast<int32_t>(Big32(p));
    case kInt2Oid: {
      uint16_t v;
      std::memcpy(&v, p, 2);
      return static_cast<int16_t>(ntohs(v));
    }
    case kBoolOid:
      return p[0] != 0;
    default:
      return 0;  // a schema/code mismatch; the tests read every column
  }
}
bool GetBool(const PGresult* r, int row, int col) {
  return GetInt(r, row, col) != 0;
}
std::string GetString(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return "";
  return std::string(PQgetvalue(r, row, col), PQgetlength(r, row, col));
}
absl::Time GetTime(const PGresult* r, int row, int col) {
  if (PQgetisnull(r, row, col)) return absl::InfinitePast();
  return absl::FromUnixMicros(GetInt(r, row, col));
}

int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }
// A ttl or lease in microseconds, capped so `now + it` stays in a bigint.
int64_t DurationMicros(absl::Duration d) {
  return std::clamp<int64_t>(absl::ToInt64Microseconds(d), 0,
                             int64_t{1} << 55);  // ~1,100 years
}

std::string ConnectionError(PGconn* conn) {
  std::string message = conn ? PQerrorMessage(conn) : "out of memory";
  while (!message.empty() &&
         (message.back() == '\n' || message.back() == ' ')) {
    message.pop_back();
  }
  return message;
}

// Maps a failed statement to a status: a lost connection, a shutdown or a
// server out of resources is UNAVAILABLE (the caller may retry later).
absl::Status StatementError(PGconn* conn, const PGresult* result,
                            absl::string_view what) {
  const char* state =
      result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  const std::string sqlstate = state ? state : "";
  std::string message = result ? PQresultErrorMessage(result) : "";
  if (message.empty()) message = ConnectionError(conn);
  while (!message.empty() && message.back() == '\n') message.pop_back();
  const std::string text =
      absl::StrCat("postgres job store: ", what, ": ", message);
  if (PQstatus(conn) != CONNECTION_OK || absl::StartsWith(sqlstate, "08") ||
      absl::StartsWith(sqlstate, "57P") || absl::StartsWith(sqlstate, "53")) {
    return absl::UnavailableError(text);
  }
  if (sqlstate == "55P03" || sqlstate == "57014") {  // lock / statement timeout
    return absl::DeadlineExceededError(text);
  }
  if (sqlstate == "40001" || sqlstate == "40P01") {  // serialization, deadlock
    return absl::AbortedError(text);
  }
  return absl::InternalError(text);
}

// Runs one statement (binary in, binary out), prepared on first use.
absl::StatusOr<Result> Exec(Session* session, absl::string_view what,
                            const std::string& sql,
                            const Params& params = Params()) {
  PGconn* conn = session->get();
  auto it = session->prepared.find(sql);
  if (it == session->prepared.end()) {
    const std::string name = absl::StrCat("fetchd_", session->prepared.size());
    Result prepared(PQprepare(conn, name.c_str(), sql.c_str(), params.size(),
                              params.types()));
    if (prepared == nullptr ||
        PQresultStatus(prepared.get()) != PGRES_COMMAND_OK) {
      return StatementError(conn, prepared.get(), what);
    }
    it = session->prepared.emplace(sql, name).first;
  }
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  params.Views(&values, &lengths, &formats);
  Result result(PQexecPrepared(conn, it->second.c_str(), params.size(),
                               values.data(), lengths.data(), formats.data(),
                               /*resultFormat=*/1));
  const ExecStatusType status =
      result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    return StatementError(conn, result.get(), what);
  }
  return result;
}

// Plain SQL with no parameters (BEGIN, COMMIT, the migrations).
absl::Status ExecRaw(PGconn* conn, absl::string_view what, const char* sql) {
  Result result(PQexec(conn, sql));
  const ExecStatusType status =
      result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
    return StatementError(conn, result.get(), what);
  }
  return absl::OkStatus();
}
absl::Status ExecSimple(Session* session, absl::string_view what,
                        const std::string& sql) {
  return ExecRaw(session->get(), what, sql.c_str());
}

// --- the connection pool ---------------------------------------------------

class Pool {
 public:
  // One connection, held by one operation; back to the pool when it ends
  // (rolled back first if a transaction was left open by an error).
  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Session> session)
        : pool_(pool), session_(std::move(session)) {}
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)),
          session_(std::move(other.session_)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (pool_ != nullptr) pool_->Return(std::move(session_));
    }
    Session* get() const { return session_.get(); }

   private:
    Pool* pool_;
    std::unique_ptr<Session> session_;
  };

  Pool(std::vector<std::string> keywords, std::vector<std::string> values,
       int size, absl::Duration wait, absl::Duration lock_timeout)
      : keywords_(std::move(keywords)),
        values_(std::move(values)),
        wait_(wait),
        lock_timeout_(lock_timeout) {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < size; ++i) {
      idle_.push_back(std::make_unique<Session>());  // connects on first use
    }
  }

  // A connection that answers: a dead one (the server restarted or went
  // away) is reset first. UNAVAILABLE when the server cannot be reached
  // (bounded by connect_timeout) or no connection frees up in time.
  absl::StatusOr<Lease> Acquire() ABSL_LOCKS_EXCLUDED(mu_) {
    std::unique_ptr<Session> session;
    {
      absl::MutexLock lock(&mu_);
      if (!mu_.AwaitWithTimeout(absl::Condition(this, &Pool::HasIdle), wait_)) {
        return absl::UnavailableError(absl::StrCat(
            "postgres job store: no free connection in ",
            absl::FormatDuration(wait_), " (", "pool_size connections busy)"));
      }
      session = std::move(idle_.back());
      idle_.pop_back();
    }
    absl::Status ready = Ready(*session);
    Lease lease(this, std::move(session));  // back to the pool, even if dead
    if (!ready.ok()) return ready;
    return lease;
  }

 private:
  bool HasIdle() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !idle_.empty();
  }

  void Return(std::unique_ptr<Session> session) ABSL_LOCKS_EXCLUDED(mu_) {
    PGconn* conn = session->get();
    if (conn != nullptr && PQstatus(conn) == CONNECTION_OK &&
        PQtransactionStatus(conn) != PQTRANS_IDLE) {
      // An error path left a transaction open: nothing of it may commit.
      Result rollback(PQexec(conn, "ROLLBACK"));
    }
    absl::MutexLock lock(&mu_);
    idle_.push_back(std::move(session));
  }

  absl::Status Ready(Session& session) {
    Conn& conn = session.conn;
    if (conn == nullptr) {
      std::vector<const char*> keys, values;
      for (size_t i = 0; i < keywords_.size(); ++i) {
        keys.push_back(keywords_[i].c_str());
        values.push_back(values_[i].c_str());
      }
      keys.push_back(nullptr);
      values.push_back(nullptr);
      conn.reset(PQconnectdbParams(keys.data(), values.data(), 0));
      if (conn == nullptr || PQstatus(conn.get()) != CONNECTION_OK) {
        absl::Status error = absl::UnavailableError(
            absl::StrCat("postgres job store: cannot connect: ",
                         ConnectionError(conn.get())));
        conn.reset();
        return error;
      }
      // Notices (and the goodbye of a server shutting down) are not ours
      // to print on stderr; errors reach callers as statuses.
      PQsetNoticeProcessor(
          conn.get(), [](void*, const char*) {}, nullptr);
      session.prepared.clear();
      return Setup(conn.get());
    }
    if (PQstatus(conn.get()) == CONNECTION_OK) {
      // An idle connection whose server shut down or restarted has an EOF
      // (or the server's goodbye) waiting: read it, so the status says BAD.
      pollfd poller = {PQsocket(conn.get()), POLLIN, 0};
      if (poll(&poller, 1, 0) > 0) {
        PQconsumeInput(conn.get());
        while (PGnotify* notify = PQnotifies(conn.get())) PQfreemem(notify);
      }
    }
    if (PQstatus(conn.get()) != CONNECTION_OK) {
      PQreset(conn.get());       // bounded by connect_timeout
      session.prepared.clear();  // they died with the old connection
      if (PQstatus(conn.get()) != CONNECTION_OK) {
        return absl::UnavailableError(
            absl::StrCat("postgres job store: cannot reconnect: ",
                         ConnectionError(conn.get())));
      }
      return Setup(conn.get());
    }
    return absl::OkStatus();
  }

  // Session settings, again after every (re)connect.
  absl::Status Setup(PGconn* conn) {
    // StoreOptions.busy_timeout: how long a statement waits for a row lock.
    const std::string sql = absl::StrCat(
        "SET lock_timeout = ",
        std::max<int64_t>(1, absl::ToInt64Milliseconds(lock_timeout_)));
    return ExecRaw(conn, "session setup", sql.c_str());
  }

  const std::vector<std::string> keywords_;
  const std::vector<std::string> values_;
  const absl::Duration wait_;
  const absl::Duration lock_timeout_;
  absl::Mutex mu_;
  // Idle connections; nullptr: a slot not connected yet.
  std::vector<std::unique_ptr<Session>> idle_ ABSL_GUARDED_BY(mu_);
};

// --- rows ------------------------------------------------------------------

// The job columns every job query returns, then its latest delivery's (the
// job table aliased j, the delivery d).
// Job::request can be megabytes (a 100,000-URL batch): only Claim, whose
// runner needs it, reads it; every other query reads an empty bytea.
#define FETCHD_JOB_COLUMNS(request)                                       \
  "j.id, j.identity, j.idempotency_key, j.kind, " request                 \
  ", j.request_hash, j.state, j.total, j.done, j.failed, j.bytes,"        \
  " j.error_code, j.error_message, j.created_at, j.started_at,"           \
  " j.finished_at, j.expires_at, j.ttl_us, j.attempts, j.owner,"          \
  " j.lease_until, j.checkpoint, j.seq, j.webhook_url, j.webhook_secret," \
  " j.webhook_secret_id, j.webhook_progress, d.id, d.event, d.body,"      \
  " d.state, d.attempts, d.last_error, d.next_attempt_at"
constexpr char kJobColumnsWithRequest[] = FETCHD_JOB_COLUMNS("j.request");
constexpr char kJobColumns[] = FETCHD_JOB_COLUMNS("''::bytea AS request");
#undef FETCHD_JOB_COLUMNS
constexpr char kLatestDelivery[] =
    " LEFT JOIN LATERAL (SELECT * FROM deliveries x WHERE x.job_id = j.id"
    " ORDER BY x.id DESC LIMIT 1) d ON true";
// Visible to readers: not a terminal job past expires_at ($now bound).
#define PG_NOT_EXPIRED(now) \
  " NOT (j.state IN (3, 4, 5) AND j.expires_at < " now ")"
// After `UPDATE jobs ... RETURNING *` as u: the event of the new state.
constexpr char kInsertEvent[] =
    "INSERT INTO events (job_id, seq, state, total, done, failed, bytes, at,"
    " error_code, error_message) SELECT id, seq, state, total, done, failed,"
    " bytes, $1, error_code, error_message FROM u";

// After u (the job's row, updated): the delivery in $11..$17, if $11.
constexpr char kInsertDelivery[] =
    "d AS (INSERT INTO deliveries (job_id, event, body, state, attempts,"
    " last_error, next_attempt_at) SELECT id, $12, $13, $14, $15, $16, $17"
    " FROM u WHERE $11)";

// Parameters $11..$17 of kInsertDelivery.
void AddDelivery(const std::optional<Delivery>& delivery, Params* p) {
  const Delivery none;
  const Delivery& d = delivery.has_value() ? *delivery : none;
  p->Bool(delivery.has_value())
      .Text(d.event)
      .Bytes(d.body)
      .Int(static_cast<int>(d.state))
      .Int(d.attempts)
      .Text(d.last_error)
      .Time(d.next_attempt_at);
}

Job ReadJob(const PGresult* r, int row) {
  Job job;
  int c = 0;
  job.id = GetString(r, row, c++);
  job.identity = GetString(r, row, c++);
  job.idempotency_key = GetString(r, row, c++);
  job.kind = static_cast<Kind>(GetInt(r, row, c++));
  job.request = GetString(r, row, c++);
  job.request_hash = GetString(r, row, c++);
  job.state = static_cast<State>(GetInt(r, row, c++));
  job.counts.total = GetInt(r, row, c++);
  job.counts.done = GetInt(r, row, c++);
  job.counts.failed = GetInt(r, row, c++);
  job.counts.bytes = GetInt(r, row, c++);
  job.error_code = static_cast<int>(GetInt(r, row, c++));
  job.error_message = GetString(r, row, c++);
  job.created_at = GetTime(r, row, c++);
  job.started_at = GetTime(r, row, c++);
  job.finished_at = GetTime(r, row, c++);
  job.expires_at = GetTime(r, row, c++);
  job.ttl = absl::Microseconds(GetInt(r, row, c++));
  job.attempts = static_cast<int>(GetInt(r, row, c++));
  job.owner = GetString(r, row, c++);
  job.lease_until = GetTime(r, row, c++);
  job.checkpoint = GetString(r, row, c++);
  job.seq = GetInt(r, row, c++);
  job.webhook.url = GetString(r, row, c++);
  job.webhook.secret = GetString(r, row, c++);
  job.webhook.secret_id = GetString(r, row, c++);
  job.webhook.progress = GetBool(r, row, c++);
  if (!PQgetisnull(r, row, c)) {
    Delivery& d = job.last_delivery;
    d.id = GetInt(r, row, c++);
    d.job_id = job.id;
    d.event = GetString(r, row, c++);
    d.body = GetString(r, row, c++);
    d.state = static_cast<DeliveryState>(GetInt(r, row, c++));
    d.attempts = static_cast<int>(GetInt(r, row, c++));
    d.last_error = GetString(r, row, c++);
    d.next_attempt_at = GetTime(r, row, c++);
    d.webhook = job.webhook;
  } else {
    job.last_delivery.state = DeliveryState::kNone;
  }
  return job;
}

absl::Status NotFound(absl::string_view id) {
  return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
}

absl::Status LeaseLost(absl::string_view id, absl::string_view replica) {
  return absl::FailedPreconditionError(
      absl::StrCat("job ", id, ": lease lost (replica ", replica,
                   " does not hold it, or the job ended)"));
}

// --- the store -------------------------------------------------------------

class PostgresStore final : public JobStore {
 public:
  PostgresStore(std::unique_ptr<Pool> pool, std::unique_ptr<Pool> ping_pool)
      : pool_(std::move(pool)), ping_pool_(std::move(ping_pool)) {}

  absl::string_view backend() const override { return "postgres"; }

  absl::Status Migrate() {
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    Session* conn = lease.get();
    for (int step = 0;; ++step) {
      PG_RETURN_IF_ERROR(ExecSimple(conn, "migrate", "BEGIN"));
      // Replicas starting at once take turns; the loser sees the
      // winner's version and skips.
      PG_RETURN_IF_ERROR(ExecSimple(conn, "migration lock", kMigrationLock));
      PG_RETURN_IF_ERROR(
          ExecSimple(conn, "create schema_migrations",
                     "CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " version integer PRIMARY KEY, description text NOT NULL,"
                     " applied_at timestamptz NOT NULL DEFAULT now())"));
      PG_ASSIGN_OR_RETURN(
          Result current,
          Exec(conn, "read schema version",
               "SELECT COALESCE(max(version), 0) FROM schema_migrations"));
      const int64_t version = GetInt(current.get(), 0, 0);
      if (version > kSchemaVersion) {
        return absl::FailedPreconditionError(absl::StrCat(
            "--job_store: the PostgreSQL database's job schema is version ",
            version, ", newer than this build's version ", kSchemaVersion,
            ": run a fetchd at least as new as the one that migrated it"));
      }
      const Migration* next = nullptr;
      for (const Migration& m : kMigrations) {
        if (m.version == version + 1) next = &m;
      }
      if (next == nullptr) return ExecSimple(conn, "migrate", "COMMIT");
      PG_RETURN_IF_ERROR(ExecSimple(
          conn, absl::StrCat("migration ", next->version), next->sql));
      Params p;
      p.Int(next->version).Text(next->description);
      PG_RETURN_IF_ERROR(Exec(conn, "record migration",
                              "INSERT INTO schema_migrations (version,"
                              " description) VALUES ($1, $2)",
                              p)
                             .status());
      PG_RETURN_IF_ERROR(ExecSimple(conn, "migrate", "COMMIT"));
    }
  }

  absl::StatusOr<Created> Create(const NewJob& job,
                                 const CreateLimits& limits) override {
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    Session* conn = lease.get();
    PG_RETURN_IF_ERROR(ExecSimple(conn, "create", "BEGIN"));
    // One identity's Creates take turns (on every replica): the queued
    // count and the key lookup below are then exact.
    {
      Params p;
      p.Text(job.identity);
      PG_RETURN_IF_ERROR(Exec(conn, "create: identity lock",
                              "SELECT pg_advisory_xact_lock(hashtext($1))", p)
                             .status());
    }
    if (!job.idempotency_key.empty()) {
      PG_ASSIGN_OR_RETURN(std::optional<Created> existing,
                          ExistingForKey(conn, job, /*drop_expired=*/true));
      if (existing.has_value()) {
        PG_RETURN_IF_ERROR(ExecSimple(conn, "create", "COMMIT"));
        return *std::move(existing);
      }
    }
    if (limits.max_jobs_queued > 0) {
      Params p;
      p.Text(job.identity);
      PG_ASSIGN_OR_RETURN(Result count,
                          Exec(conn, "create: count queued",
                               "SELECT count(*) FROM jobs WHERE identity = $1"
                               " AND state IN (1, 2)",
                               p));
      const int64_t queued = GetInt(count.get(), 0, 0);
      if (queued >= limits.max_jobs_queued) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "identity ", job.identity, " has ", queued,
            " queued or running jobs, the limit (--max_jobs_queued=",
            limits.max_jobs_queued, ")"));
      }
    }
    if (limits.max_store_bytes > 0) {
      PG_ASSIGN_OR_RETURN(int64_t bytes, StoreBytesOn(conn));
      if (bytes >= limits.max_store_bytes) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "the job store holds ", bytes,
            " bytes, past --max_store_bytes=", limits.max_store_bytes));
      }
    }
    Params p;
    p.Time(job.now)
        .Text(job.id)
        .Text(job.identity)
        .Text(job.idempotency_key)
        .Int(static_cast<int>(job.kind))
        .Bytes(job.request)
        .Text(job.request_hash)
        .Int(job.total)
        .Int(DurationMicros(job.ttl))
        .Text(job.webhook.url)
        .Text(job.webhook.secret)
        .Text(job.webhook.secret_id)
        .Bool(job.webhook.progress);
    PG_ASSIGN_OR_RETURN(
        Result inserted,
        Exec(conn, "create: insert",
             "WITH u AS (INSERT INTO jobs (id, identity, idempotency_key, kind,"
             " request, request_hash, state, total, created_at, ttl_us, seq,"
             " webhook_url, webhook_secret, webhook_secret_id,"
             " webhook_progress) VALUES ($2, $3, $4, $5, $6, $7, 1, $8, $1,"
             " $9, 1, $10, $11, $12, $13) ON CONFLICT DO NOTHING RETURNING *),"
             " e AS (INSERT INTO events (job_id, seq, state, total, done,"
             " failed, bytes, at, error_code, error_message) SELECT id, seq,"
             " state, total, done, failed, bytes, $1, error_code,"
             " error_message FROM u)"
             " SELECT count(*) FROM u",
             p));
    if (GetInt(inserted.get(), 0, 0) == 0) {
      // Only a key taken outside the identity lock (or a duplicate id).
      PG_ASSIGN_OR_RETURN(std::optional<Created> existing,
                          ExistingForKey(conn, job, /*drop_expired=*/false));
      if (!existing.has_value()) {
        return absl::AlreadyExistsError(
            absl::StrCat("job id ", job.id, " already exists"));
      }
      PG_RETURN_IF_ERROR(ExecSimple(conn, "create", "COMMIT"));
      return *std::move(existing);
    }
    PG_RETURN_IF_ERROR(ExecSimple(conn, "create", "COMMIT"));
    Created created;
    created.created = true;
    Job& out = created.job;
    out.id = job.id;
    out.identity = job.identity;
    out.idempotency_key = job.idempotency_key;
    out.kind = job.kind;
    out.request = job.request;
    out.request_hash = job.request_hash;
    out.state = State::kQueued;
    out.counts.total = job.total;
    out.created_at = absl::FromUnixMicros(Micros(job.now));
    out.ttl = absl::Microseconds(DurationMicros(job.ttl));
    out.seq = 1;
    out.webhook = job.webhook;
    out.last_delivery.state = DeliveryState::kNone;
    return created;
  }

  absl::StatusOr<Job> Get(absl::string_view identity, absl::string_view id,
                          absl::Time now) override {
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    return GetOn(lease.get(), identity, id, now);
  }

  absl::StatusOr<JobPage> List(absl::string_view identity,
                               std::optional<State> state,
                               absl::string_view page_token, int page_size,
                               absl::Time now) override {
    int64_t after_created = 0;
    std::string after_id;
    if (!page_token.empty()) {
      std::string decoded;
      std::vector<std::string> parts;
      if (absl::WebSafeBase64Unescape(page_token, &decoded)) {
        parts = absl::StrSplit(decoded, absl::MaxSplits(':', 1));
      }
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &after_created) ||
          parts[1].empty()) {
        return absl::InvalidArgumentError(
            "page_token: not a token from an earlier List");
      }
      after_id = parts[1];
    }
    page_size = std::max(1, page_size);
    Params p;
    p.Time(now).Text(identity).Int(page_size + 1);
    std::string sql =
        absl::StrCat("SELECT ", kJobColumns, " FROM jobs j", kLatestDelivery,
                     " WHERE j.identity = $2 AND", PG_NOT_EXPIRED("$1"));
    if (state.has_value()) {
      p.Int(static_cast<int>(*state));
      absl::StrAppend(&sql, " AND j.state = $", p.size());
    }
    if (!page_token.empty()) {
      p.Int(after_created).Text(after_id);
      absl::StrAppend(&sql, " AND (j.created_at, j.id) < ($", p.size() - 1,
                      ", $", p.size(), ")");
    }
    absl::StrAppend(&sql, " ORDER BY j.created_at DESC, j.id DESC LIMIT $3");
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    PG_ASSIGN_OR_RETURN(Result rows, Exec(lease.get(), "list jobs", sql, p));
    JobPage page;
    const int n = PQntuples(rows.get());
    for (int i = 0; i < std::min(n, page_size); ++i) {
      page.jobs.push_back(ReadJob(rows.get(), i));
    }
    if (n > page_size) {
      const Job& last = page.jobs.back();
      page.next_page_token = absl::WebSafeBase64Escape(
          absl::StrCat(Micros(last.created_at), ":", last.id));
    }
    return page;
  }

  absl::StatusOr<Job> Cancel(absl::string_view identity, absl::string_view id,
                             absl::Time now) override {
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    Params p;
    p.Time(now).Text(id).Text(identity).Int(
        static_cast<int>(absl::StatusCode::kCancelled));
    PG_RETURN_IF_ERROR(
        Exec(lease.get(), "cancel",
             absl::StrCat(
                 "WITH u AS (UPDATE jobs SET state = 5, error_code = $4,"
                 " error_message = 'cancelled by the caller', finished_at = $1,"
                 " expires_at = $1 + ttl_us, owner = '', lease_until = NULL,"
                 " seq = seq + 1 WHERE id = $2 AND identity = $3"
                 " AND state IN (1, 2) RETURNING *), e AS (",
                 kInsertEvent, ") SELECT count(*) FROM u"),
             p)
            .status());
    return GetOn(lease.get(), identity, id, now);
  }

  absl::Status Delete(absl::string_view identity, absl::string_view id,
                      absl::Time now) override {
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    Session* conn = lease.get();
    PG_RETURN_IF_ERROR(ExecSimple(conn, "delete", "BEGIN"));
    Params p;
    p.Time(now).Text(id).Text(identity);
    PG_ASSIGN_OR_RETURN(
        Result deleted,
        Exec(conn, "delete job",
             "DELETE FROM jobs j WHERE j.id = $2 AND j.identity = $3 "
             "AND" PG_NOT_EXPIRED("$1") " RETURNING j.id",
             p));
    if (PQntuples(deleted.get()) == 0) return NotFound(id);
    // Separate statements: each sees rows committed by writers that held
    // the job row until the DELETE above got it.
    PG_RETURN_IF_ERROR(DeleteChildren(conn, {std::string(id)}));
    return ExecSimple(conn, "delete", "COMMIT");
  }

  absl::StatusOr<std::vector<Job>> Claim(absl::string_view replica,
                                         int max_jobs, absl::Duration lease,
                                         absl::Time now) override {
    if (max_jobs <= 0) return std::vector<Job>();
    PG_ASSIGN_OR_RETURN(Pool::Lease conn, pool_->Acquire());
    Params p;
    p.Time(now).Int(max_jobs).Text(replica).Int(Micros(now) +
                                                DurationMicros(lease));
    PG_ASSIGN_OR_RETURN(
        Result rows,
        Exec(conn.get(), "claim",
             absl::StrCat(
                 "WITH c AS (SELECT id FROM jobs WHERE state = 1 OR (state = 2"
                 " AND lease_until < $1) ORDER BY created_at, id LIMIT $2"
                 " FOR UPDATE SKIP LOCKED),"
                 " u AS (UPDATE jobs j SET state = 2, owner = $3,"
                 " lease_until = $4, attempts = j.attempts + 1,"
                 " started_at = COALESCE(j.started_at, $1), seq = j.seq + 1"
                 " FROM c WHERE j.id = c.id RETURNING j.*), e AS (",
                 kInsertEvent, ") SELECT ", kJobColumnsWithRequest, " FROM u j",
                 kLatestDelivery, " ORDER BY j.created_at, j.id"),
             p));
    std::vector<Job> jobs;
    for (int i = 0; i < PQntuples(rows.get()); ++i) {
      jobs.push_back(ReadJob(rows.get(), i));
    }
    return jobs;
  }

  absl::StatusOr<std::vector<std::string>> Renew(
      absl::string_view replica, const std::vector<std::string>& ids,
      absl::Duration lease, absl::Time now) override {
    if (ids.empty()) return std::vector<std::string>();
    PG_ASSIGN_OR_RETURN(Pool::Lease conn, pool_->Acquire());
    Params p;
    p.Int(Micros(now) + DurationMicros(lease)).TextArray(ids).Text(replica);
    PG_ASSIGN_OR_RETURN(
        Result rows, Exec(conn.get(), "renew leases",
                          "UPDATE jobs SET lease_until = $1 WHERE id = ANY($2)"
                          " AND owner = $3 AND state = 2 RETURNING id",
                          p));
    absl::flat_hash_set<std::string> held;
    for (int i = 0; i < PQntuples(rows.get()); ++i) {
      held.insert(GetString(rows.get(), i, 0));
    }
    std::vector<std::string> stop;
    for (const std::string& id : ids) {
      if (!held.contains(id)) stop.push_back(id);
    }
    return stop;
  }

  absl::Status Release(absl::string_view replica,
                       const std::vector<std::string>& ids,
                       absl::Time now) override {
    if (ids.empty()) return absl::OkStatus();
    PG_ASSIGN_OR_RETURN(Pool::Lease conn, pool_->Acquire());
    Params p;
    p.Time(now).TextArray(ids).Text(replica);
    return Exec(conn.get(), "release",
                absl::StrCat("WITH u AS (UPDATE jobs SET state = 1, owner = '',"
                             " lease_until = NULL, seq = seq + 1"
                             " WHERE id = ANY($2) AND owner = $3 AND state = 2"
                             " RETURNING *), e AS (",
                             kInsertEvent, ") SELECT count(*) FROM u"),
                p)
        .status();
  }

  absl::Status CommitResults(const Commit& commit) override {
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    // The rows as four arrays, and everything in ONE statement (one round
    // trip, one transaction): under a loaded CPU every extra round trip is
    // a scheduling delay, and a single statement cannot be left half done.
    std::string indexes, failed, body_bytes, data;
    {
      std::vector<int64_t> idx;
      idx.reserve(commit.rows.size());
      for (const ResultRow& row : commit.rows) idx.push_back(row.index);
      indexes = BinaryArray(kInt8Oid, idx, [](int64_t v, std::string* out) {
        PutBig32(out, 8);
        PutBig64(out, static_cast<uint64_t>(v));
      });
      failed = BinaryArray(kBoolOid, commit.rows,
                           [](const ResultRow& r, std::string* out) {
                             PutBig32(out, 1);
                             out->push_back(r.failed ? 1 : 0);
                           });
      body_bytes = BinaryArray(
          kInt8Oid, commit.rows, [](const ResultRow& r, std::string* out) {
            PutBig32(out, 8);
            PutBig64(out, static_cast<uint64_t>(r.body_bytes));
          });
      data = BinaryArray(kByteaOid, commit.rows,
                         [](const ResultRow& r, std::string* out) {
                           PutBig32(out, r.data.size());
                           out->append(r.data);
                         });
    }
    Params p;
    p.Time(commit.now)
        .Text(commit.job_id)
        .Raw(kInt8ArrayOid, std::move(indexes))
        .Raw(kBoolArrayOid, std::move(failed))
        .Raw(kInt8ArrayOid, std::move(body_bytes))
        .Raw(kByteaArrayOid, std::move(data))
        .OptInt(commit.total)
        .Bool(!commit.checkpoint.empty())
        .Bytes(commit.checkpoint)
        .Text(commit.replica);
    AddDelivery(commit.delivery, &p);  // $11..$17
    PG_ASSIGN_OR_RETURN(
        Result committed,
        Exec(lease.get(), "commit results",
             absl::StrCat(
                 // The lease, checked and held (row lock) for the rest.
                 "WITH held AS (SELECT id FROM jobs WHERE id = $2"
                 " AND owner = $10 AND state = 2 FOR UPDATE),"
                 // An index that already has a result keeps the first; the
                 // counts add only what went in.
                 " r AS (INSERT INTO results (job_id, idx, failed,"
                 " body_bytes, data) SELECT $2, t.idx, t.failed, t.body_bytes,"
                 " t.data FROM unnest($3::int8[], $4::bool[], $5::int8[],"
                 " $6::bytea[]) AS t(idx, failed, body_bytes, data)"
                 " WHERE EXISTS (SELECT 1 FROM held)"
                 " ON CONFLICT (job_id, idx) DO NOTHING"
                 " RETURNING failed, body_bytes),"
                 " s AS (SELECT count(*) AS n, count(*) FILTER (WHERE failed)"
                 " AS f, COALESCE(sum(body_bytes), 0)::int8 AS b FROM r),"
                 " u AS (UPDATE jobs j SET done = j.done + s.n,"
                 " failed = j.failed + s.f, bytes = j.bytes + s.b,"
                 " total = COALESCE($7, j.total), checkpoint = CASE WHEN $8"
                 " THEN $9 ELSE j.checkpoint END, seq = j.seq + 1 FROM s, held"
                 " WHERE j.id = held.id RETURNING j.*),"
                 " e AS (",
                 kInsertEvent, "), ", kInsertDelivery,
                 " SELECT count(*) FROM u"),
             p));
    if (GetInt(committed.get(), 0, 0) == 0) {
      return LeaseLost(commit.job_id, commit.replica);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<int64_t>> ResultIndexes(
      absl::string_view job_id) override {
    PG_ASSIGN_OR_RETURN(Pool::Lease conn, pool_->Acquire());
    Params p;
    p.Text(job_id);
    PG_ASSIGN_OR_RETURN(
        Result rows,
        Exec(conn.get(), "result indexes",
             "SELECT idx FROM results WHERE job_id = $1 ORDER BY idx", p));
    std::vector<int64_t> indexes;
    indexes.reserve(PQntuples(rows.get()));
    for (int i = 0; i < PQntuples(rows.get()); ++i) {
      indexes.push_back(GetInt(rows.get(), i, 0));
    }
    return indexes;
  }

  absl::Status Finish(absl::string_view job_id, absl::string_view replica,
                      State state, const absl::Status& error,
                      std::optional<Delivery> delivery,
                      absl::Time now) override {
    if (!IsTerminal(state)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Finish: state ", static_cast<int>(state), " is not terminal"));
    }
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    Params p;
    p.Time(now)
        .Text(job_id)
        .Int(static_cast<int>(state))
        .Int(static_cast<int>(error.code()))
        .Text(error.message());
    for (int unused = 6; unused <= 9; ++unused) p.Null(kInt8Oid);
    p.Text(replica);            // $10, as in CommitResults
    AddDelivery(delivery, &p);  // $11..$17
    PG_ASSIGN_OR_RETURN(
        Result finished,
        Exec(lease.get(), "finish",
             absl::StrCat(
                 "WITH u AS (UPDATE jobs SET state = $3, error_code = $4,"
                 " error_message = $5, finished_at = $1,"
                 " expires_at = $1 + ttl_us, owner = '', lease_until = NULL,"
                 " seq = seq + 1 WHERE id = $2 AND owner = $10 AND state = 2"
                 " RETURNING *), e AS (",
                 kInsertEvent, "), ", kInsertDelivery,
                 " SELECT count(*) FROM u"),
             p));
    if (GetInt(finished.get(), 0, 0) == 0) return LeaseLost(job_id, replica);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<ResultRow>> Results(
      absl::string_view identity, absl::string_view id, int64_t after_index,
      int max_rows, int64_t max_bytes, absl::Time now) override {
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    PG_RETURN_IF_ERROR(CheckVisible(lease.get(), identity, id, now));
    Params p;
    p.Text(id).Int(after_index).Int(std::max(1, max_rows)).Int(max_bytes);
    // The byte limit is a running sum over at most max_rows rows; the first
    // row always goes; max_bytes 0: no byte limit (as SQLite).
    PG_ASSIGN_OR_RETURN(
        Result rows,
        Exec(lease.get(), "results",
             "SELECT idx, failed, body_bytes, data FROM (SELECT idx, failed,"
             " body_bytes, data, sum(octet_length(data)) OVER (ORDER BY idx)"
             " AS running, row_number() OVER (ORDER BY idx) AS n FROM"
             " (SELECT * FROM results WHERE job_id = $1 AND idx > $2"
             " ORDER BY idx LIMIT $3) page) sums WHERE n = 1 OR $4 <= 0 OR "
             "running <= $4"
             " ORDER BY idx",
             p));
    std::vector<ResultRow> out;
    out.reserve(PQntuples(rows.get()));
    for (int i = 0; i < PQntuples(rows.get()); ++i) {
      ResultRow row;
      row.index = GetInt(rows.get(), i, 0);
      row.failed = GetBool(rows.get(), i, 1);
      row.body_bytes = GetInt(rows.get(), i, 2);
      row.data = GetString(rows.get(), i, 3);
      out.push_back(std::move(row));
    }
    return out;
  }

  absl::StatusOr<std::vector<Event>> Events(absl::string_view identity,
                                            absl::string_view id,
                                            int64_t after_seq, int max_events,
                                            absl::Time now) override {
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    PG_RETURN_IF_ERROR(CheckVisible(lease.get(), identity, id, now));
    Params p;
    p.Text(id).Int(after_seq).Int(std::max(1, max_events));
    PG_ASSIGN_OR_RETURN(
        Result rows,
        Exec(lease.get(), "events",
             "SELECT seq, state, total, done, failed, bytes, at, error_code,"
             " error_message FROM events WHERE job_id = $1 AND seq > $2"
             " ORDER BY seq LIMIT $3",
             p));
    std::vector<Event> events;
    for (int i = 0; i < PQntuples(rows.get()); ++i) {
      Event e;
      e.seq = GetInt(rows.get(), i, 0);
      e.state = static_cast<State>(GetInt(rows.get(), i, 1));
      e.counts.total = GetInt(rows.get(), i, 2);
      e.counts.done = GetInt(rows.get(), i, 3);
      e.counts.failed = GetInt(rows.get(), i, 4);
      e.counts.bytes = GetInt(rows.get(), i, 5);
      e.time = GetTime(rows.get(), i, 6);
      e.error_code = static_cast<int>(GetInt(rows.get(), i, 7));
      e.error_message = GetString(rows.get(), i, 8);
      events.push_back(std::move(e));
    }
    return events;
  }

  absl::StatusOr<std::vector<Delivery>> ClaimDeliveries(
      absl::string_view replica, int max, absl::Duration lease,
      absl::Time now) override {
    if (max <= 0) return std::vector<Delivery>();
    PG_ASSIGN_OR_RETURN(Pool::Lease conn, pool_->Acquire());
    Params p;
    p.Time(now).Int(max).Text(replica).Int(Micros(now) + DurationMicros(lease));
    PG_ASSIGN_OR_RETURN(
        Result rows,
        Exec(conn.get(), "claim deliveries",
             "WITH c AS (SELECT id FROM deliveries WHERE state = 1"
             " AND (next_attempt_at IS NULL OR next_attempt_at <= $1)"
             " AND (lease_until IS NULL OR lease_until < $1)"
             " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED),"
             " u AS (UPDATE deliveries d SET lease_owner = $3,"
             " lease_until = $4 FROM c WHERE d.id = c.id RETURNING d.*)"
             " SELECT u.id, u.job_id, u.event, u.body, u.state, u.attempts,"
             " u.last_error, u.next_attempt_at, j.webhook_url,"
             " j.webhook_secret, j.webhook_secret_id, j.webhook_progress"
             " FROM u JOIN jobs j ON j.id = u.job_id ORDER BY u.id",
             p));
    std::vector<Delivery> out;
    for (int i = 0; i < PQntuples(rows.get()); ++i) {
      Delivery d;
      d.id = GetInt(rows.get(), i, 0);
      d.job_id = GetString(rows.get(), i, 1);
      d.event = GetString(rows.get(), i, 2);
      d.body = GetString(rows.get(), i, 3);
      d.state = static_cast<DeliveryState>(GetInt(rows.get(), i, 4));
      d.attempts = static_cast<int>(GetInt(rows.get(), i, 5));
      d.last_error = GetString(rows.get(), i, 6);
      d.next_attempt_at = GetTime(rows.get(), i, 7);
      d.webhook.url = GetString(rows.get(), i, 8);
      d.webhook.secret = GetString(rows.get(), i, 9);
      d.webhook.secret_id = GetString(rows.get(), i, 10);
      d.webhook.progress = GetBool(rows.get(), i, 11);
      out.push_back(std::move(d));
    }
    return out;
  }

  absl::Status RecordDelivery(const Delivery& delivery) override {
    PG_ASSIGN_OR_RETURN(Pool::Lease conn, pool_->Acquire());
    Params p;
    p.Int(delivery.id)
        .Int(static_cast<int>(delivery.state))
        .Int(delivery.attempts)
        .Text(delivery.last_error)
        .Time(delivery.next_attempt_at);
    PG_ASSIGN_OR_RETURN(
        Result rows,
        Exec(conn.get(), "record delivery",
             "UPDATE deliveries SET state = $2, attempts = $3,"
             " last_error = $4, next_attempt_at = $5, lease_owner = '',"
             " lease_until = NULL WHERE id = $1 RETURNING id",
             p));
    if (PQntuples(rows.get()) == 0) {
      return absl::NotFoundError(
          absl::StrCat("webhook delivery ", delivery.id, " not found"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int> Sweep(absl::Time now, int max_jobs) override {
    if (max_jobs <= 0) return 0;
    PG_ASSIGN_OR_RETURN(Pool::Lease lease, pool_->Acquire());
    Session* conn = lease.get();
    PG_RETURN_IF_ERROR(ExecSimple(conn, "sweep", "BEGIN"));
    Params p;
    p.Time(now).Int(max_jobs);
    PG_ASSIGN_OR_RETURN(
        Result deleted,
        Exec(conn, "sweep",
             "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
             " WHERE state IN (3, 4, 5) AND expires_at < $1"
             " ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
             " RETURNING id",
             p));
    std::vector<std::string> ids;
    for (int i = 0; i < PQntuples(deleted.get()); ++i) {
      ids.push_back(GetString(deleted.get(), i, 0));
    }
    if (ids.empty()) {
      PG_RETURN_IF_ERROR(ExecSimple(conn, "sweep", "COMMIT"));
      return 0;
    }
    PG_RETURN_IF_ERROR(DeleteChildren(conn, ids));
    PG_RETURN_IF_ERROR(ExecSimple(conn, "sweep", "COMMIT"));
    return static_cast<int>(ids.size());
  }

  absl::StatusOr<int64_t> StoreBytes() override {
    PG_ASSIGN_OR_RETURN(Pool::Lease conn, pool_->Acquire());
    return StoreBytesOn(conn.get());
  }

  // Its own connection: a pool busy with long statements is not a
  // database that does not answer (health would flap under load).
  absl::Status Ping() override {
    PG_ASSIGN_OR_RETURN(Pool::Lease conn, ping_pool_->Acquire());
    return ExecSimple(conn.get(), "ping", "SELECT 1");
  }

 private:
  absl::StatusOr<Job> GetOn(Session* conn, absl::string_view identity,
                            absl::string_view id, absl::Time now) {
    Params p;
    p.Time(now).Text(id).Text(identity);
    PG_ASSIGN_OR_RETURN(
        Result rows,
        Exec(conn, "get job",
             absl::StrCat("SELECT ", kJobColumns, " FROM jobs j",
                          kLatestDelivery,
                          " WHERE j.id = $2 AND j.identity = $3 AND",
                          PG_NOT_EXPIRED("$1")),
             p));
    if (PQntuples(rows.get()) == 0) return NotFound(id);
    return ReadJob(rows.get(), 0);
  }

  absl::Status CheckVisible(Session* conn, absl::string_view identity,
                            absl::string_view id, absl::Time now) {
    Params p;
    p.Time(now).Text(id).Text(identity);
    PG_ASSIGN_OR_RETURN(Result rows,
                        Exec(conn, "find job",
                             "SELECT 1 FROM jobs j WHERE j.id = $2 AND "
                             "j.identity = $3 AND" PG_NOT_EXPIRED("$1"),
                             p));
    if (PQntuples(rows.get()) == 0) return NotFound(id);
    return absl::OkStatus();
  }

  // The existing job of (identity, idempotency_key), if any, as Create
  // returns it. A terminal job past expires_at no longer holds its key
  // (Get says NOT_FOUND): with drop_expired it is deleted here.
  absl::StatusOr<std::optional<Created>> ExistingForKey(Session* conn,
                                                        const NewJob& job,
                                                        bool drop_expired) {
    Params p;
    p.Time(job.now).Text(job.identity).Text(job.idempotency_key);
    PG_ASSIGN_OR_RETURN(
        Result rows,
        Exec(
            conn, "create: find key",
            absl::StrCat("SELECT ", kJobColumns, ", NOT (",
                         PG_NOT_EXPIRED("$1"), ") FROM jobs j", kLatestDelivery,
                         " WHERE j.identity = $2 AND j.idempotency_key = $3"),
            p));
    if (PQntuples(rows.get()) == 0) return std::nullopt;
    Job existing = ReadJob(rows.get(), 0);
    const bool expired = GetBool(rows.get(), 0, PQnfields(rows.get()) - 1);
    if (expired) {
      if (!drop_expired) return std::nullopt;
      Params d;
      d.Text(existing.id);
      PG_RETURN_IF_ERROR(Exec(conn, "create: drop expired job",
                              "DELETE FROM jobs WHERE id = $1", d)
                             .status());
      PG_RETURN_IF_ERROR(DeleteChildren(conn, {existing.id}));
      return std::nullopt;
    }
    if (existing.request_hash != job.request_hash) {
      return absl::AlreadyExistsError(absl::StrCat(
          "idempotency_key \"", job.idempotency_key, "\" is already job ",
          existing.id, " with a different request"));
    }
    Created created;
    created.job = std::move(existing);
    created.created = false;
    return created;
  }

  // Results, events and deliveries of deleted jobs (in the caller's
  // transaction).
  absl::Status DeleteChildren(Session* conn,
                              const std::vector<std::string>& ids) {
    for (const char* sql : {"DELETE FROM results WHERE job_id = ANY($1)",
                            "DELETE FROM events WHERE job_id = ANY($1)",
                            "DELETE FROM deliveries WHERE job_id = ANY($1)"}) {
      Params p;
      p.TextArray(ids);
      PG_RETURN_IF_ERROR(Exec(conn, "delete job rows", sql, p).status());
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> StoreBytesOn(Session* conn) {
    PG_ASSIGN_OR_RETURN(
        Result size,
        Exec(conn, "store size",
             "SELECT (pg_total_relation_size('jobs')"
             " + pg_total_relation_size('results')"
             " + pg_total_relation_size('events')"
             " + pg_total_relation_size('deliveries')"
             " + pg_total_relation_size('schema_migrations'))::int8"));
    return GetInt(size.get(), 0, 0);
  }

  std::unique_ptr<Pool> pool_;
  std::unique_ptr<Pool> ping_pool_;  // one connection, for Ping only
};

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> OpenPostgresStore(
    const std::string& conninfo, const StoreOptions& options) {
  char* parse_error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &parse_error);
  if (parsed == nullptr) {
    std::string message = parse_error ? parse_error : "out of memory";
    if (parse_error) PQfreemem(parse_error);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    return absl::InvalidArgumentError(absl::StrCat(
        "--job_store: not a PostgreSQL connection URI: ", message));
  }
  std::vector<std::string> keywords, values;
  for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) {
      keywords.push_back(o->keyword);
      values.push_back(o->val);
    }
  }
  PQconninfoFree(parsed);
  // Defaults that keep a dead or unreachable server from hanging a call:
  // connecting is bounded, and a peer that vanished mid-statement is
  // noticed by TCP keepalives and the user timeout.
  auto set_default = [&](const char* key, const char* value) {
    if (std::find(keywords.begin(), keywords.end(), key) == keywords.end()) {
      keywords.push_back(key);
      values.push_back(value);
    }
  };
  set_default("connect_timeout", "5");
  set_default("application_name", "fetchd");
  set_default("keepalives_idle", "30");
  set_default("keepalives_interval", "10");
  set_default("keepalives_count", "3");
  set_default("tcp_user_timeout", "30000");
  auto ping_pool = std::make_unique<Pool>(keywords, values, 1, absl::Seconds(5),
                                          options.busy_timeout);
  auto pool = std::make_unique<Pool>(
      std::move(keywords), std::move(values), std::max(1, options.pool_size),
      std::max(absl::Seconds(1), options.busy_timeout), options.busy_timeout);
  auto store =
      std::make_unique<PostgresStore>(std::move(pool), std::move(ping_pool));
  if (absl::Status migrated = store->Migrate(); !migrated.ok()) {
    if (absl::IsUnavailable(migrated)) {
      return absl::UnavailableError(absl::StrCat(
          "--job_store: PostgreSQL cannot be reached: ", migrated.message()));
    }
    return migrated;
  }
  return store;
}

}  // namespace fetchd::jobs
