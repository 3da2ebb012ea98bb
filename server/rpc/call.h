// The completion-queue call framework every RPC in fetchd is built on
// (internal to rpc/).
//
//   CqLoop     one ServerCompletionQueue + the one thread that drains it
//   Tag        what a CQ tag points at: OnEvent(ok) is called per event
//   Call       base of every per-RPC state object: self-owning, counts its
//              pending events, observes cancellation (AsyncNotifyWhenDone)
//   UnaryCall  Call + a response writer; Finish may run on any thread
//
// A new RPC type derives from UnaryCall (or, later, a streaming sibling that
// keeps at most one Write in flight), implements RequestCall/Spawn/OnStart,
// and is started once per CQ with Call::Arm.
#ifndef FETCHD_SERVER_RPC_CALL_H_
#define FETCHD_SERVER_RPC_CALL_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace fetchd::rpc {

// A CQ tag. The CQ thread calls OnEvent(ok) exactly once per operation
// started with this tag; `ok` may be false and must always be handled.
class Tag {
 public:
  virtual void OnEvent(bool ok) = 0;

 protected:
  ~Tag() = default;
};

// A ServerCompletionQueue and its thread. Calls are armed on it only while
// it accepts: once Shutdown() starts, nothing new is requested on it.
class CqLoop {
 public:
  explicit CqLoop(std::unique_ptr<grpc::ServerCompletionQueue> cq);
  ~CqLoop();  // Shutdown()

  grpc::ServerCompletionQueue* cq() const { return cq_.get(); }

  // Starts the draining thread.
  void Start();

  // Runs `request` (which requests a new call on this CQ) unless the CQ is
  // shutting down. Returns whether it ran. Thread-safe.
  template <typename F>
  bool IfAccepting(F&& request) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return false;
    request();
    return true;
  }

  // Waits until every started call has ended, then shuts the CQ down,
  // drains it (every pending tag gets ok=false) and joins the thread. Call
  // only after grpc::Server::Shutdown returned.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  // Bookkeeping of calls that started on this CQ and are not yet deleted.
  void CallStarted() ABSL_LOCKS_EXCLUDED(mu_);
  void CallEnded() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Drain();
  bool NoLiveCalls() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return live_calls_ == 0;
  }

  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread thread_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  int live_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// Base of every per-RPC state object. Owns itself: it is deleted when the
// last of its pending events has come back (the request, the done
// notification once the call started, and the final op).
//
// Threads: events arrive on the CqLoop's one thread, so handlers for one
// call never run concurrently with each other; work handed elsewhere (a
// worker, the I/O thread) may finish the call from that thread.
class Call {
 public:
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  // Requests the first call of this kind on `loop`; takes ownership of
  // `call` (deleted at once if the loop no longer accepts).
  static void Arm(Call* call);

 protected:
  explicit Call(CqLoop* loop) : loop_(loop) {}
  virtual ~Call();

  // Request the next incoming RPC of this kind, with `tag` for its arrival.
  virtual void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) = 0;
  // Create and Arm() the next instance (re-arm before doing the work).
  virtual void Spawn() = 0;
  // The RPC arrived: do the work, or hand it off; eventually finish.
  virtual void OnStart() = 0;
  // The client cancelled or the deadline passed (after OnStart).
  virtual void OnCancel() {}

  CqLoop* loop() const { return loop_; }
  grpc::ServerContext& context() { return context_; }

  // Holds the call alive across one more event (e.g. the final op).
  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Routes one CQ event to a member function of the call.
  class Event final : public Tag {
   public:
    Event(Call* call, void (Call::*handler)(bool))
        : call_(call), handler_(handler) {}
    void OnEvent(bool ok) override { (call_->*handler_)(ok); }

   private:
    Call* const call_;
    void (Call::*const handler_)(bool);
  };

 private:
  void OnRequested(bool ok);
  void OnDone(bool ok);

  CqLoop* const loop_;
  bool started_ = false;  // set on the CQ thread before any other event
  grpc::ServerContext context_;
  // 1 for the request; the request's reference then passes to whoever
  // finishes the call, and the done notification adds one.
  std::atomic<int> refs_{1};
  Event requested_{this, &Call::OnRequested};
  Event done_{this, &Call::OnDone};
};

// A unary call: one request, one response, finished exactly once.
template <typename Request, typename Response>
class UnaryCall : public Call {
 protected:
  using Call::Call;

  // Finish the RPC; callable from any thread, once. Releases the reference
  // the request handed over when the final op comes back.
  void Finish(const grpc::Status& status) {
    if (status.ok()) {
      responder_.Finish(response_, status, &finished_);
    } else {
      responder_.FinishWithError(status, &finished_);
    }
  }

  Request request_;
  Response response_;
  grpc::ServerAsyncResponseWriter<Response> responder_{&context()};

 private:
  void OnFinished(bool /*ok: false if the client went away; nothing to do*/) {
    Unref();
  }
  Event finished_{this,
                  static_cast<void (Call::*)(bool)>(&UnaryCall::OnFinished)};
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_CALL_H_
