// Test support: run a program to completion and capture what it printed.
#ifndef FETCHD_TESTS_SUPPORT_SUBPROCESS_H_
#define FETCHD_TESTS_SUPPORT_SUBPROCESS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace fetchd::testing {

struct ProcessResult {
  int exit_code = -1;  // -1 when killed by a signal (see `signal`)
  int signal = 0;
  std::string out;
  std::string err;
};

// Runs argv[0] with `argv` (no shell); kills it with SIGKILL if it runs
// past `timeout`, which is then reported as DEADLINE_EXCEEDED.
absl::StatusOr<ProcessResult> RunProcess(const std::vector<std::string>& argv,
                                         absl::Duration timeout);

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_SUBPROCESS_H_
