#include "server/jobs/work.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace fetchd::jobs {
namespace {

absl::Status Prefixed(absl::string_view field, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(field, ".", status.message()));
}

}  // namespace

request::FetchConfig JobFetchConfig(const request::FetchConfig& config,
                                    int64_t max_job_items) {
  request::FetchConfig job_config = config;
  job_config.max_batch_items = static_cast<int>(
      std::min<int64_t>(max_job_items, std::numeric_limits<int>::max()));
  return job_config;
}

absl::StatusOr<WorkSummary> CheckWork(
    const v1::SubmitRequest& request, const request::FetchConfig& config,
    const compute::KernelLimits& kernel_limits, int64_t max_job_items) {
  switch (request.work_case()) {
    case v1::SubmitRequest::kBatchFetch: {
      const int items = request.batch_fetch().items_size();
      if (items > max_job_items) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "batch_fetch.items: ", items,
            " items, more than a job may have (--max_job_items=", max_job_items,
            ")"));
      }
      absl::StatusOr<request::BatchPlan> plan = request::PlanBatch(
          request.batch_fetch(), JobFetchConfig(config, max_job_items),
          request::Caller{}, absl::InfiniteFuture());
      if (!plan.ok()) return Prefixed("batch_fetch", plan.status());
      return WorkSummary{Kind::kBatchFetch, items};
    }
    case v1::SubmitRequest::kFetchPages: {
      absl::StatusOr<request::WalkPlan> plan =
          request::PlanWalk(request.fetch_pages(), config, request::Caller{},
                            absl::InfiniteFuture());
      if (!plan.ok()) return Prefixed("fetch_pages", plan.status());
      return WorkSummary{Kind::kFetchPages, 0};
    }
    case v1::SubmitRequest::kCompute: {
      absl::StatusOr<compute::Kernel> kernel =
          request::KernelFromProto(request.compute());
      if (!kernel.ok()) return Prefixed("compute", kernel.status());
      if (absl::Status valid = compute::ValidateKernel(*kernel, kernel_limits);
          !valid.ok()) {
        return Prefixed("compute", valid);
      }
      return WorkSummary{Kind::kCompute, 1};
    }
    case v1::SubmitRequest::WORK_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "work: set one of batch_fetch, fetch_pages, compute");
}

}  // namespace fetchd::jobs
