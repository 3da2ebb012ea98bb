#include "server/rpc/compute_call.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/rpc/convert.h"

namespace fetchd::rpc {

absl::StatusOr<compute::Kernel> KernelFromProto(const v1::ComputeRequest& req) {
  switch (req.kernel_case()) {
    case v1::ComputeRequest::kSqrtSum:
      return compute::SqrtSum{req.sqrt_sum().n()};
    case v1::ComputeRequest::kSha256Chain:
      return compute::Sha256Chain{req.sha256_chain().data(),
                                  req.sha256_chain().rounds()};
    case v1::ComputeRequest::kCountPrimes:
      return compute::CountPrimes{req.count_primes().limit()};
    case v1::ComputeRequest::KERNEL_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(
      "kernel is not set: choose one of sqrt_sum, sha256_chain, count_primes");
}

void ComputeRunCall::RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) {
  service_->RequestRun(&context(), &request_, &responder_, cq, cq, tag);
}

void ComputeRunCall::Spawn() {
  Arm(new ComputeRunCall(service_, runner_, loop()));
}

void ComputeRunCall::OnStart() {
  absl::StatusOr<compute::Kernel> kernel = KernelFromProto(request_);
  if (!kernel.ok()) return Finish(ToGrpcStatus(kernel.status()));
  // --max_compute_time bounds every call, even one without a deadline.
  absl::Time deadline = DeadlineOf(context());
  const absl::Duration max_time = runner_->limits().max_time;
  if (max_time > absl::ZeroDuration() && max_time != absl::InfiniteDuration() &&
      absl::Now() + max_time < deadline) {
    deadline = absl::Now() + max_time;
    server_deadline_ = true;
  }
  stop_ = compute::StopSource(deadline);
  const absl::Status queued =
      runner_->Run(*std::move(kernel), stop_.token(),
                   [this](absl::StatusOr<compute::ComputeResult> result) {
                     OnComputed(std::move(result));
                   });
  if (!queued.ok()) Finish(ToGrpcStatus(queued));
}

void ComputeRunCall::OnComputed(absl::StatusOr<compute::ComputeResult> result) {
  if (!result.ok()) {
    if (server_deadline_ &&
        result.status().code() == absl::StatusCode::kDeadlineExceeded) {
      return Finish(ToGrpcStatus(absl::DeadlineExceededError(absl::StrCat(
          "Compute ran longer than the server allows (--max_compute_time=",
          absl::FormatDuration(runner_->limits().max_time), ")"))));
    }
    return Finish(ToGrpcStatus(result.status()));
  }
  switch (result->value.index()) {
    case 0:
      response_->set_sqrt_sum(std::get<0>(result->value));
      break;
    case 1:
      response_->set_sha256_chain(std::get<1>(std::move(result->value)));
      break;
    case 2:
      response_->set_count_primes(std::get<2>(result->value));
      break;
  }
  ToProtoDuration(result->queue_wait, response_->mutable_queue_wait());
  ToProtoDuration(result->run_time, response_->mutable_run_time());
  Finish(grpc::Status::OK);
}

}  // namespace fetchd::rpc
