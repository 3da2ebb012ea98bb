// The SQLite JobStore (--job_store=sqlite:PATH): one file, WAL mode.
//
// Two connections: a writer (every transaction, BEGIN IMMEDIATE) and a
// read-only reader (Get, List, Results, Events...), each behind its own
// mutex. WAL lets the reader see the last commit while the writer is inside
// a long CommitResults, so watchers and ListResults never wait behind it.
// Statements are prepared once per connection and cached.
#include <sqlite3.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/jobs/store.h"

namespace fetchd::jobs {
namespace {

// --- schema ------------------------------------------------------------------

// Applied in order, one transaction each; PRAGMA user_version is how many
// have been applied. Never edit a shipped entry: append a new one.
// Times are integer microseconds since the Unix epoch (NULL: not yet).
constexpr const char* kMigrations[] = {
    // 1: the initial schema.
    R"sql(
CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  identity TEXT NOT NULL,
  idempotency_key TEXT NOT NULL DEFAULT '',
  kind INTEGER NOT NULL,
  request BLOB NOT NULL,
  request_hash TEXT NOT NULL,
  state INTEGER NOT NULL,
  total INTEGER NOT NULL DEFAULT 0,
  done INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0,
  bytes INTEGER NOT NULL DEFAULT 0,
  error_code INTEGER NOT NULL DEFAULT 0,
  error_message TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  expires_at INTEGER,
  ttl_us INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  owner TEXT NOT NULL DEFAULT '',
  lease_until INTEGER,
  checkpoint BLOB NOT NULL DEFAULT '',
  seq INTEGER NOT NULL DEFAULT 0,
  webhook_url TEXT NOT NULL DEFAULT '',
  webhook_secret TEXT NOT NULL DEFAULT '',
  webhook_secret_id TEXT NOT NULL DEFAULT '',
  webhook_progress INTEGER NOT NULL DEFAULT 0
);
-- One job per (identity, key); jobs without a key are not constrained.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (identity, idempotency_key)
  WHERE idempotency_key <> '';
CREATE INDEX jobs_claim ON jobs (state, lease_until, created_at);
CREATE INDEX jobs_list ON jobs (identity, created_at DESC, id DESC);
CREATE INDEX jobs_sweep ON jobs (expires_at) WHERE state >= 3;

CREATE TABLE results (
  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  failed INTEGER NOT NULL,
  body_bytes INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;

CREATE TABLE events (
  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  state INTEGER NOT NULL,
  total INTEGER NOT NULL,
  done INTEGER NOT NULL,
  failed INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  time INTEGER NOT NULL,
  error_code INTEGER NOT NULL,
  error_message TEXT NOT NULL,
  PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

CREATE TABLE deliveries (
  id INTEGER PRIMARY KEY,
  job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  event TEXT NOT NULL,
  body BLOB NOT NULL,
  state INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  next_attempt_at INTEGER NOT NULL,
  owner TEXT NOT NULL DEFAULT '',
  lease_until INTEGER
);
CREATE INDEX deliveries_job ON deliveries (job_id, id);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
)sql",
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

// Job::request can be megabytes (a 100,000-URL batch): only Claim, whose
// runner needs it, reads it; every other query reads an empty blob in its
// place.
#define FETCHD_JOB_COLUMNS(request)                                      \
  "id, identity, idempotency_key, kind, " request                        \
  ", request_hash, state, total, done, failed, bytes, error_code, "      \
  "error_message, created_at, started_at, finished_at, expires_at, "     \
  "ttl_us, attempts, owner, lease_until, checkpoint, seq, webhook_url, " \
  "webhook_secret, webhook_secret_id, webhook_progress"
constexpr const char* kJobColumnsWithRequest = FETCHD_JOB_COLUMNS("request");
constexpr const char* kJobColumns = FETCHD_JOB_COLUMNS("x'' AS request");
#undef FETCHD_JOB_COLUMNS

constexpr const char* kDeliveryColumns =
    "id, job_id, event, body, state, attempts, last_error, next_attempt_at";

// --- RAII handles ------------------------------------------------------------

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

absl::StatusCode CodeFor(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
      return absl::StatusCode::kUnavailable;
    case SQLITE_FULL:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    case SQLITE_CONSTRAINT:
      return absl::StatusCode::kAlreadyExists;
    default:
      return absl::StatusCode::kInternal;
  }
}

int64_t Micros(absl::Time t) { return absl::ToUnixMicros(t); }

class Conn;

// One use of a prepared statement: binds, steps, reads columns, and resets
// it on destruction so the cached statement can be used again.
class Query {
 public:
  Query(Conn* conn, sqlite3_stmt* stmt, bool* in_use, StmtPtr owned)
      : conn_(conn), stmt_(stmt), in_use_(in_use), owned_(std::move(owned)) {}
  Query(Query&& other) noexcept
      : conn_(other.conn_),
        stmt_(std::exchange(other.stmt_, nullptr)),
        in_use_(std::exchange(other.in_use_, nullptr)),
        owned_(std::move(other.owned_)),
        bind_rc_(other.bind_rc_) {}
  Query& operator=(Query&&) = delete;
  ~Query() {
    if (stmt_ == nullptr) return;
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    if (in_use_ != nullptr) *in_use_ = false;
  }

  // Parameters are 1-based, as in SQL. Text and blobs must outlive the
  // query (SQLITE_STATIC: no copy, which matters for CommitResults).
  Query& Int(int i, int64_t v) {
    return Check(sqlite3_bind_int64(stmt_, i, v));
  }
  Query& Text(int i, absl::string_view v) {
    // An empty view may have a null data(), which would bind NULL.
    return Check(sqlite3_bind_text(stmt_, i, v.empty() ? "" : v.data(),
                                   static_cast<int>(v.size()), SQLITE_STATIC));
  }
  Query& Blob(int i, absl::string_view v) {
    return Check(sqlite3_bind_blob(stmt_, i, v.empty() ? "" : v.data(),
                                   static_cast<int>(v.size()), SQLITE_STATIC));
  }
  Query& Null(int i) { return Check(sqlite3_bind_null(stmt_, i)); }
  // InfinitePast (not yet) is NULL.
  Query& Time(int i, absl::Time t) {
    return t == absl::InfinitePast() ? Null(i) : Int(i, Micros(t));
  }

