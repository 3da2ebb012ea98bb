#include "server/rpc/compute_call.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/request/request.h"
#include "server/rpc/convert.h"

namespace fetchd::rpc {

void ComputeRunCall::RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) {
  service_->RequestRun(&context(), &request_, &responder_, cq, cq, tag);
}

void ComputeRunCall::Spawn() {
  Arm(new ComputeRunCall(service_, runner_, loop()));
}

void ComputeRunCall::OnStart() {
  absl::StatusOr<compute::Kernel> kernel = request::KernelFromProto(request_);
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
  request::ToProtoCompute(*std::move(result), response_);
  Finish(grpc::Status::OK);
}

}  // namespace fetchd::rpc
