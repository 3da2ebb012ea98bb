// The SQLite JobStore: the conformance suite on a temp-dir file, and what
// only SQLite has (WAL, corrupt files, schema versions, reopening).
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/jobs/store.h"
#include "tests/jobs/store_conformance.h"
#include "tests/support/certs.h"

namespace fetchd::jobs {
namespace {

using ::fetchd::jobs::testing::JobStoreConformance;
using ::fetchd::jobs::testing::StoreFactory;

// One directory for the binary's conformance stores; each test opens a new
// file in it.
const ::fetchd::testing::TempDir& SuiteDir() {
  static auto* dir = new ::fetchd::testing::TempDir();
  return *dir;
}

INSTANTIATE_TEST_SUITE_P(Sqlite, JobStoreConformance,
                         ::testing::Values(StoreFactory([] {
                           static int n = 0;
                           return OpenSqliteStore(
                               SuiteDir().File(absl::StrCat("c", ++n, ".db")),
                               StoreOptions{});
                         })));

using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

NewJob MakeJob(const std::string& identity, const std::string& key = "") {
  NewJob job;
  job.id = NewJobId();
  job.identity = identity;
  job.idempotency_key = key;
  job.request = "request";
  job.request_hash = "hash";
  job.total = 10;
  job.ttl = absl::Hours(1);
  job.now = kT0;
  return job;
}

// A raw connection to look under the store (pragmas, versions).
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    EXPECT_EQ(sqlite3_open(path.c_str(), &db_), SQLITE_OK);
    sqlite3_busy_timeout(db_, 5000);
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  void Exec(const std::string& sql) {
    char* error = nullptr;
    EXPECT_EQ(sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error),
              SQLITE_OK)
        << sql << ": " << (error ? error : "");
    sqlite3_free(error);
  }
  std::string Text(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr),
              SQLITE_OK);
    std::string value;
    if (sqlite3_step(stmt) == SQLITE_ROW) {
      const unsigned char* text = sqlite3_column_text(stmt, 0);
      if (text != nullptr) value = reinterpret_cast<const char*>(text);
    }
    sqlite3_finalize(stmt);
    return value;
  }

 private:
  sqlite3* db_ = nullptr;
};

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

class SqliteStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<JobStore> Open(const StoreOptions& options = {}) {
    absl::StatusOr<std::unique_ptr<JobStore>> store =
        OpenSqliteStore(path_, options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  ::fetchd::testing::TempDir dir_;
  std::string path_ = dir_.File("jobs.db");
};

TEST_F(SqliteStoreTest, OpensInWalModeWithTheSchemaVersion) {
  std::unique_ptr<JobStore> store = Open();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->backend(), "sqlite");
  RawDb raw(path_);
  EXPECT_EQ(raw.Text("PRAGMA journal_mode"), "wal");
  EXPECT_EQ(raw.Text("PRAGMA user_version"), "1");
  EXPECT_EQ(
      raw.Text("SELECT group_concat(name) FROM (SELECT name FROM sqlite_master "
               "WHERE type = 'table' ORDER BY name)"),
      "deliveries,events,jobs,results");
  struct stat st {};
  EXPECT_EQ(stat((path_ + "-wal").c_str(), &st), 0);
}

TEST_F(SqliteStoreTest, OpenJobStoreTakesTheSqliteScheme) {
  absl::StatusOr<std::unique_ptr<JobStore>> store =
      OpenJobStore("sqlite:" + path_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->backend(), "sqlite");
  EXPECT_TRUE((*store)->Ping().ok());
  EXPECT_EQ(OpenJobStore("sqlite:").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SqliteStoreTest, ACorruptFileIsRefusedWithHowToMoveItAside) {
  for (const std::string& contents :
       {std::string(4096, '\x5a'), std::string("SQLite format 3\0\x10", 18),
        std::string("garbage")}) {
    WriteFile(path_, contents);
    absl::StatusOr<std::unique_ptr<JobStore>> store =
        OpenSqliteStore(path_, {});
    EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition)
        << store.status();
    EXPECT_THAT(store.status().message(), HasSubstr(path_));
    EXPECT_THAT(store.status().message(),
                HasSubstr("mv " + path_ + " " + path_ + ".corrupt"));
    std::remove(path_.c_str());
  }
}

TEST_F(SqliteStoreTest, AMissingDirectoryIsNamedNotCreated) {
  std::string path = dir_.File("no/such/dir/jobs.db");
  absl::StatusOr<std::unique_ptr<JobStore>> store = OpenSqliteStore(path, {});
  EXPECT_FALSE(store.ok());
  EXPECT_THAT(store.status().message(), HasSubstr(path));
  EXPECT_THAT(store.status().message(), HasSubstr("does not exist"));
  struct stat st {};
  EXPECT_NE(stat(dir_.File("no").c_str(), &st), 0);
  // A directory where the file should be.
  absl::StatusOr<std::unique_ptr<JobStore>> dir =
      OpenSqliteStore(dir_.path(), {});
  EXPECT_FALSE(dir.ok());
  EXPECT_THAT(dir.status().message(), HasSubstr(dir_.path()));
}