  // true: a row is ready; false: done.
  absl::StatusOr<bool> Step();
  // Steps to the end (statements without rows).
  absl::Status Run() {
    for (;;) {
      absl::StatusOr<bool> row = Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
    }
  }

  // Ready to run again with new bindings.
  void Reset() { sqlite3_reset(stmt_); }

  int64_t ColInt(int c) const { return sqlite3_column_int64(stmt_, c); }
  bool ColNull(int c) const {
    return sqlite3_column_type(stmt_, c) == SQLITE_NULL;
  }
  std::string ColStr(int c) const {
    const void* data = sqlite3_column_blob(stmt_, c);
    int size = sqlite3_column_bytes(stmt_, c);
    return data == nullptr ? std::string()
                           : std::string(static_cast<const char*>(data), size);
  }
  absl::Time ColTime(int c) const {
    return ColNull(c) ? absl::InfinitePast() : absl::FromUnixMicros(ColInt(c));
  }

 private:
  Query& Check(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
    return *this;
  }

  Conn* conn_;
  sqlite3_stmt* stmt_;
  bool* in_use_;
  StmtPtr owned_;
  int bind_rc_ = SQLITE_OK;
};

// One connection and its prepared statements. Not thread-safe: the store
// guards each with a mutex.
class Conn {
 public:
  static absl::StatusOr<std::unique_ptr<Conn>> Open(const std::string& path,
                                                    bool read_only,
                                                    absl::Duration busy);

  absl::Status Error(int rc, absl::string_view what) const {
    if ((rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT) {
      return Corrupt(what);
    }
    return absl::Status(
        CodeFor(rc), absl::StrCat("sqlite job store ", path_, ": ", what, ": ",
                                  sqlite3_errmsg(db_.get())));
  }
  absl::Status Corrupt(absl::string_view what) const {
    return absl::FailedPreconditionError(absl::StrCat(
        "sqlite job store ", path_, " is not a database or is corrupt (", what,
        ": ", sqlite3_errmsg(db_.get()), "): move it aside (mv ", path_, " ",
        path_, ".corrupt) and start again"));
  }

  // A cached statement (compiled once per connection); a fresh one when the
  // cached one is in use by an enclosing query.
  absl::StatusOr<Query> Prepare(const std::string& sql) {
    auto it = cache_.find(sql);
    if (it != cache_.end() && !it->second.in_use) {
      it->second.in_use = true;
      return Query(this, it->second.stmt.get(), &it->second.in_use, nullptr);
    }
    sqlite3_stmt* raw = nullptr;
    int rc =
        sqlite3_prepare_v3(db_.get(), sql.data(), static_cast<int>(sql.size()),
                           SQLITE_PREPARE_PERSISTENT, &raw, nullptr);
    StmtPtr stmt(raw);
    if (rc != SQLITE_OK) return Error(rc, absl::StrCat("prepare ", sql));
    if (it != cache_.end()) {
      return Query(this, raw, nullptr, std::move(stmt));
    }
    Cached& cached = cache_[sql];
    cached.stmt = std::move(stmt);
    cached.in_use = true;
    return Query(this, raw, &cached.in_use, nullptr);
  }

  // Runs a script of statements (migrations, pragmas).
  absl::Status Exec(const char* sql, absl::string_view what) {
    char* message = nullptr;
    int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, &message);
    sqlite3_free(message);
    return rc == SQLITE_OK ? absl::OkStatus() : Error(rc, what);
  }

  absl::StatusOr<int64_t> QueryInt(const std::string& sql) {
    absl::StatusOr<Query> q = Prepare(sql);
    if (!q.ok()) return q.status();
    absl::StatusOr<bool> row = q->Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::InternalError(absl::StrCat(sql, ": no row"));
    return q->ColInt(0);
  }

  int Changes() const { return sqlite3_changes(db_.get()); }
  sqlite3* db() const { return db_.get(); }
  const std::string& path() const { return path_; }

 private:
  struct Cached {
    StmtPtr stmt;
    bool in_use = false;
  };

  Conn(std::string path, DbPtr db)
      : path_(std::move(path)), db_(std::move(db)) {}

  std::string path_;
  DbPtr db_;
  // Declared after db_: statements are finalized before the close.
  std::map<std::string, Cached, std::less<>> cache_;
};

absl::StatusOr<bool> Query::Step() {
  if (bind_rc_ != SQLITE_OK) {
    return conn_->Error(bind_rc_, absl::StrCat("bind ", sqlite3_sql(stmt_)));
  }
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return conn_->Error(rc, sqlite3_sql(stmt_));
}

// Why the path cannot be opened, in the operator's words.
absl::Status OpenError(const std::string& path, int rc, sqlite3* db) {
  std::string dir = ".";
  if (size_t slash = path.rfind('/'); slash != std::string::npos) {
    dir = slash == 0 ? "/" : path.substr(0, slash);
  }
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "--job_store: cannot open sqlite job store ", path, ": directory ", dir,
        " ", errno == ENOENT ? "does not exist" : strerror(errno),
        " (create it first)"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--job_store: cannot open sqlite job store ", path, ": ",
                     dir, " is not a directory"));
  }
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("--job_store: cannot open sqlite job store ", path,
                     ": it is a directory, not a file"));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("--job_store: cannot open sqlite job store ", path, ": ",
                   db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc),
                   " (check the file's and the directory's permissions)"));
}

