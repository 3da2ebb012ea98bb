// CqLoop and Call: the lifetime rules of the completion-queue framework.
#include "server/rpc/call.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fetchd::rpc {

CqLoop::CqLoop(std::unique_ptr<grpc::ServerCompletionQueue> cq,
               RpcObserver* observer, const CallAuthenticator* authenticator)
    : cq_(std::move(cq)), observer_(observer), authenticator_(authenticator) {}

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
  Ref();  // for done_, which now will come
  Spawn();
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
  OnStart();
}

std::string Call::ShareIdentity() {
  if (caller_.identity != auth::kAnonymous) return caller_.identity;
  // "ipv4:1.2.3.4:5678", "ipv6:[::1]:5678", "unix:/path" (no port).
  std::string peer = context_.peer();
  if (!absl::StartsWith(peer, "unix:")) {
    const size_t colon = peer.rfind(':');
    if (colon != std::string::npos && colon > peer.find(':')) {
      peer.resize(colon);
    }
  }
  return absl::StrCat("peer:", peer);
}

void Call::OnDone(bool /*ok*/) {
  if (context_.IsCancelled()) OnCancel();
  Unref();
}

}  // namespace fetchd::rpc
