#include "tests/support/postgres_server.h"

#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "tests/support/subprocess.h"

namespace fetchd::testing {
namespace {

constexpr char kBinDir[] = "/usr/lib/postgresql/15/bin";
constexpr char kRunuser[] = "/usr/sbin/runuser";
constexpr char kEnv[] = "/usr/bin/env";
constexpr int kPortAttempts = 5;

std::string Bin(const std::string& name) {
  return absl::StrCat(kBinDir, "/", name);
}

// A loopback port nobody listens on right now (bound, then released: the
// server may still lose a race for it, hence the retries in Create).
absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError("bind 127.0.0.1:0 failed");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

absl::Status RunStep(const std::vector<std::string>& argv,
                     absl::Duration timeout) {
  absl::StatusOr<ProcessResult> result = RunProcess(argv, timeout);
  std::string command;
  for (const std::string& a : argv) absl::StrAppend(&command, " ", a);
  if (!result.ok()) {
    return absl::Status(result.status().code(),
                        absl::StrCat(command, ": ", result.status().message()));
  }
  if (result->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat(command, " exited ", result->exit_code, " (signal ",
                     result->signal, "): ", result->out, result->err));
  }
  return absl::OkStatus();
}

}  // namespace

std::string PostgresMissingReason() {
  for (const char* binary : {"initdb", "pg_ctl", "postgres", "psql"}) {
    if (access(Bin(binary).c_str(), X_OK) != 0) {
      return absl::StrCat(Bin(binary),
                          " is missing: install Debian's postgresql 15 "
                          "(scripts/deps.sh test)");
    }
  }
  if (geteuid() == 0) {
    if (getpwnam("postgres") == nullptr) {
      return "running as root and there is no `postgres` user to run initdb "
             "as (install Debian's postgresql: scripts/deps.sh test)";
    }
    if (access(kRunuser, X_OK) != 0) {
      return absl::StrCat("running as root and ", kRunuser, " is missing");
    }
  }
  return "";
}

bool PostgresRequiredByCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && *ci != '\0' && std::string(ci) != "0" &&
         std::string(ci) != "false";
}

std::vector<std::string> PostgresServer::Command(
    const std::string& binary, const std::vector<std::string>& args) const {
  std::vector<std::string> argv;
  if (as_postgres_user_) {
    argv = {kRunuser, "-u", "postgres", "--"};
  }
  // The server's user may not be allowed into the test's working directory
  // (root's home): start from the data dir's parent.
  argv.insert(argv.end(), {kEnv, "-C", dir_, Bin(binary)});
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

absl::StatusOr<std::unique_ptr<PostgresServer>> PostgresServer::Create(
    absl::Duration step_timeout) {
  if (std::string missing = PostgresMissingReason(); !missing.empty()) {
    return absl::FailedPreconditionError(missing);
  }
  std::unique_ptr<PostgresServer> server(new PostgresServer());
  server->step_timeout_ = step_timeout;
  server->as_postgres_user_ = geteuid() == 0;
  std::string dir_template =
      (std::filesystem::temp_directory_path() / "fetchd-pg-XXXXXX").string();
  if (mkdtemp(dir_template.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", dir_template));
  }
  server->dir_ = dir_template;
  if (server->as_postgres_user_) {
    const passwd* pw = getpwnam("postgres");
    if (chown(server->dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      return absl::InternalError(absl::StrCat("chown postgres ", server->dir_));
    }
  }
  if (absl::Status s = RunStep(
          server->Command("initdb",
                          {"-D", server->dir_ + "/data", "-A", "trust", "-U",
                           "fetchd", "-E", "UTF8", "--locale=C", "--no-sync"}),
          step_timeout);
      !s.ok()) {
    return s;
  }
  // Another process may take the port between FreeLoopbackPort and the
  // server's bind: try a few.
  absl::Status last;
  for (int attempt = 0; attempt < kPortAttempts; ++attempt) {
    absl::StatusOr<int> port = FreeLoopbackPort();
    if (!port.ok()) return port.status();
    last = server->StartOnPort(*port);
    if (last.ok()) return server;
  }
  return absl::Status(
      last.code(), absl::StrCat("PostgreSQL did not start on a free port in ",
                                kPortAttempts, " tries: ", last.message()));
}

absl::Status PostgresServer::StartOnPort(int port) {
  const std::string timeout_s =
      absl::StrCat(std::max<int64_t>(1, absl::ToInt64Seconds(step_timeout_)));
  absl::Status started = RunStep(
      Command("pg_ctl", {"-D", dir_ + "/data", "-o",
                         absl::StrCat("-p ", port, " -k ", dir_,
                                      " -c listen_addresses=127.0.0.1"),
                         "-l", dir_ + "/log", "-w", "-t", timeout_s, "start"}),
      step_timeout_ + absl::Seconds(5));
  if (!started.ok()) {
    return absl::Status(started.code(), absl::StrCat(started.message(),
                                                     "\nserver log:\n", Log()));
  }
  port_ = port;
  running_ = true;
  return absl::OkStatus();
}

absl::Status PostgresServer::Stop() {
  if (!running_) return absl::OkStatus();
  const std::string timeout_s =
      absl::StrCat(std::max<int64_t>(1, absl::ToInt64Seconds(step_timeout_)));
  absl::Status stopped =
      RunStep(Command("pg_ctl", {"-D", dir_ + "/data", "-m", "fast", "-w", "-t",
                                 timeout_s, "stop"}),
              step_timeout_ + absl::Seconds(5));
  if (stopped.ok()) running_ = false;
  return stopped;
}

absl::Status PostgresServer::Start() {
  if (running_) return absl::OkStatus();
  return StartOnPort(port_);
}

PostgresServer::~PostgresServer() {
  if (running_) {
    absl::Status stopped = Stop();
    if (!stopped.ok()) {
      // Last resort: an orphaned postmaster would outlive the test run.
      RunStep(Command("pg_ctl", {"-D", dir_ + "/data", "-m", "immediate", "-w",
                                 "-t", "10", "stop"}),
              absl::Seconds(15))
          .IgnoreError();
      std::fprintf(stderr, "PostgresServer: stop failed: %s\n",
                   std::string(stopped.message()).c_str());
    }
  }
  if (!dir_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
}

std::string PostgresServer::conninfo(const std::string& dbname) const {
  return absl::StrCat("postgresql://fetchd@127.0.0.1:", port_, "/", dbname);
}

absl::Status PostgresServer::Psql(const std::string& sql,
                                  const std::string& dbname) {
  return RunStep({Bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                  conninfo(dbname), "-c", sql},
                 step_timeout_);
}

absl::StatusOr<std::string> PostgresServer::CreateDatabase(
    const std::string& name) {
  if (absl::Status s = Psql(absl::StrCat("CREATE DATABASE \"", name, "\""));
      !s.ok()) {
    return s;
  }
  return conninfo(name);
}

absl::StatusOr<std::string> PostgresServer::CreateSchema(
    const std::string& name) {
  if (absl::Status s = Psql(absl::StrCat("CREATE SCHEMA \"", name, "\""));
      !s.ok()) {
    return s;
  }
  return absl::StrCat(conninfo(), "?options=-csearch_path%3D", name);
}

std::string PostgresServer::Log() const {
  std::ifstream in(dir_ + "/log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace fetchd::testing
