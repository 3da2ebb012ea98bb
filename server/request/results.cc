// Requests and results that are not batches: Compute's kernel and answer,
// and a walk's page (request.h). Live RPCs and jobs convert the same way.
#include <utility>

#include "server/request/request.h"

namespace fetchd::request {

absl::StatusOr<compute::Kernel> KernelFromProto(const v1::RunRequest& req) {
  switch (req.kernel_case()) {
    case v1::RunRequest::kSqrtSum:
      return compute::SqrtSum{req.sqrt_sum().n()};
    case v1::RunRequest::kSha256Chain:
      return compute::Sha256Chain{req.sha256_chain().data(),
                                  req.sha256_chain().rounds()};
    case v1::RunRequest::kCountPrimes:
      return compute::CountPrimes{req.count_primes().limit()};
    case v1::RunRequest::KERNEL_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "kernel is not set: choose one of sqrt_sum, sha256_chain, count_primes");
}

void ToProtoDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

void ToProtoCompute(compute::ComputeResult result, v1::RunResponse* out) {
  switch (result.value.index()) {
    case 0:
      out->set_sqrt_sum(std::get<0>(result.value));
      break;
    case 1:
      out->set_sha256_chain(std::get<1>(std::move(result.value)));
      break;
    case 2:
      out->set_count_primes(std::get<2>(result.value));
      break;
  }
  ToProtoDuration(result.queue_wait, out->mutable_queue_wait());
  ToProtoDuration(result.run_time, out->mutable_run_time());
}

memory::Reservation ToProtoPage(const FetchConfig& config, const WalkPlan& plan,
                                fetch::Page page,
                                const absl::StatusOr<std::string>* processed,
                                v1::Page* out) {
  out->set_index(page.index);
  const bool drop_body = plan.drop_body || plan.strategy.split_items;
  memory::Reservation memory = std::move(page.result.memory);
  if (drop_body) {  // the body goes with the conversion: so do its bytes
    memory.ShrinkTo(memory.bytes() -
                    fetch::kBodyMemoryFactor *
                        static_cast<int64_t>(page.result.body.capacity()));
  }
  ToProtoResult(0, page.url, std::move(page.result), processed, drop_body,
                out->mutable_result());
  for (std::string& item : page.items) out->add_items(std::move(item));
  out->set_resume_token(ResumeToken(config, plan, page.next));
  return memory;
}

}  // namespace fetchd::request
