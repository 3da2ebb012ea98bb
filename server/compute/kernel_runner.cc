// KernelRunner: validation, queueing and timing around RunKernel.
#include <utility>

#include "server/compute/compute.h"

namespace fetchd::compute {

absl::Status KernelRunner::Run(Kernel kernel, StopToken stop,
                               ComputeCallback done) {
  if (absl::Status valid = ValidateKernel(kernel, limits_); !valid.ok()) {
    return valid;
  }
  const absl::Time queued_at = absl::Now();
  return pool_->Submit([kernel = std::move(kernel), stop = std::move(stop),
                        done = std::move(done),
                        queued_at](absl::Status start) mutable {
    if (!start.ok()) return std::move(done)(std::move(start));
    // Skip work nobody waits for any more.
    if (stop.stop_requested()) return std::move(done)(stop.status());
    const absl::Time started_at = absl::Now();
    absl::StatusOr<KernelValue> value = RunKernel(kernel, stop);
    const absl::Time finished_at = absl::Now();
    if (!value.ok()) return std::move(done)(value.status());
    std::move(done)(ComputeResult{*std::move(value), started_at - queued_at,
                                  finished_at - started_at});
  });
}

}  // namespace fetchd::compute