TEST_F(SqliteStoreTest, ANewerSchemaIsRefused) {
  ASSERT_NE(Open(), nullptr);
  {
    RawDb raw(path_);
    raw.Exec("PRAGMA user_version = 99");
  }
  absl::StatusOr<std::unique_ptr<JobStore>> store = OpenSqliteStore(path_, {});
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr(path_));
  EXPECT_THAT(store.status().message(), HasSubstr("schema version 99"));
  EXPECT_THAT(store.status().message(), HasSubstr("this build's 1"));
}

TEST_F(SqliteStoreTest, ReopeningKeepsEverythingCommitted) {
  NewJob job = MakeJob("alice", "k");
  {
    std::unique_ptr<JobStore> store = Open();
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Create(job, {}).ok());
    ASSERT_TRUE(store->Claim("r1", 1, absl::Minutes(1), kT0).ok());
    Commit commit{
        job.id,       "r1", {{0, false, 5, "zero"}, {1, true, 0, "one"}},
        std::nullopt, "cp", std::nullopt,
        kT0};
    ASSERT_TRUE(store->CommitResults(commit).ok());
  }
  std::unique_ptr<JobStore> store = Open();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<Job> got = store->Get("alice", job.id, kT0);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->state, State::kRunning);
  EXPECT_EQ(got->counts.done, 2);
  EXPECT_EQ(got->checkpoint, "cp");
  absl::StatusOr<std::vector<int64_t>> indexes = store->ResultIndexes(job.id);
  ASSERT_TRUE(indexes.ok());
  EXPECT_EQ(*indexes, (std::vector<int64_t>{0, 1}));
  // The key still maps to the job.
  absl::StatusOr<Created> again = store->Create(job, {});
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
}

TEST_F(SqliteStoreTest, TwoStoresOnOneFileShareJobsAndNeverDoubleClaim) {
  std::unique_ptr<JobStore> a = Open();
  std::unique_ptr<JobStore> b = Open();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  NewJob job = MakeJob("alice");
  ASSERT_TRUE(a->Create(job, {}).ok());
  absl::StatusOr<Job> seen = b->Get("alice", job.id, kT0);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->id, job.id);

  for (int i = 0; i < 30; ++i) ASSERT_TRUE(a->Create(MakeJob("bob"), {}).ok());
  absl::Mutex mu;
  std::set<std::string> claimed;
  int total = 0;
  std::vector<std::thread> threads;
  for (JobStore* store : {a.get(), b.get(), a.get(), b.get()}) {
    threads.emplace_back([&, store] {
      for (;;) {
        absl::StatusOr<std::vector<Job>> got =
            store->Claim("r", 2, absl::Minutes(1), kT0);
        ASSERT_TRUE(got.ok()) << got.status();
        if (got->empty()) return;
        absl::MutexLock lock(&mu);
        for (const Job& j : *got) claimed.insert(j.id);
        total += static_cast<int>(got->size());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(total, 31);
  EXPECT_EQ(claimed.size(), 31u);

  // One idempotency key through two store objects: one job.
  absl::StatusOr<Created> first = a->Create(MakeJob("carol", "k"), {});
  absl::StatusOr<Created> second = b->Create(MakeJob("carol", "k"), {});
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_TRUE(first->created);
  EXPECT_FALSE(second->created);
  EXPECT_EQ(first->job.id, second->job.id);
}

TEST_F(SqliteStoreTest, ReadersDoNotWaitForAWriterAndWritersHonourBusyTimeout) {
  StoreOptions options;
  options.busy_timeout = absl::Seconds(1);
  std::unique_ptr<JobStore> store = Open(options);
  ASSERT_NE(store, nullptr);
  NewJob job = MakeJob("alice");
  ASSERT_TRUE(store->Create(job, {}).ok());
  RawDb other(path_);
  other.Exec("BEGIN IMMEDIATE");  // another process holds the write lock
  absl::Time start = absl::Now();
  absl::StatusOr<Job> got = store->Get("alice", job.id, kT0);
  EXPECT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(store->Events("alice", job.id, 0, 10, kT0).ok());
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(500));
  absl::StatusOr<Created> blocked = store->Create(MakeJob("alice"), {});
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kUnavailable)
      << blocked.status();
  EXPECT_GE(absl::Now() - start, absl::Seconds(1));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  other.Exec("ROLLBACK");
  EXPECT_TRUE(store->Create(MakeJob("alice"), {}).ok());
}

// What the crash test of fetchd relies on: a process SIGKILLed while it
// commits (synchronous=NORMAL) loses no commit it saw succeed, and leaves no
// half-written one.
TEST_F(SqliteStoreTest, ASigkilledWriterLosesNothingCommitted) {
  constexpr int kRows = 500;
  const std::string job_id = NewJobId();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    absl::StatusOr<std::unique_ptr<JobStore>> store =
        OpenSqliteStore(path_, {});
    if (!store.ok()) _exit(2);
    NewJob job = MakeJob("alice");
    job.id = job_id;
    if (!(*store)->Create(job, {}).ok()) _exit(3);
    if (!(*store)->Claim("r1", 1, absl::Hours(1), kT0).ok()) _exit(4);
    for (int64_t batch = 0;; ++batch) {
      Commit commit{job_id, "r1", {}, std::nullopt, "", std::nullopt, kT0};
      for (int r = 0; r < kRows; ++r) {
        commit.rows.push_back(
            {batch * kRows + r, false, 1, std::string(300, 'x')});
      }
      if (!(*store)->CommitResults(commit).ok()) _exit(5);
      // Reported only once committed.
      if (write(fds[1], &batch, sizeof(batch)) != sizeof(batch)) _exit(6);
    }
  }
  close(fds[1]);
  int64_t last = -1;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (last < 20 && absl::Now() < deadline) {
    int64_t batch = 0;
    if (read(fds[0], &batch, sizeof(batch)) != sizeof(batch)) break;
    last = batch;
  }
  kill(child, SIGKILL);  // mid-commit, most likely
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFSIGNALED(status)) << "child exited with " << status;
  for (int64_t batch = 0;
       read(fds[0], &batch, sizeof(batch)) == sizeof(batch);) {
    last = batch;  // committed before the kill
  }
  close(fds[0]);
  ASSERT_GE(last, 20);

  std::unique_ptr<JobStore> store = Open();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<Job> job = store->Get("alice", job_id, kT0);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_GE(job->counts.done, (last + 1) * kRows);
  EXPECT_EQ(job->counts.done % kRows, 0);  // whole batches only
  absl::StatusOr<std::vector<int64_t>> indexes = store->ResultIndexes(job_id);
  ASSERT_TRUE(indexes.ok());
  ASSERT_EQ(static_cast<int64_t>(indexes->size()), job->counts.done);
  for (size_t i = 0; i < indexes->size(); ++i) {
    ASSERT_EQ((*indexes)[i], static_cast<int64_t>(i));
  }
  RawDb raw(path_);
  EXPECT_EQ(raw.Text("PRAGMA integrity_check"), "ok");
}