absl::StatusOr<std::unique_ptr<Conn>> Conn::Open(const std::string& path,
                                                 bool read_only,
                                                 absl::Duration busy) {
  sqlite3* raw = nullptr;
  // NOMUTEX: the store serializes each connection with its own mutex.
  int flags = (read_only ? SQLITE_OPEN_READONLY
                         : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
              SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  DbPtr db(raw);
  if (rc != SQLITE_OK) return OpenError(path, rc, db.get());
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), static_cast<int>(std::min<int64_t>(
                                     absl::ToInt64Milliseconds(busy),
                                     std::numeric_limits<int>::max())));
  auto conn = std::unique_ptr<Conn>(new Conn(path, std::move(db)));
  // The first read of the header: a file that is not a database fails here.
  absl::StatusOr<int64_t> tables =
      conn->QueryInt("SELECT count(*) FROM sqlite_master");
  if (!tables.ok()) return tables.status();
  return conn;
}

// BEGIN IMMEDIATE (writes: takes the write lock first, so a read-then-write
// transaction never fails to upgrade) or BEGIN (reads: one snapshot); rolls
// back unless committed.
class Txn {
 public:
  static absl::StatusOr<Txn> Begin(Conn& conn, bool write) {
    absl::StatusOr<Query> q = conn.Prepare(write ? "BEGIN IMMEDIATE" : "BEGIN");
    if (!q.ok()) return q.status();
    if (absl::Status s = q->Run(); !s.ok()) return s;
    return Txn(&conn);
  }
  Txn(Txn&& other) noexcept : conn_(std::exchange(other.conn_, nullptr)) {}
  Txn& operator=(Txn&&) = delete;
  ~Txn() {
    if (conn_ == nullptr) return;
    absl::StatusOr<Query> q = conn_->Prepare("ROLLBACK");
    if (q.ok()) q->Run().IgnoreError();
  }
  absl::Status Commit() {
    absl::StatusOr<Query> q = conn_->Prepare("COMMIT");
    if (!q.ok()) return q.status();
    absl::Status s = q->Run();
    if (s.ok()) conn_ = nullptr;
    return s;
  }

 private:
  explicit Txn(Conn* conn) : conn_(conn) {}
  Conn* conn_;
};

#define FETCHD_ASSIGN_OR_RETURN(lhs, expr)      \
  auto lhs##_or = (expr);                       \
  if (!lhs##_or.ok()) return lhs##_or.status(); \
  auto lhs = std::move(*lhs##_or)

#define FETCHD_RETURN_IF_ERROR(expr)          \
  do {                                        \
    if (absl::Status s_ = (expr); !s_.ok()) { \
      return s_;                              \
    }                                         \
  } while (0)

Job ReadJob(const Query& q) {
  Job job;
  job.id = q.ColStr(0);
  job.identity = q.ColStr(1);
  job.idempotency_key = q.ColStr(2);
  job.kind = static_cast<Kind>(q.ColInt(3));
  job.request = q.ColStr(4);
  job.request_hash = q.ColStr(5);
  job.state = static_cast<State>(q.ColInt(6));
  job.counts.total = q.ColInt(7);
  job.counts.done = q.ColInt(8);
  job.counts.failed = q.ColInt(9);
  job.counts.bytes = q.ColInt(10);
  job.error_code = static_cast<int>(q.ColInt(11));
  job.error_message = q.ColStr(12);
  job.created_at = q.ColTime(13);
  job.started_at = q.ColTime(14);
  job.finished_at = q.ColTime(15);
  job.expires_at = q.ColTime(16);
  job.ttl = absl::Microseconds(q.ColInt(17));
  job.attempts = static_cast<int>(q.ColInt(18));
  job.owner = q.ColStr(19);
  job.lease_until = q.ColTime(20);
  job.checkpoint = q.ColStr(21);
  job.seq = q.ColInt(22);
  job.webhook.url = q.ColStr(23);
  job.webhook.secret = q.ColStr(24);
  job.webhook.secret_id = q.ColStr(25);
  job.webhook.progress = q.ColInt(26) != 0;
  job.last_delivery.state = DeliveryState::kNone;  // until one is read
  return job;
}

Delivery ReadDelivery(const Query& q) {
  Delivery d;
  d.id = q.ColInt(0);
  d.job_id = q.ColStr(1);
  d.event = q.ColStr(2);
  d.body = q.ColStr(3);
  d.state = static_cast<DeliveryState>(q.ColInt(4));
  d.attempts = static_cast<int>(q.ColInt(5));
  d.last_error = q.ColStr(6);
  d.next_attempt_at = q.ColTime(7);
  return d;
}

absl::Status NotFound(absl::string_view id) {
  return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
}

bool Expired(const Job& job, absl::Time now) {
  return IsTerminal(job.state) && job.expires_at != absl::InfinitePast() &&
         job.expires_at <= now;
}

// The job by id (nullopt: none), with its latest delivery; its request only
// `with_request`.
absl::StatusOr<std::optional<Job>> LoadJob(Conn& conn, absl::string_view id,
                                           bool with_request = false) {
  std::optional<Job> job;
  {
    FETCHD_ASSIGN_OR_RETURN(
        q, conn.Prepare(absl::StrCat(
               "SELECT ", with_request ? kJobColumnsWithRequest : kJobColumns,
               " FROM jobs WHERE id = ?1")));
    q.Text(1, id);
    FETCHD_ASSIGN_OR_RETURN(row, q.Step());
    if (!row) return job;
    job = ReadJob(q);
  }
  FETCHD_ASSIGN_OR_RETURN(
      q, conn.Prepare(absl::StrCat("SELECT ", kDeliveryColumns,
                                   " FROM deliveries WHERE job_id = ?1 "
                                   "ORDER BY id DESC LIMIT 1")));
  q.Text(1, id);
  FETCHD_ASSIGN_OR_RETURN(row, q.Step());
  if (row) job->last_delivery = ReadDelivery(q);
  return job;
}

// The job as its identity sees it: NOT_FOUND for another identity's or an
// expired one.
absl::StatusOr<Job> VisibleJob(Conn& conn, absl::string_view identity,
                               absl::string_view id, absl::Time now) {
  FETCHD_ASSIGN_OR_RETURN(job, LoadJob(conn, id));
  if (!job.has_value() || job->identity != identity || Expired(*job, now)) {
    return NotFound(id);
  }
  return *std::move(job);
}

// Appends the job's current state as its event `seq` (the caller has just
// incremented seq in the same transaction).
absl::Status AppendEvent(Conn& conn, absl::string_view id, absl::Time now) {
  FETCHD_ASSIGN_OR_RETURN(
      q, conn.Prepare(
             "INSERT INTO events (job_id, seq, state, total, done, failed, "
             "bytes, time, error_code, error_message) "
             "SELECT id, seq, state, total, done, failed, bytes, ?2, "
             "error_code, error_message FROM jobs WHERE id = ?1"));
  q.Text(1, id).Int(2, Micros(now));
  return q.Run();
}

absl::Status InsertDelivery(Conn& conn, absl::string_view job_id,
                            const Delivery& d, absl::Time now) {
  FETCHD_ASSIGN_OR_RETURN(
      q, conn.Prepare("INSERT INTO deliveries (job_id, event, body, state, "
                      "attempts, last_error, next_attempt_at) "
                      "VALUES (?1, ?2, ?3, ?4, 0, '', ?5)"));
  q.Text(1, job_id)
      .Text(2, d.event)
      .Blob(3, d.body)
      .Int(4, static_cast<int>(DeliveryState::kPending))
      .Int(5, Micros(d.next_attempt_at == absl::InfinitePast()
                         ? now
                         : d.next_attempt_at));
  return q.Run();
}

// OK when `replica` holds `job_id`'s lease (RUNNING, owner = replica).
absl::Status CheckLease(Conn& conn, absl::string_view job_id,
                        absl::string_view replica) {
  FETCHD_ASSIGN_OR_RETURN(
      q, conn.Prepare("SELECT state, owner FROM jobs WHERE id = ?1"));
  q.Text(1, job_id);
  FETCHD_ASSIGN_OR_RETURN(row, q.Step());
  if (!row) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, ": lease lost (the job was deleted)"));
  }
  State state = static_cast<State>(q.ColInt(0));
  std::string owner = q.ColStr(1);
  if (state != State::kRunning) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", job_id, ": lease lost (the job is ",
        IsTerminal(state) ? "finished or cancelled" : "queued", ")"));
  }
  if (owner != replica) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, ": lease lost (replica ", owner,
                     " holds it, not ", replica, ")"));
  }
  return absl::OkStatus();
}

