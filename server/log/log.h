// log/: fetchd's structured logs, one JSON object per line on stderr.
//
// A thread of the Logger's own writes the lines from a bounded queue, so
// the threads that log (CQ threads, the fetch I/O thread, workers) never
// wait on a slow stderr pipe. When the queue is full a line is dropped and
// counted (dropped()), never blocking the caller. No gRPC or curl types.
#ifndef FETCHD_SERVER_LOG_LOG_H_
#define FETCHD_SERVER_LOG_LOG_H_

#include <atomic>
#include <cstdio>
#include <deque>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace fetchd::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// "debug", "info", "warn" or "error"; INVALID_ARGUMENT naming --log_level.
absl::StatusOr<Level> ParseLevel(absl::string_view name);
absl::string_view LevelName(Level level);

// `text` escaped for the inside of a JSON string.
std::string JsonEscape(absl::string_view text);

class Logger {
 public:
  struct Options {
    Level level = Level::kInfo;
    size_t max_queued = 10000;  // lines waiting for the writer
    FILE* out = stderr;
  };

  explicit Logger(Options options);
  ~Logger();  // writes every queued line, then stops the writer
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  bool Enabled(Level level) const { return level >= options_.level; }

  // Queues {"ts":"...","level":"...",<fields>} if `level` is enabled.
  // `fields` are JSON members without the braces, values already escaped.
  // Thread-safe; never blocks on the output.
  void Log(Level level, absl::string_view fields) ABSL_LOCKS_EXCLUDED(mu_);
  // The same, whatever the level: for lifecycle events (serving, draining,
  // stopped), which tools and people wait for.
  void LogAlways(Level level, absl::string_view fields)
      ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  void Write() ABSL_LOCKS_EXCLUDED(mu_);
  bool HasWork() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || stopping_;
  }

  const Options options_;
  absl::Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> dropped_{0};
  std::thread writer_;
};

}  // namespace fetchd::log

#endif  // FETCHD_SERVER_LOG_LOG_H_