// The commit rate the job path relies on: 500-row batches of ~300-byte
// results. Printed for docs; the bound is far below the measured rate so a
// loaded machine does not flake it.
TEST_F(SqliteStoreTest, CommitResultsRate) {
  std::unique_ptr<JobStore> store = Open();
  ASSERT_NE(store, nullptr);
  constexpr int kBatches = 200, kRows = 500;
  NewJob job = MakeJob("alice");
  job.total = kBatches * kRows;
  ASSERT_TRUE(store->Create(job, {}).ok());
  ASSERT_TRUE(store->Claim("r1", 1, absl::Hours(1), kT0).ok());
  std::vector<Commit> commits;
  for (int b = 0; b < kBatches; ++b) {
    Commit commit{job.id, "r1", {}, std::nullopt, "", std::nullopt, kT0};
    for (int r = 0; r < kRows; ++r) {
      int64_t index = int64_t{b} * kRows + r;
      commit.rows.push_back(
          {index, false, 1000,
           std::string(300, static_cast<char>('a' + r % 26))});
    }
    commits.push_back(std::move(commit));
  }
  absl::Time start = absl::Now();
  for (const Commit& commit : commits) {
    ASSERT_TRUE(store->CommitResults(commit).ok());
  }
  absl::Duration took = absl::Now() - start;
  double rate = kBatches * kRows / absl::ToDoubleSeconds(took);
  absl::StatusOr<int64_t> bytes = store->StoreBytes();
  ASSERT_TRUE(bytes.ok());
  std::printf(
      "CommitResults: %d rows in %s: %.0f rows/s; store %.0f bytes/row\n",
      kBatches * kRows, absl::FormatDuration(took).c_str(), rate,
      static_cast<double>(*bytes) / (kBatches * kRows));
  EXPECT_GT(rate, 20'000);
  absl::StatusOr<Job> got = store->Get("alice", job.id, kT0);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->counts.done, kBatches * kRows);
  EXPECT_EQ(got->counts.bytes, int64_t{1000} * kBatches * kRows);
}

}  // namespace
}  // namespace fetchd::jobs
