// CqLoop and Call: the lifetime rules of the completion-queue framework.
#include "server/rpc/call.h"

namespace fetchd::rpc {

CqLoop::CqLoop(std::unique_ptr<grpc::ServerCompletionQueue> cq)
    : cq_(std::move(cq)) {}

CqLoop::~CqLoop() { Shutdown(); }

void CqLoop::Start() {
  thread_ = std::thread([this] { Drain(); });
}

void CqLoop::Drain() {
  void* tag = nullptr;
  bool ok = false;
  while (cq_->Next(&tag, &ok)) static_cast<Tag*>(tag)->OnEvent(ok);
}

void CqLoop::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    // NOTE: grpc::Server::Shutdown returns once it has cancelled the calls
    // still running, not once we have finished them. A worker finishing a
    // call on a shut-down CQ aborts the process, so wait for every call to
    // end; cancelled calls end promptly (their stop tokens fire).
    mu_.Await(absl::Condition(this, &CqLoop::NoLiveCalls));
    shut_down_ = true;
    cq_->Shutdown();
  }
  if (thread_.joinable()) {
    thread_.join();
  } else {
    Drain();  // never started: release what was armed on it
  }
}

void CqLoop::CallStarted() {
  absl::MutexLock lock(&mu_);
  ++live_calls_;
}

void CqLoop::CallEnded() {
  absl::MutexLock lock(&mu_);
  --live_calls_;
}

Call::~Call() {
  if (started_) loop_->CallEnded();
}

void Call::Arm(Call* call) {
  const bool armed = call->loop_->IfAccepting([call] {
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
  started_ = true;
  loop_->CallStarted();
  Ref();  // for done_, which now will come
  Spawn();
  OnStart();
}

void Call::OnDone(bool /*ok*/) {
  if (context_.IsCancelled()) OnCancel();
  Unref();
}

}  // namespace fetchd::rpc
