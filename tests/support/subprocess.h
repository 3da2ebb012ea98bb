// Test support: run a program, talk to it through signals, capture what it
// printed. Every wait has a deadline.
#ifndef FETCHD_TESTS_SUPPORT_SUBPROCESS_H_
#define FETCHD_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fetchd::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal (see `signal`)
  int signal = 0;
  std::string out;
  std::string err;
};

// A child process with its stdout and stderr captured. The destructor
// kills (SIGKILL) and reaps a child that is still running.
class Subprocess {
 public:
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(
      const std::vector<std::string>& argv);
  ~Subprocess();

  // Reads output until stderr contains `needle`; returns stderr so far.
  // DEADLINE_EXCEEDED if it does not appear in time, FAILED_PRECONDITION if
  // the child closed its output first.
  absl::StatusOr<std::string> WaitForStderr(const std::string& needle,
                                            absl::Duration timeout);
  void Signal(int signal_number);
  pid_t pid() const { return pid_; }
  // Reads the rest of the output and reaps the child; kills it (and returns
  // DEADLINE_EXCEEDED) if it runs past `timeout`.
  absl::StatusOr<ProcessResult> Wait(absl::Duration timeout);

 private:
  Subprocess(pid_t pid, int out_fd, int err_fd);
  // One poll+read round; false when both pipes are closed.
  bool ReadSome(absl::Time deadline);

  pid_t pid_;
  int fds_[2];
  ProcessResult result_;
  bool reaped_ = false;
};

// A temporary stdio file (std::tmpfile) for code that writes to a FILE*;
// Text() flushes and returns everything written so far.
class TempFile {
 public:
  TempFile();
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  FILE* get() const { return file_; }
  std::string Text();

 private:
  FILE* file_;
};

// The lines of `text` (a program's output, a log), without empty ones.
std::vector<std::string> Lines(absl::string_view text);

// Start + Wait in one call.
absl::StatusOr<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                         absl::Duration timeout);

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_SUBPROCESS_H_
