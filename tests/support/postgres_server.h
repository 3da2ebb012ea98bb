// Test support: a private PostgreSQL 15 server (Debian's `postgresql`
// package) in a temp dir, on a free loopback port, for the tests of the
// PostgreSQL job store. It never touches the package's own `main` cluster.
//
// initdb refuses to run as root (CI runs as root), so as root the data dir
// belongs to the `postgres` user and the binaries run through runuser;
// otherwise they run as the current user. Every step has a deadline.
//
//   FETCHD_REQUIRE_POSTGRES();  // skips (or, under CI, fails) without it
//   auto server = PostgresServer::Create();
//   ASSERT_TRUE(server.ok()) << server.status();
//   OpenPostgresStore((*server)->conninfo(), {});
#ifndef FETCHD_TESTS_SUPPORT_POSTGRES_SERVER_H_
#define FETCHD_TESTS_SUPPORT_POSTGRES_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace fetchd::testing {

// Empty when the PostgreSQL server binaries are installed; otherwise what is
// missing and how to install it (scripts/deps.sh test).
std::string PostgresMissingReason();

// In a TEST body or SetUp: skips the test with a clear message when the
// binaries are absent, except under CI (env CI set), where a skip would hide
// the PostgreSQL tests: there it fails loudly.
#define FETCHD_REQUIRE_POSTGRES()                                      \
  do {                                                                 \
    const std::string fetchd_pg_missing =                              \
        ::fetchd::testing::PostgresMissingReason();                    \
    if (!fetchd_pg_missing.empty()) {                                  \
      if (::fetchd::testing::PostgresRequiredByCi()) {                 \
        FAIL() << "CI is set but PostgreSQL is missing: "              \
               << fetchd_pg_missing;                                   \
      }                                                                \
      GTEST_SKIP() << "SKIPPED, no PostgreSQL: " << fetchd_pg_missing; \
    }                                                                  \
  } while (0)

// True when the environment says CI (the PostgreSQL tests must run there).
bool PostgresRequiredByCi();

class PostgresServer {
 public:
  // initdb + start. Each step is bounded by `step_timeout`.
  static absl::StatusOr<std::unique_ptr<PostgresServer>> Create(
      absl::Duration step_timeout = absl::Seconds(60));
  // Stops the server (fast) and removes its directory.
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // postgresql://fetchd@127.0.0.1:PORT/postgres (the superuser `fetchd`).
  std::string conninfo() const { return conninfo("postgres"); }
  // The same server, database `dbname`.
  std::string conninfo(const std::string& dbname) const;
  int port() const { return port_; }
  const std::string& dir() const { return dir_; }

  // Stops the server (pg_ctl -m fast); Start() brings it back on the same
  // data dir and port ("PostgreSQL down at run time" tests).
  absl::Status Stop();
  absl::Status Start();
  bool running() const { return running_; }

  // Runs `sql` with psql against `dbname` (CREATE DATABASE and such).
  absl::Status Psql(const std::string& sql,
                    const std::string& dbname = "postgres");
  // A new, empty database; returns its conninfo.
  absl::StatusOr<std::string> CreateDatabase(const std::string& name);
  // A new, empty schema in database `postgres`; returns a conninfo whose
  // search_path is that schema. Much cheaper than a database (no 7 MB
  // template copy to write and sync): use one per test.
  absl::StatusOr<std::string> CreateSchema(const std::string& name);

  // The server's log so far (for failure messages).
  std::string Log() const;

 private:
  PostgresServer() = default;
  // argv for a PostgreSQL binary run as the data dir's owner.
  std::vector<std::string> Command(const std::string& binary,
                                   const std::vector<std::string>& args) const;
  absl::Status StartOnPort(int port);

  std::string dir_;
  bool as_postgres_user_ = false;  // root: run binaries via runuser
  int port_ = 0;
  bool running_ = false;
  absl::Duration step_timeout_;
};

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_POSTGRES_SERVER_H_
