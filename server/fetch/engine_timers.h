// Internal to server/fetch/: retry and timer logic (engine_retry.cc:
// Retryable, ScheduleRetry with backoff, jitter, Retry-After and the retry
// budget; FireTimers and UntilNextTimer).
//
// Owns: Timer and TimerQueue, one min-heap of retry backoffs and batch
// deadlines. A timer is never removed early: when it fires it looks its
// batch and item up and does nothing if they moved on.
// Threads: the I/O thread only (curl_multi_poll's timeout is the next
// timer's).
#ifndef FETCHD_SERVER_FETCH_ENGINE_TIMERS_H_
#define FETCHD_SERVER_FETCH_ENGINE_TIMERS_H_

#include <cstdint>
#include <functional>
#include <queue>
#include <vector>

#include "absl/time/time.h"

namespace fetchd::fetch::internal {

enum class TimerKind { kRetry, kDeadline };
struct Timer {
  absl::Time when;
  uint64_t batch_id;
  size_t index;
  TimerKind kind;
  bool operator>(const Timer& o) const { return when > o.when; }
};
using TimerQueue =
    std::priority_queue<Timer, std::vector<Timer>, std::greater<>>;

}  // namespace fetchd::fetch::internal

#endif  // FETCHD_SERVER_FETCH_ENGINE_TIMERS_H_