// List page tokens: web-safe base64 of "<created_at micros>:<id>", the last
// job of the page (the next page starts after it).
std::string EncodePageToken(const Job& last) {
  return absl::WebSafeBase64Escape(
      absl::StrCat(Micros(last.created_at), ":", last.id));
}

absl::StatusOr<std::pair<int64_t, std::string>> DecodePageToken(
    absl::string_view token) {
  std::string raw;
  std::vector<std::string> parts;
  int64_t micros = 0;
  if (!absl::WebSafeBase64Unescape(token, &raw) ||
      (parts = absl::StrSplit(raw, absl::MaxSplits(':', 1))).size() != 2 ||
      !absl::SimpleAtoi(parts[0], &micros) || parts[1].empty()) {
    return absl::InvalidArgumentError(
        "page_token: malformed (pass a next_page_token as given)");
  }
  return std::make_pair(micros, parts[1]);
}

absl::StatusOr<int64_t> UsedBytes(Conn& conn) {
  FETCHD_ASSIGN_OR_RETURN(pages, conn.QueryInt("PRAGMA page_count"));
  FETCHD_ASSIGN_OR_RETURN(free_pages, conn.QueryInt("PRAGMA freelist_count"));
  FETCHD_ASSIGN_OR_RETURN(page_size, conn.QueryInt("PRAGMA page_size"));
  return (pages - free_pages) * page_size;
}

class SqliteStore final : public JobStore {
 public:
  SqliteStore(std::unique_ptr<Conn> writer, std::unique_ptr<Conn> reader)
      : writer_(std::move(writer)), reader_(std::move(reader)) {}

  absl::string_view backend() const override { return "sqlite"; }

