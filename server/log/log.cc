#include "server/log/log.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fetchd::log {

absl::StatusOr<Level> ParseLevel(absl::string_view name) {
  if (name == "debug") return Level::kDebug;
  if (name == "info") return Level::kInfo;
  if (name == "warn") return Level::kWarn;
  if (name == "error") return Level::kError;
  return absl::InvalidArgumentError(absl::StrCat(
      "--log_level=", name, " is invalid: want debug, info, warn or error"));
}

absl::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

std::string JsonEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out;
}

Logger::Logger(Options options) : options_(std::move(options)) {
  writer_ = std::thread([this] { Write(); });
}

Logger::~Logger() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  writer_.join();
}

void Logger::Log(Level level, absl::string_view fields) {
  if (Enabled(level)) LogAlways(level, fields);
}

namespace {

// RFC 3339 UTC with microseconds. absl::FormatTime costs microseconds per
// call, as much as a small RPC: the part up to the second is formatted once
// per second per thread.
std::string Timestamp() {
  thread_local int64_t cached_second = -1;
  thread_local std::string cached_prefix;
  const absl::Time now = absl::Now();
  const int64_t micros = absl::ToUnixMicros(now);
  const int64_t second = micros / 1'000'000;
  if (second != cached_second) {
    cached_second = second;
    cached_prefix =
        absl::FormatTime("%Y-%m-%dT%H:%M:%S", absl::FromUnixSeconds(second),
                         absl::UTCTimeZone());
  }
  return absl::StrFormat("%s.%06dZ", cached_prefix, micros % 1'000'000);
}

}  // namespace

void Logger::LogAlways(Level level, absl::string_view fields) {
  std::string line = absl::StrCat("{\"ts\":\"", Timestamp(), "\",\"level\":\"",
                                  LevelName(level), "\",", fields, "}\n");
  absl::MutexLock lock(&mu_);
  if (queue_.size() >= options_.max_queued) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  queue_.push_back(std::move(line));
}

void Logger::Write() {
  for (;;) {
    std::deque<std::string> lines;
    bool stop;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &Logger::HasWork));
      lines.swap(queue_);
      stop = stopping_;
    }
    for (const std::string& line : lines) {
      std::fwrite(line.data(), 1, line.size(), options_.out);
    }
    std::fflush(options_.out);
    if (stop) return;  // the queue was emptied under the lock above
  }
}

}  // namespace fetchd::log
