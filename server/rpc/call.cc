// CqLoop and Call: the lifetime rules of the completion-queue framework.
#include "server/rpc/call.h"

#include <string>

namespace fetchd::rpc {

CqLoop::CqLoop(std::unique_ptr<grpc::ServerCompletionQueue> cq,
               RpcObserver* observer, const CallAuthenticator* authenticator,
               RpcAdmission* admission)
    : cq_(std::move(cq)),
      observer_(observer),
      authenticator_(authenticator),
      admission_(admission) {}

CqLoop::~CqLoop() { Shutdown(); }

void CqLoop::Start() {
  thread_ = std::thread([this] { Drain(); });
}

void CqLoop::Drain() {
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) static_cast<Tag*>(tag)->OnEvent(ok);
}

void CqLoop::Shutdown() { absl::call_once(stop_once_, &CqLoop::Stop, this); }

void CqLoop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;  // nothing new is armed from here on
    // NOTE: grpc::Server::Shutdown returns once it has cancelled the calls
    // still running, not once we have finished them, and a call it matched
    // may still sit in the CQ. A worker finishing a call on a shut-down CQ
    // aborts the process, so wait for every armed call to end: unmatched
    // requests come back ok=false, cancelled calls end promptly (their stop
    // tokens fire). Without a draining thread nothing could end: skip.
    if (thread_.joinable()) {
      mu_.Await(absl::Condition(this, &CqLoop::NoLiveCalls));
    }
    cq_->Shutdown();
  }
  if (thread_.joinable()) {
    thread_.join();
  } else {
    Drain();  // never started: release what was armed on it
  }
}

void CqLoop::CallEnded() {
  absl::MutexLock lock(&mu_);
  --live_calls_;
}

Call::~Call() {
  if (admitted_) loop_->admission()->Leave();
  if (counted_) loop_->CallEnded();
}

void Call::Arm(Call* call) {
  const bool armed = call->loop_->ArmIfAccepting([call] {
    // NOTE: set before the request: from then on the CQ thread may end the
    // call at any moment, and ~Call reads it.
    call->counted_ = true;
    // NOTE: must precede the request; gRPC delivers `done_` only for calls
    // that actually started.
    call->context_.AsyncNotifyWhenDone(&call->done_);
    call->RequestCall(call->loop_->cq(), &call->requested_);
  });
  if (!armed) delete call;
}

void Call::OnRequested(bool ok) {
  if (!ok) {  // the server is shutting down; this call never started
    Unref();
    return;
  }
  started_ = absl::Now();
  trace_ = ReadCallTrace(context_);
  Ref();  // for done_, which now will come
  Spawn();
  RpcAdmission* const admission = loop_->admission();
  // Before authentication: past --max_concurrent_rpcs nothing else runs.
  if (admission != nullptr) {
    if (std::optional<RpcAdmission::Refusal> refusal = admission->Enter()) {
      Refuse(*refusal);
      return;
    }
    admitted_ = true;
  }
  // Before any work: an unauthenticated call runs nothing.
  if (const CallAuthenticator* authenticator = loop_->authenticator()) {
    absl::StatusOr<auth::Caller> caller = authenticator->Authenticate(context_);
    if (!caller.ok()) {
      Reject(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          std::string(caller.status().message())));
      return;
    }
    caller_ = *std::move(caller);
  }
  // Quotas are per caller, so after authentication; anonymous callers are
  // known by their peer address.
  if (admission != nullptr && admission->has_quotas()) {
    if (std::optional<RpcAdmission::Refusal> refusal = admission->Charge(
            QuotaKey(caller_.identity, context_.peer()), quota_items())) {
      Refuse(*refusal);
      return;
    }
  }
  OnStart();
}

void Call::Refuse(const RpcAdmission::Refusal& refusal) {
  if (refusal.retry_after_seconds > 0) {
    context_.AddTrailingMetadata("retry-after",
                                 std::to_string(refusal.retry_after_seconds));
  }
  Reject(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, refusal.message));
}

// The key fair shares and quotas agree on: the token or mTLS identity, else
// the peer's address without its port.
std::string Call::ShareIdentity() {
  return QuotaKey(caller_.identity, context_.peer());
}

void Call::OnDone(bool /*ok*/) {
  if (context_.IsCancelled()) OnCancel();
  Unref();
}

}  // namespace fetchd::rpc
