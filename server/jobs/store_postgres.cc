// The postgres JobStore backend (placeholder until its owner lands it).
#include "server/jobs/store.h"

namespace fetchd::jobs {

absl::StatusOr<std::unique_ptr<JobStore>> OpenPostgresStore(
    const std::string& /*spec*/, const StoreOptions& /*options*/) {
  return absl::UnimplementedError("the postgres job store is not built yet");
}

}  // namespace fetchd::jobs
