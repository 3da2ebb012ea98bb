// Compute.Run: one call-state object per RPC (internal to rpc/).
#ifndef FETCHD_SERVER_RPC_COMPUTE_CALL_H_
#define FETCHD_SERVER_RPC_COMPUTE_CALL_H_

#include "absl/status/statusor.h"
#include "fetchd/v1/compute.grpc.pb.h"
#include "server/compute/compute.h"
#include "server/rpc/call.h"

namespace fetchd::rpc {

// Validates the request, runs the kernel on the worker pool, and finishes
// from the worker thread. Cancellation and the deadline reach the kernel
// through a StopToken.
class ComputeRunCall final : public UnaryCall<v1::RunRequest, v1::RunResponse> {
 public:
  ComputeRunCall(v1::Compute::AsyncService* service,
                 compute::KernelRunner* runner, CqLoop* loop)
      : UnaryCall(loop), service_(service), runner_(runner) {}

 private:
  void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) override;
  void Spawn() override;
  absl::string_view method() const override { return "Compute.Run"; }
  void OnStart() override;
  void OnCancel() override { stop_.RequestStop(); }
  // On a worker thread.
  void OnComputed(absl::StatusOr<compute::ComputeResult> result);

  v1::Compute::AsyncService* const service_;
  compute::KernelRunner* const runner_;
  compute::StopSource stop_;  // replaced in OnStart with the RPC's deadline
  // Whether stop_'s deadline is --max_compute_time's rather than the
  // caller's (set in OnStart, before the kernel is queued).
  bool server_deadline_ = false;
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_COMPUTE_CALL_H_
