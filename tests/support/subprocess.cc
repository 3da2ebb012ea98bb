#include "tests/support/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace fetchd::testing {

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(
    const std::vector<std::string>& argv) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  if (pipe2(err, O_CLOEXEC) != 0) {
    close(out[0]);
    close(out[1]);
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int spawned =
      posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  close(err[1]);
  if (spawned != 0) {
    close(out[0]);
    close(err[0]);
    return absl::InternalError(
        absl::StrCat("spawn ", argv[0], ": ", std::strerror(spawned)));
  }
  return std::unique_ptr<Subprocess>(new Subprocess(pid, out[0], err[0]));
}

Subprocess::Subprocess(pid_t pid, int out_fd, int err_fd)
    : pid_(pid), fds_{out_fd, err_fd} {}

Subprocess::~Subprocess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  for (int fd : fds_) {
    if (fd >= 0) close(fd);
  }
}

bool Subprocess::ReadSome(absl::Time deadline) {
  pollfd polls[2] = {{fds_[0], POLLIN, 0}, {fds_[1], POLLIN, 0}};
  if (fds_[0] < 0 && fds_[1] < 0) return false;
  const int64_t left_ms =
      std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
  if (poll(polls, 2, static_cast<int>(left_ms)) < 0 && errno != EINTR) {
    return false;
  }
  std::string* sinks[2] = {&result_.out, &result_.err};
  for (int i = 0; i < 2; ++i) {
    if (fds_[i] < 0 || polls[i].revents == 0) continue;
    char buf[4096];
    const ssize_t n = read(fds_[i], buf, sizeof buf);
    if (n > 0) {
      sinks[i]->append(buf, n);
    } else {
      close(fds_[i]);
      fds_[i] = -1;
    }
  }
  return true;
}

absl::StatusOr<std::string> Subprocess::WaitForStderr(const std::string& needle,
                                                      absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (result_.err.find(needle) == std::string::npos) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no \"", needle, "\" on stderr within ",
          absl::FormatDuration(timeout), "; stderr: ", result_.err));
    }
    if (!ReadSome(deadline)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "output closed before \"", needle, "\"; stderr: ", result_.err));
    }
  }
  return result_.err;
}

void Subprocess::Signal(int signal_number) {
  if (!reaped_) kill(pid_, signal_number);
}

absl::StatusOr<ProcessResult> Subprocess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (fds_[0] >= 0 || fds_[1] >= 0) {
    if (absl::Now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      reaped_ = true;
      return absl::DeadlineExceededError(
          absl::StrCat("still running after ", absl::FormatDuration(timeout),
                       "; stderr: ", result_.err));
    }
    ReadSome(deadline);
  }
  int status = 0;
  waitpid(pid_, &status, 0);
  reaped_ = true;
  if (WIFEXITED(status)) result_.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result_.signal = WTERMSIG(status);
  return result_;
}

std::vector<std::string> Lines(absl::string_view text) {
  return absl::StrSplit(text, '\n', absl::SkipEmpty());
}

absl::StatusOr<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                         absl::Duration timeout) {
  auto process = Subprocess::Start(argv);
  if (!process.ok()) return process.status();
  return (*process)->Wait(timeout);
}

TempFile::TempFile() : file_(std::tmpfile()) {}

TempFile::~TempFile() {
  if (file_ != nullptr) std::fclose(file_);
}

std::string TempFile::Text() {
  std::string text;
  if (file_ == nullptr) return text;
  std::fflush(file_);
  std::rewind(file_);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), file_)) > 0) text.append(buf, n);
  return text;
}

}  // namespace fetchd::testing
