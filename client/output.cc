#include "client/output.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace fetchd::client {

Output::Output(int fd) : fd_(fd), tty_(isatty(fd) == 1) {
  buffer_.reserve(2 * kWriteBytes);
  std::fflush(stdout);  // whatever stdio holds goes first
}

Output::~Output() { Flush(); }

void Output::Commit() {
  if (buffer_.empty()) return;
  if (tty_ || buffer_.size() >= kWriteBytes) return Flush();
  const absl::Time now = absl::Now();
  if (now - last_write_ >= kMaxDelay) Flush(now);
}

void Output::Flush(absl::Time now) {
  size_t written = 0;
  while (written < buffer_.size() && !failed_) {
    const ssize_t n =
        write(fd_, buffer_.data() + written, buffer_.size() - written);
    if (n < 0 && errno == EINTR) continue;
    // As stdio did: a closed pipe ends fetchctl with SIGPIPE, and other
    // errors drop the output (the exit code still tells the outcome).
    if (n < 0) failed_ = true;
    if (n > 0) written += static_cast<size_t>(n);
  }
  buffer_.clear();
  last_write_ = now;
}

}  // namespace fetchd::client
