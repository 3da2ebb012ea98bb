// fetchctl's stdout for results: many lines in few large writes.
#ifndef FETCHD_CLIENT_OUTPUT_H_
#define FETCHD_CLIENT_OUTPUT_H_

#include <unistd.h>

#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fetchd::client {

// Lines are appended to buffer() and Commit()ted once complete. They go out
// in writes of about kWriteBytes, and at least every kMaxDelay while lines
// keep coming, so a pipe (`fetchctl pages ... | jq`) still sees a slow
// stream move; to a terminal, at every Commit. One write(2) per 64 KiB
// instead of one per line or per 4 KiB stdio buffer. Not thread-safe.
class Output {
 public:
  static constexpr size_t kWriteBytes = 64 << 10;
  static constexpr absl::Duration kMaxDelay = absl::Milliseconds(100);

  explicit Output(int fd = STDOUT_FILENO);
  ~Output();  // flushes
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  std::string& buffer() { return buffer_; }
  void Commit();
  void Flush(absl::Time now = absl::Now());

 private:
  const int fd_;
  const bool tty_;
  bool failed_ = false;
  std::string buffer_;
  absl::Time last_write_ = absl::Now();
};

}  // namespace fetchd::client

#endif  // FETCHD_CLIENT_OUTPUT_H_