  absl::StatusOr<Created> Create(const NewJob& job,
                                 const CreateLimits& limits) override
      ABSL_LOCKS_EXCLUDED(write_mu_) {
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    if (!job.idempotency_key.empty()) {
      std::optional<std::string> existing_id;
      {
        FETCHD_ASSIGN_OR_RETURN(
            q, conn.Prepare("SELECT id FROM jobs WHERE identity = ?1 AND "
                            "idempotency_key = ?2 AND idempotency_key <> ''"));
        q.Text(1, job.identity).Text(2, job.idempotency_key);
        FETCHD_ASSIGN_OR_RETURN(row, q.Step());
        if (row) existing_id = q.ColStr(0);
      }
      if (existing_id.has_value()) {
        FETCHD_ASSIGN_OR_RETURN(existing, LoadJob(conn, *existing_id));
        if (Expired(*existing, job.now)) {
          // Gone for the caller (Get says NOT_FOUND): the key is free again.
          FETCHD_RETURN_IF_ERROR(DeleteJob(conn, *existing_id));
        } else if (existing->request_hash == job.request_hash) {
          return Created{*std::move(existing), false};
        } else {
          return absl::AlreadyExistsError(
              absl::StrCat("idempotency_key \"", job.idempotency_key,
                           "\" is already used by job ", existing->id,
                           " with a different request"));
        }
      }
    }
    if (limits.max_jobs_queued > 0) {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare("SELECT count(*) FROM jobs WHERE identity = ?1 AND "
                          "state IN (1, 2)"));
      q.Text(1, job.identity);
      FETCHD_ASSIGN_OR_RETURN(row, q.Step());
      int64_t active = row ? q.ColInt(0) : 0;
      if (active >= limits.max_jobs_queued) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "--max_jobs_queued: ", active, " jobs of this identity are ",
            "queued or running (limit ", limits.max_jobs_queued, ")"));
      }
    }
    if (limits.max_store_bytes > 0) {
      FETCHD_ASSIGN_OR_RETURN(used, UsedBytes(conn));
      if (used >= limits.max_store_bytes) {
        return absl::ResourceExhaustedError(
            absl::StrCat("--max_store_bytes: the job store holds ", used,
                         " bytes (limit ", limits.max_store_bytes, ")"));
      }
    }
    {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare(
                 "INSERT INTO jobs (id, identity, idempotency_key, kind, "
                 "request, request_hash, state, total, created_at, ttl_us, "
                 "seq, webhook_url, webhook_secret, webhook_secret_id, "
                 "webhook_progress) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, "
                 "?8, ?9, 1, ?10, ?11, ?12, ?13)"));
      q.Text(1, job.id)
          .Text(2, job.identity)
          .Text(3, job.idempotency_key)
          .Int(4, static_cast<int>(job.kind))
          .Blob(5, job.request)
          .Text(6, job.request_hash)
          .Int(7, job.total)
          .Int(8, Micros(job.now))
          .Int(9, absl::ToInt64Microseconds(job.ttl))
          .Text(10, job.webhook.url)
          .Text(11, job.webhook.secret)
          .Text(12, job.webhook.secret_id)
          .Int(13, job.webhook.progress ? 1 : 0);
      FETCHD_RETURN_IF_ERROR(q.Run());
    }
    FETCHD_RETURN_IF_ERROR(AppendEvent(conn, job.id, job.now));
    FETCHD_ASSIGN_OR_RETURN(stored, LoadJob(conn, job.id));
    FETCHD_RETURN_IF_ERROR(txn.Commit());
    return Created{*std::move(stored), true};
  }

  absl::StatusOr<Job> Get(absl::string_view identity, absl::string_view id,
                          absl::Time now) override
      ABSL_LOCKS_EXCLUDED(read_mu_) {
    absl::MutexLock lock(&read_mu_);
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(*reader_, /*write=*/false));
    return VisibleJob(*reader_, identity, id, now);
  }

  absl::StatusOr<JobPage> List(absl::string_view identity,
                               std::optional<State> state,
                               absl::string_view page_token, int page_size,
                               absl::Time now) override
      ABSL_LOCKS_EXCLUDED(read_mu_) {
    int64_t after_micros = std::numeric_limits<int64_t>::max();
    std::string after_id;
    if (!page_token.empty()) {
      FETCHD_ASSIGN_OR_RETURN(token, DecodePageToken(page_token));
      after_micros = token.first;
      after_id = token.second;
    }
    if (page_size <= 0) page_size = 100;
    absl::MutexLock lock(&read_mu_);
    Conn& conn = *reader_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/false));
    JobPage page;
    {
      FETCHD_ASSIGN_OR_RETURN(
          q,
          conn.Prepare(absl::StrCat(
              "SELECT ", kJobColumns,
              " FROM jobs WHERE identity = ?1 AND (?2 IS NULL OR state = ?2) "
              "AND NOT (state >= 3 AND expires_at <= ?3) "
              "AND (created_at < ?4 OR (created_at = ?4 AND id < ?5)) "
              "ORDER BY created_at DESC, id DESC LIMIT ?6")));
      q.Text(1, identity);
      if (state.has_value()) {
        q.Int(2, static_cast<int>(*state));
      } else {
        q.Null(2);
      }
      q.Int(3, Micros(now)).Int(4, after_micros);
      // With no token, every id is "less" at created_at = max (none is).
      q.Text(5, after_id).Int(6, page_size + 1);
      for (;;) {
        FETCHD_ASSIGN_OR_RETURN(row, q.Step());
        if (!row) break;
        page.jobs.push_back(ReadJob(q));
      }
    }
    if (static_cast<int>(page.jobs.size()) > page_size) {
      page.jobs.pop_back();
      page.next_page_token = EncodePageToken(page.jobs.back());
    }
    for (Job& job : page.jobs) {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare(absl::StrCat("SELECT ", kDeliveryColumns,
                                       " FROM deliveries WHERE job_id = ?1 "
                                       "ORDER BY id DESC LIMIT 1")));
      q.Text(1, job.id);
      FETCHD_ASSIGN_OR_RETURN(row, q.Step());
      if (row) job.last_delivery = ReadDelivery(q);
    }
    return page;
  }

  absl::StatusOr<Job> Cancel(absl::string_view identity, absl::string_view id,
                             absl::Time now) override
      ABSL_LOCKS_EXCLUDED(write_mu_) {
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    FETCHD_ASSIGN_OR_RETURN(job, VisibleJob(conn, identity, id, now));
    if (IsTerminal(job.state)) return job;
    {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare(
                 "UPDATE jobs SET state = 5, error_code = ?2, "
                 "error_message = 'cancelled by the caller', finished_at = ?3, "
                 "expires_at = ?3 + ttl_us, seq = seq + 1 WHERE id = ?1"));
      q.Text(1, id)
          .Int(2, static_cast<int>(absl::StatusCode::kCancelled))
          .Int(3, Micros(now));
      FETCHD_RETURN_IF_ERROR(q.Run());
    }
    FETCHD_RETURN_IF_ERROR(AppendEvent(conn, id, now));
    FETCHD_ASSIGN_OR_RETURN(cancelled, LoadJob(conn, id));
    FETCHD_RETURN_IF_ERROR(txn.Commit());
    return *std::move(cancelled);
  }

  absl::Status Delete(absl::string_view identity, absl::string_view id,
                      absl::Time now) override ABSL_LOCKS_EXCLUDED(write_mu_) {
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    FETCHD_ASSIGN_OR_RETURN(job, VisibleJob(conn, identity, id, now));
    FETCHD_RETURN_IF_ERROR(DeleteJob(conn, job.id));
    return txn.Commit();
  }

  absl::StatusOr<std::vector<Job>> Claim(absl::string_view replica,
                                         int max_jobs, absl::Duration lease,
                                         absl::Time now) override
      ABSL_LOCKS_EXCLUDED(write_mu_) {
    std::vector<Job> claimed;
    if (max_jobs <= 0) return claimed;
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    std::vector<std::string> ids;
    {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare("SELECT id FROM jobs WHERE state = 1 OR "
                          "(state = 2 AND lease_until <= ?1) "
                          "ORDER BY created_at, id LIMIT ?2"));
      q.Int(1, Micros(now)).Int(2, max_jobs);
      for (;;) {
        FETCHD_ASSIGN_OR_RETURN(row, q.Step());
        if (!row) break;
        ids.push_back(q.ColStr(0));
      }
    }
    for (const std::string& id : ids) {
      {
        FETCHD_ASSIGN_OR_RETURN(
            q, conn.Prepare("UPDATE jobs SET state = 2, owner = ?2, "
                            "lease_until = ?3, attempts = attempts + 1, "
                            "started_at = coalesce(started_at, ?4), "
                            "seq = seq + 1 WHERE id = ?1"));
        q.Text(1, id)
            .Text(2, replica)
            .Int(3, Micros(now + lease))
            .Int(4, Micros(now));
        FETCHD_RETURN_IF_ERROR(q.Run());
      }
      FETCHD_RETURN_IF_ERROR(AppendEvent(conn, id, now));
      FETCHD_ASSIGN_OR_RETURN(job, LoadJob(conn, id, /*with_request=*/true));
      if (job.has_value()) claimed.push_back(*std::move(job));
    }
    FETCHD_RETURN_IF_ERROR(txn.Commit());
    return claimed;
  }

  absl::StatusOr<std::vector<std::string>> Renew(
      absl::string_view replica, const std::vector<std::string>& ids,
      absl::Duration lease, absl::Time now) override
      ABSL_LOCKS_EXCLUDED(write_mu_) {
    std::vector<std::string> stop;
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    for (const std::string& id : ids) {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare("UPDATE jobs SET lease_until = ?3 WHERE id = ?1 "
                          "AND state = 2 AND owner = ?2"));
      q.Text(1, id).Text(2, replica).Int(3, Micros(now + lease));
      FETCHD_RETURN_IF_ERROR(q.Run());
      if (conn.Changes() == 0) stop.push_back(id);
    }
    FETCHD_RETURN_IF_ERROR(txn.Commit());
    return stop;
  }

  absl::Status Release(absl::string_view replica,
                       const std::vector<std::string>& ids,
                       absl::Time now) override ABSL_LOCKS_EXCLUDED(write_mu_) {
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    for (const std::string& id : ids) {
      {
        FETCHD_ASSIGN_OR_RETURN(
            q, conn.Prepare("UPDATE jobs SET state = 1, owner = '', "
                            "lease_until = NULL, seq = seq + 1 "
                            "WHERE id = ?1 AND state = 2 AND owner = ?2"));
        q.Text(1, id).Text(2, replica);
        FETCHD_RETURN_IF_ERROR(q.Run());
      }
      if (conn.Changes() > 0) {
        FETCHD_RETURN_IF_ERROR(AppendEvent(conn, id, now));
      }
    }
    return txn.Commit();
  }

  absl::Status CommitResults(const Commit& commit) override
      ABSL_LOCKS_EXCLUDED(write_mu_) {
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    // Inside the transaction: no other writer can take the lease between
    // this check and the commit.
    FETCHD_RETURN_IF_ERROR(CheckLease(conn, commit.job_id, commit.replica));
    Counts added;
    {
      // One statement for all rows; an index already there keeps its first
      // result, and only rows actually inserted count.
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare("INSERT INTO results (job_id, idx, failed, "
                          "body_bytes, data) VALUES (?1, ?2, ?3, ?4, ?5) "
                          "ON CONFLICT DO NOTHING"));
      for (const ResultRow& row : commit.rows) {
        q.Text(1, commit.job_id)
            .Int(2, row.index)
            .Int(3, row.failed ? 1 : 0)
            .Int(4, row.body_bytes)
            .Blob(5, row.data);
        FETCHD_RETURN_IF_ERROR(q.Run());
        if (conn.Changes() > 0) {
          ++added.done;
          if (row.failed) ++added.failed;
          added.bytes += row.body_bytes;
        }
        q.Reset();
      }
    }
    {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare(
                 "UPDATE jobs SET done = done + ?2, failed = failed + ?3, "
                 "bytes = bytes + ?4, total = coalesce(?5, total), "
                 "checkpoint = CASE WHEN length(?6) > 0 THEN ?6 "
                 "ELSE checkpoint END, seq = seq + 1 WHERE id = ?1"));
      q.Text(1, commit.job_id)
          .Int(2, added.done)
          .Int(3, added.failed)
          .Int(4, added.bytes);
      if (commit.total.has_value()) {
        q.Int(5, *commit.total);
      } else {
        q.Null(5);
      }
      q.Blob(6, commit.checkpoint);
      FETCHD_RETURN_IF_ERROR(q.Run());
    }
    FETCHD_RETURN_IF_ERROR(AppendEvent(conn, commit.job_id, commit.now));
    if (commit.delivery.has_value()) {
      FETCHD_RETURN_IF_ERROR(
          InsertDelivery(conn, commit.job_id, *commit.delivery, commit.now));
    }
    return txn.Commit();
  }

  absl::StatusOr<std::vector<int64_t>> ResultIndexes(
      absl::string_view job_id) override ABSL_LOCKS_EXCLUDED(read_mu_) {
    absl::MutexLock lock(&read_mu_);
    FETCHD_ASSIGN_OR_RETURN(
        q, reader_->Prepare(
               "SELECT idx FROM results WHERE job_id = ?1 ORDER BY idx"));
    q.Text(1, job_id);
    std::vector<int64_t> indexes;
    for (;;) {
      FETCHD_ASSIGN_OR_RETURN(row, q.Step());
      if (!row) break;
      indexes.push_back(q.ColInt(0));
    }
    return indexes;
  }

  absl::Status Finish(absl::string_view job_id, absl::string_view replica,
                      State state, const absl::Status& error,
                      std::optional<Delivery> delivery, absl::Time now) override
      ABSL_LOCKS_EXCLUDED(write_mu_) {
    if (!IsTerminal(state)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Finish: state ", static_cast<int>(state),
                       " is not a terminal state"));
    }
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    FETCHD_RETURN_IF_ERROR(CheckLease(conn, job_id, replica));
    {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare("UPDATE jobs SET state = ?2, error_code = ?3, "
                          "error_message = ?4, finished_at = ?5, "
                          "expires_at = ?5 + ttl_us, owner = '', "
                          "lease_until = NULL, seq = seq + 1 WHERE id = ?1"));
      q.Text(1, job_id)
          .Int(2, static_cast<int>(state))
          .Int(3, static_cast<int>(error.code()))
          .Text(4, error.message())
          .Int(5, Micros(now));
      FETCHD_RETURN_IF_ERROR(q.Run());
    }
    FETCHD_RETURN_IF_ERROR(AppendEvent(conn, job_id, now));
    if (delivery.has_value()) {
      FETCHD_RETURN_IF_ERROR(InsertDelivery(conn, job_id, *delivery, now));
    }
    return txn.Commit();
  }

  absl::StatusOr<std::vector<ResultRow>> Results(
      absl::string_view identity, absl::string_view id, int64_t after_index,
      int max_rows, int64_t max_bytes, absl::Time now) override
      ABSL_LOCKS_EXCLUDED(read_mu_) {
    absl::MutexLock lock(&read_mu_);
    Conn& conn = *reader_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/false));
    FETCHD_ASSIGN_OR_RETURN(job, VisibleJob(conn, identity, id, now));
    std::vector<ResultRow> rows;
    if (max_rows <= 0) return rows;
    FETCHD_ASSIGN_OR_RETURN(
        q, conn.Prepare("SELECT idx, failed, body_bytes, data FROM results "
                        "WHERE job_id = ?1 AND idx > ?2 ORDER BY idx "
                        "LIMIT ?3"));
    q.Text(1, job.id).Int(2, after_index).Int(3, max_rows);
    int64_t bytes = 0;
    for (;;) {
      FETCHD_ASSIGN_OR_RETURN(row, q.Step());
      if (!row) break;
      ResultRow result;
      result.index = q.ColInt(0);
      result.failed = q.ColInt(1) != 0;
      result.body_bytes = q.ColInt(2);
      result.data = q.ColStr(3);
      if (!rows.empty() && max_bytes > 0 &&
          bytes + static_cast<int64_t>(result.data.size()) > max_bytes) {
        break;
      }
      bytes += static_cast<int64_t>(result.data.size());
      rows.push_back(std::move(result));
    }
    return rows;
  }

  absl::StatusOr<std::vector<Event>> Events(absl::string_view identity,
                                            absl::string_view id,
                                            int64_t after_seq, int max_events,
                                            absl::Time now) override
      ABSL_LOCKS_EXCLUDED(read_mu_) {
    absl::MutexLock lock(&read_mu_);
    Conn& conn = *reader_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/false));
    FETCHD_ASSIGN_OR_RETURN(job, VisibleJob(conn, identity, id, now));
    std::vector<Event> events;
    if (max_events <= 0) return events;
    FETCHD_ASSIGN_OR_RETURN(
        q, conn.Prepare("SELECT seq, state, total, done, failed, bytes, time, "
                        "error_code, error_message FROM events "
                        "WHERE job_id = ?1 AND seq > ?2 ORDER BY seq "
                        "LIMIT ?3"));
    q.Text(1, job.id).Int(2, after_seq).Int(3, max_events);
    for (;;) {
      FETCHD_ASSIGN_OR_RETURN(row, q.Step());
      if (!row) break;
      Event event;
      event.seq = q.ColInt(0);
      event.state = static_cast<State>(q.ColInt(1));
      event.counts.total = q.ColInt(2);
      event.counts.done = q.ColInt(3);
      event.counts.failed = q.ColInt(4);
      event.counts.bytes = q.ColInt(5);
      event.time = q.ColTime(6);
      event.error_code = static_cast<int>(q.ColInt(7));
      event.error_message = q.ColStr(8);
      events.push_back(std::move(event));
    }
    return events;
  }

  absl::StatusOr<std::vector<Delivery>> ClaimDeliveries(
      absl::string_view replica, int max, absl::Duration lease,
      absl::Time now) override ABSL_LOCKS_EXCLUDED(write_mu_) {
    std::vector<Delivery> claimed;
    if (max <= 0) return claimed;
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    std::vector<int64_t> ids;
    {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare("SELECT id FROM deliveries WHERE state = 1 AND "
                          "next_attempt_at <= ?1 AND (lease_until IS NULL OR "
                          "lease_until <= ?1) ORDER BY id LIMIT ?2"));
      q.Int(1, Micros(now)).Int(2, max);
      for (;;) {
        FETCHD_ASSIGN_OR_RETURN(row, q.Step());
        if (!row) break;
        ids.push_back(q.ColInt(0));
      }
    }
    for (int64_t id : ids) {
      {
        FETCHD_ASSIGN_OR_RETURN(
            q, conn.Prepare("UPDATE deliveries SET owner = ?2, "
                            "lease_until = ?3 WHERE id = ?1"));
        q.Int(1, id).Text(2, replica).Int(3, Micros(now + lease));
        FETCHD_RETURN_IF_ERROR(q.Run());
      }
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare(
                 "SELECT d.id, d.job_id, d.event, d.body, d.state, d.attempts, "
                 "d.last_error, d.next_attempt_at, j.webhook_url, "
                 "j.webhook_secret, j.webhook_secret_id, j.webhook_progress "
                 "FROM deliveries d JOIN jobs j ON j.id = d.job_id "
                 "WHERE d.id = ?1"));
      q.Int(1, id);
      FETCHD_ASSIGN_OR_RETURN(row, q.Step());
      if (!row) continue;
      Delivery d = ReadDelivery(q);
      d.webhook.url = q.ColStr(8);
      d.webhook.secret = q.ColStr(9);
      d.webhook.secret_id = q.ColStr(10);
      d.webhook.progress = q.ColInt(11) != 0;
      claimed.push_back(std::move(d));
    }
    FETCHD_RETURN_IF_ERROR(txn.Commit());
    return claimed;
  }

  absl::Status RecordDelivery(const Delivery& delivery) override
      ABSL_LOCKS_EXCLUDED(write_mu_) {
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(
        q, conn.Prepare("UPDATE deliveries SET state = ?2, attempts = ?3, "
                        "last_error = ?4, next_attempt_at = ?5, owner = '', "
                        "lease_until = NULL WHERE id = ?1"));
    q.Int(1, delivery.id)
        .Int(2, static_cast<int>(delivery.state))
        .Int(3, delivery.attempts)
        .Text(4, delivery.last_error)
        .Int(5, delivery.next_attempt_at == absl::InfinitePast()
                    ? 0
                    : Micros(delivery.next_attempt_at));
    FETCHD_RETURN_IF_ERROR(q.Run());
    if (conn.Changes() == 0) {
      return absl::NotFoundError(absl::StrCat(
          "delivery ", delivery.id, " not found (its job was deleted)"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int> Sweep(absl::Time now, int max_jobs) override
      ABSL_LOCKS_EXCLUDED(write_mu_) {
    if (max_jobs <= 0) return 0;
    absl::MutexLock lock(&write_mu_);
    Conn& conn = *writer_;
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    std::vector<std::string> ids;
    {
      FETCHD_ASSIGN_OR_RETURN(
          q, conn.Prepare("SELECT id FROM jobs WHERE state >= 3 AND "
                          "expires_at <= ?1 ORDER BY expires_at LIMIT ?2"));
      q.Int(1, Micros(now)).Int(2, max_jobs);
      for (;;) {
        FETCHD_ASSIGN_OR_RETURN(row, q.Step());
        if (!row) break;
        ids.push_back(q.ColStr(0));
      }
    }
    for (const std::string& id : ids) {
      FETCHD_RETURN_IF_ERROR(DeleteJob(conn, id));
    }
    FETCHD_RETURN_IF_ERROR(txn.Commit());
    return static_cast<int>(ids.size());
  }

  absl::StatusOr<int64_t> StoreBytes() override ABSL_LOCKS_EXCLUDED(read_mu_) {
    absl::MutexLock lock(&read_mu_);
    return UsedBytes(*reader_);
  }

  absl::Status Ping() override ABSL_LOCKS_EXCLUDED(read_mu_) {
    absl::MutexLock lock(&read_mu_);
    absl::StatusOr<int64_t> one = reader_->QueryInt("SELECT 1");
    if (!one.ok()) return absl::UnavailableError(one.status().message());
    return absl::OkStatus();
  }

 private:
  // Results, events and deliveries go with it (ON DELETE CASCADE).
  static absl::Status DeleteJob(Conn& conn, absl::string_view id) {
    FETCHD_ASSIGN_OR_RETURN(q, conn.Prepare("DELETE FROM jobs WHERE id = ?1"));
    q.Text(1, id);
    return q.Run();
  }

  absl::Mutex write_mu_;
  std::unique_ptr<Conn> writer_ ABSL_GUARDED_BY(write_mu_);
  absl::Mutex read_mu_;
  std::unique_ptr<Conn> reader_ ABSL_GUARDED_BY(read_mu_);
};

// Applies the migrations this build knows, one transaction each.
absl::Status Migrate(Conn& conn) {
  for (;;) {
    FETCHD_ASSIGN_OR_RETURN(txn, Txn::Begin(conn, /*write=*/true));
    // Read inside the write transaction: another process may have migrated.
    FETCHD_ASSIGN_OR_RETURN(version, conn.QueryInt("PRAGMA user_version"));
    if (version > kSchemaVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("sqlite job store ", conn.path(), " has schema version ",
                       version, ", newer than this build's ", kSchemaVersion,
                       ": run a newer fetchd on it, or another --job_store"));
    }
    if (version == kSchemaVersion) return absl::OkStatus();
    FETCHD_RETURN_IF_ERROR(conn.Exec(
        kMigrations[version], absl::StrCat("schema migration ", version + 1)));
    FETCHD_RETURN_IF_ERROR(
        conn.Exec(absl::StrCat("PRAGMA user_version = ", version + 1).c_str(),
                  "set user_version"));
    FETCHD_RETURN_IF_ERROR(txn.Commit());
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteStore(
    const std::string& path, const StoreOptions& options) {
  FETCHD_ASSIGN_OR_RETURN(
      writer, Conn::Open(path, /*read_only=*/false, options.busy_timeout));
  // WAL: readers never block the writer nor wait for it. synchronous=NORMAL
  // syncs the WAL only at checkpoints, not at each commit: a commit can be
  // lost to a power failure or an OS crash, but never to the process dying
  // (SIGKILL included), since the commit is in the OS's page cache once
  // write() returns. That is the crash we promise to survive; FULL would
  // cost an fsync per CommitResults.
  {
    FETCHD_ASSIGN_OR_RETURN(q, writer->Prepare("PRAGMA journal_mode = WAL"));
    FETCHD_ASSIGN_OR_RETURN(row, q.Step());
    std::string mode = row ? q.ColStr(0) : "";
    if (mode != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat("sqlite job store ", path,
                       ": cannot switch to WAL mode (journal_mode is ", mode,
                       "); is it on a file system without shared memory?"));
    }
  }
  FETCHD_RETURN_IF_ERROR(writer->Exec(
      "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;", "pragmas"));
  FETCHD_RETURN_IF_ERROR(Migrate(*writer));
  FETCHD_ASSIGN_OR_RETURN(
      reader, Conn::Open(path, /*read_only=*/true, options.busy_timeout));
  return std::make_unique<SqliteStore>(std::move(writer), std::move(reader));
}

#undef FETCHD_ASSIGN_OR_RETURN
#undef FETCHD_RETURN_IF_ERROR

}  // namespace fetchd::jobs
