// The engine's retry and timer logic (see engine_timers.h): whether a
// failed attempt is retried and when, and the timers that bring retries
// back and end batches at their deadline. I/O thread only.
#include <curl/curl.h>

#include <algorithm>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "server/fetch/engine_loop.h"

namespace fetchd::fetch {

using internal::IsConnectError;

bool Engine::Loop::Retryable(const RetryPolicy& policy, CURLcode rc,
                             long http) const {
  if (rc == CURLE_OK) {
    return (http == 429 && policy.on_429) || (http >= 500 && policy.on_5xx);
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) return policy.on_timeout;
  if (IsConnectError(rc) && policy.on_connect_error) return true;
  return std::find(policy.on_curl_codes.begin(), policy.on_curl_codes.end(),
                   static_cast<int>(rc)) != policy.on_curl_codes.end();
}

bool Engine::Loop::ScheduleRetry(Batch& batch, size_t index,
                                 FetchResult& result, curl_off_t after) {
  Item& item = *batch.item(index);
  const FetchSpec& spec = batch.spec(index);
  absl::Duration delay = spec.retry.Backoff(item.attempts + 1);
  if (spec.retry.jitter) {
    delay = absl::Nanoseconds(absl::Uniform<int64_t>(
        absl::IntervalClosed, rng_, 0, absl::ToInt64Nanoseconds(delay)));
  }
  if (spec.retry.honor_retry_after && after > 0) {
    delay = std::min(absl::Seconds(after), spec.retry.max_backoff);
  }
  const absl::Time when = absl::Now() + delay;
  if (when >= batch.options.deadline) {
    result.status = absl::Status(
        result.status.code(),
        absl::StrCat(result.status.message(), " (no retry: backoff of ",
                     absl::FormatDuration(delay), " ends past the deadline)"));
    return false;
  }
  if (!budget_.TrySpend()) {
    stat_retries_denied_.fetch_add(1, std::memory_order_relaxed);
    result.status = absl::Status(
        result.status.code(),
        absl::StrCat(result.status.message(),
                     " (no retry: the server's retry budget is spent, "
                     "--retry_budget_ratio)"));
    return false;
  }
  stat_retries_.fetch_add(1, std::memory_order_relaxed);
  item.state = ItemState::kBackingOff;
  ++backing_off_;
  timers_.push(Timer{when, batch.id, index, TimerKind::kRetry});
  MakeRunnable(batch);
  return true;
}

absl::Duration Engine::Loop::UntilNextTimer() const {
  if (timers_.empty()) return absl::Seconds(1);
  return timers_.top().when - absl::Now();
}

void Engine::Loop::FireTimers() {
  const absl::Time now = absl::Now();
  while (!timers_.empty() && timers_.top().when <= now) {
    const Timer timer = timers_.top();
    timers_.pop();
    auto it = batches_.find(timer.batch_id);
    if (it == batches_.end()) continue;
    Batch& batch = *it->second;
    if (timer.kind == TimerKind::kDeadline && batch.walk != nullptr) {
      EndWalk(timer.batch_id,
              absl::DeadlineExceededError(absl::StrCat(
                  "the RPC deadline passed at page ", batch.walk->processed)));
      continue;
    }
    if (timer.kind == TimerKind::kDeadline) {
      EndBatch(timer.batch_id,
               absl::DeadlineExceededError(
                   "the RPC deadline passed before the item finished"));
      continue;
    }
    Item* item = batch.item(timer.index);
    if (item == nullptr || item->state != ItemState::kBackingOff) continue;
    item->state = ItemState::kWaiting;
    --backing_off_;
    // A retry goes ahead of items that have not started yet.
    batch.waiting.push_front(timer.index);
    ++waiting_;
    MakeRunnable(batch);
  }
}

}  // namespace fetchd::fetch
