// What a SubmitRequest asks for (internal to jobs/): checked at Submit with
// the same planning as a live RPC, so a job that is stored can be run.
#ifndef FETCHD_SERVER_JOBS_WORK_H_
#define FETCHD_SERVER_JOBS_WORK_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "fetchd/v1/jobs.pb.h"
#include "server/jobs/store.h"
#include "server/request/request.h"

namespace fetchd::jobs {

struct WorkSummary {
  Kind kind = Kind::kBatchFetch;
  int64_t total = 0;  // counts.total at submit
};

// INVALID_ARGUMENT naming the field (prefixed with the oneof's name, e.g.
// "batch_fetch.items[3].url") when the work cannot run, a compute kernel
// past `kernel_limits` included; RESOURCE_EXHAUSTED naming --max_job_items
// for a bigger batch.
absl::StatusOr<WorkSummary> CheckWork(
    const v1::SubmitRequest& request, const request::FetchConfig& config,
    const compute::KernelLimits& kernel_limits, int64_t max_job_items);

// `config` with the batch cap of jobs (--max_job_items) instead of live
// RPCs' --max_batch_items.
request::FetchConfig JobFetchConfig(const request::FetchConfig& config,
                                    int64_t max_job_items);

}  // namespace fetchd::jobs

#endif  // FETCHD_SERVER_JOBS_WORK_H_
