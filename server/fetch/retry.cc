// RetryPolicy's exponential backoff (jitter and Retry-After are applied by
// the engine, which owns the random source and the response).
#include <cmath>

#include "server/fetch/fetch.h"

namespace fetchd::fetch {

absl::Duration RetryPolicy::Backoff(int next_attempt) const {
  if (next_attempt < 2) return absl::ZeroDuration();
  const double factor = std::pow(multiplier, next_attempt - 2);
  const double seconds = absl::ToDoubleSeconds(initial_backoff) * factor;
  if (!std::isfinite(seconds) ||
      seconds >= absl::ToDoubleSeconds(max_backoff)) {
    return max_backoff;
  }
  return absl::Seconds(seconds);
}

}  // namespace fetchd::fetch
