// StopSource/StopToken: a shared atomic flag plus a deadline.
#include <atomic>

#include "server/compute/compute.h"

namespace fetchd::compute {

struct StopToken::State {
  explicit State(absl::Time d) : deadline(d) {}
  std::atomic<bool> stopped{false};
  const absl::Time deadline;
};

bool StopToken::stop_requested() const {
  if (state_ == nullptr) return false;
  return state_->stopped.load(std::memory_order_relaxed) ||
         (state_->deadline != absl::InfiniteFuture() &&
          absl::Now() >= state_->deadline);
}

absl::Status StopToken::status() const {
  if (state_ == nullptr) return absl::OkStatus();
  if (state_->stopped.load(std::memory_order_relaxed)) {
    return absl::CancelledError("cancelled by the caller");
  }
  if (state_->deadline != absl::InfiniteFuture() &&
      absl::Now() >= state_->deadline) {
    return absl::DeadlineExceededError("deadline exceeded");
  }
  return absl::OkStatus();
}

absl::Time StopToken::deadline() const {
  return state_ == nullptr ? absl::InfiniteFuture() : state_->deadline;
}

StopSource::StopSource(absl::Time deadline)
    : state_(std::make_shared<StopToken::State>(deadline)) {}

void StopSource::RequestStop() {
  state_->stopped.store(true, std::memory_order_relaxed);
}

StopToken StopSource::token() const { return StopToken(state_); }

}  // namespace fetchd::compute
