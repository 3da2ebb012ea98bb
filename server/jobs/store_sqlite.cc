// The sqlite JobStore backend (placeholder until its owner lands it).
#include "server/jobs/store.h"

namespace fetchd::jobs {

absl::StatusOr<std::unique_ptr<JobStore>> OpenSqliteStore(
    const std::string& /*spec*/, const StoreOptions& /*options*/) {
  return absl::UnimplementedError("the sqlite job store is not built yet");
}

}  // namespace fetchd::jobs
