// The completion-queue call framework every RPC in fetchd is built on
// (internal to rpc/).
//
//   CqLoop     one ServerCompletionQueue + the one thread that drains it
//   Tag        what a CQ tag points at: OnEvent(ok) is called per event
//   Call       base of every per-RPC state object: self-owning, counts its
//              pending events, observes cancellation (AsyncNotifyWhenDone)
//   UnaryCall  Call + a response writer; Finish may run on any thread
//   ServerStreamCall  Call + a writer with its own queue: one Write in
//              flight at a time, Finish after the queue drains
//
// A new RPC type derives from UnaryCall or ServerStreamCall, implements
// RequestCall/Spawn/OnStart, and is started once per CQ with Call::Arm.
#ifndef FETCHD_SERVER_RPC_CALL_H_
#define FETCHD_SERVER_RPC_CALL_H_

#include <google/protobuf/arena.h>
#include <grpcpp/alarm.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <thread>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/auth/auth.h"
#include "server/memory/memory.h"
#include "server/rpc/admission.h"
#include "server/rpc/security.h"
#include "server/rpc/trace_context.h"

namespace fetchd::rpc {

// A CQ tag. The CQ thread calls OnEvent(ok) exactly once per operation
// started with this tag; `ok` may be false and must always be handled.
class Tag {
 public:
  virtual void OnEvent(bool ok) = 0;

 protected:
  ~Tag() = default;
};

// One RPC as it ends.
struct RpcEnd {
  absl::string_view method;  // e.g. "Fetch.BatchFetch"
  grpc::StatusCode code;
  absl::Duration took;  // from its arrival
  int64_t items;        // fetch items in the request; 0 for other RPCs
  int64_t retries;      // HTTP retries its items took
  const grpc::ServerContext* context;  // for peer(), only if needed
  const auth::Caller* caller;          // who called ("anonymous" if unknown)
  const CallTrace* trace;              // the caller's traceparent, request id
};

// Told of every RPC the framework ends (metrics, logs). Called on the
// thread that finishes the call; must not block.
class RpcObserver {
 public:
  virtual void OnRpcEnd(const RpcEnd& end) = 0;

 protected:
  ~RpcObserver() = default;
};

// A ServerCompletionQueue and its thread. Calls are armed on it only while
// it accepts: once Shutdown() starts, nothing new is requested on it.
class CqLoop {
 public:
  // `authenticator` (not owned; may be null: every caller is anonymous)
  // names the caller of each call before it runs; `admission` (not owned;
  // may be null: no caps) admits it (--max_concurrent_rpcs, quotas).
  explicit CqLoop(std::unique_ptr<grpc::ServerCompletionQueue> cq,
                  RpcObserver* observer = nullptr,
                  const CallAuthenticator* authenticator = nullptr,
                  RpcAdmission* admission = nullptr);
  ~CqLoop();  // Shutdown()

  grpc::ServerCompletionQueue* cq() const { return cq_.get(); }
  RpcObserver* observer() const { return observer_; }
  const CallAuthenticator* authenticator() const { return authenticator_; }
  RpcAdmission* admission() const { return admission_; }

  // Starts the draining thread.
  void Start();

  // Runs `request` (which requests a new call on this CQ) unless the CQ is
  // shutting down, and then counts the call as live until CallEnded().
  // Returns whether it ran. Thread-safe.
  template <typename F>
  bool ArmIfAccepting(F&& request) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return false;
    ++live_calls_;
    request();
    return true;
  }
  // A call counted by ArmIfAccepting is gone.
  void CallEnded() ABSL_LOCKS_EXCLUDED(mu_);

  // Stops arming, waits until every armed call has ended (requests that
  // never matched come back with ok=false once grpc::Server::Shutdown ran),
  // then shuts the CQ down, drains it and joins the thread. Call only after
  // grpc::Server::Shutdown returned. Idempotent; every caller returns only
  // once the thread is joined.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);  // Shutdown's body, run once
  void Drain();
  bool NoLiveCalls() const ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return live_calls_ == 0;
  }

  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  RpcObserver* const observer_;                   // may be null
  const CallAuthenticator* const authenticator_;  // may be null
  RpcAdmission* const admission_;                 // may be null
  std::thread thread_;                            // joinable once Start() ran
  absl::once_flag stop_once_;
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
  // The RPC arrived and its caller is authenticated: do the work, or hand
  // it off; eventually finish.
  virtual void OnStart() = 0;
  // The RPC arrived but its caller is not authenticated: finish it with
  // `status` and do nothing else (UnaryCall and ServerStreamCall do).
  virtual void Reject(const grpc::Status& status) = 0;
  // The client cancelled or the deadline passed (after OnStart).
  virtual void OnCancel() {}
  // The RPC's name for metrics and logs, e.g. "Fetch.BatchFetch".
  virtual absl::string_view method() const = 0;
  // How many items the request asks for, and how many retries they took
  // (logs); 0 where that means nothing.
  virtual int64_t items() const { return 0; }
  virtual int64_t retries() const { return 0; }
  // What the request counts against its caller's items/s quota.
  virtual int64_t quota_items() const { return items(); }

  // Reports the end of the RPC with `code` to the loop's observer; the
  // Finish of UnaryCall and ServerStreamCall call it.
  void Ended(grpc::StatusCode code) {
    if (RpcObserver* observer = loop_->observer()) {
      observer->OnRpcEnd({method(), code, absl::Now() - started_, items(),
                          retries(), &context_, &caller_, &trace_});
    }
  }

  CqLoop* loop() const { return loop_; }
  grpc::ServerContext& context() { return context_; }
  // Who called: set before OnStart, constant after (a later issue keys
  // fairness on it).
  const auth::Caller& caller() const { return caller_; }
  // The caller's trace context and request id (metadata): set before
  // OnStart (before admission, so a refused call logs them too).
  const CallTrace& trace() const { return trace_; }
  // Whose share of the fetch engine this call draws on (#16 fair shares):
  // the caller's identity, or for an anonymous caller its peer's address
  // without the port ("10.0.0.7", as QuotaKey), so that more connections
  // earn no more shares.
  std::string ShareIdentity();

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
  // Finishes the call RESOURCE_EXHAUSTED (with retry-after when set).
  void Refuse(const RpcAdmission::Refusal& refusal);

  CqLoop* const loop_;
  bool counted_ = false;   // armed on the loop, which counts it as live
  bool admitted_ = false;  // counted by the loop's admission as in progress
  absl::Time started_;     // when the RPC arrived (OnRequested)
  auth::Caller caller_;    // set in OnRequested, before OnStart
  CallTrace trace_;        // the same
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
    Ended(status.error_code());
    if (status.ok()) {
      responder_.Finish(*response_, status, &finished_);
    } else {
      responder_.FinishWithError(status, &finished_);
    }
  }

  // Finish, but with the response encoded and sent from the CQ thread: for
  // a caller with better things to do than encode a large response (the
  // fetch I/O thread). Callable from any thread, once, instead of Finish.
  void FinishOnCq(grpc::Status status) {
    hop_status_ = std::move(status);
    // An alarm in the past fires at once, on this call's CQ thread.
    hop_.Set(loop()->cq(), gpr_inf_past(GPR_CLOCK_MONOTONIC), &hopped_);
  }

  void Reject(const grpc::Status& status) override { Finish(status); }

  Request request_;
  // On the call's arena: a response with thousands of submessages is built
  // without a heap allocation per field. Arena allocation is thread-safe.
  google::protobuf::Arena arena_;
  Response* const response_ =
      google::protobuf::Arena::CreateMessage<Response>(&arena_);
  grpc::ServerAsyncResponseWriter<Response> responder_{&context()};

 private:
  void OnFinished(bool /*ok: false if the client went away; nothing to do*/) {
    Unref();
  }
  void OnHopped(bool /*ok: false only if cancelled, which nothing does*/) {
    Finish(hop_status_);
  }
  Event finished_{this,
                  static_cast<void (Call::*)(bool)>(&UnaryCall::OnFinished)};
  grpc::Status hop_status_;
  grpc::Alarm hop_;
  Event hopped_{this, static_cast<void (Call::*)(bool)>(&UnaryCall::OnHopped)};
};

// A server-streaming call: one request, a stream of responses written one
// at a time in order, then a status. Write and Finish may be called from
// any thread; the call keeps its own queue so at most one Write is in flight.
template <typename Request, typename Response>
class ServerStreamCall : public Call {
 protected:
  using Call::Call;

  // Queues `message`; it is written after the ones queued before it. After
  // the client went away (a write failed) messages are dropped. `memory`
  // (what the message holds against the memory budget) is kept until gRPC
  // has written the message, or it is dropped.
  void Write(Response message, memory::Reservation memory = {})
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (broken_ || finish_status_.has_value()) return;
    queued_bytes_ += message.ByteSizeLong();
    queue_.push_back({std::move(message), std::move(memory)});
    if (!writing_) StartNextWrite();
  }

  // Ends the stream with `status` once every queued message is written.
  // Callable once, from any thread. Releases the reference the request
  // handed over when the final op comes back.
  void Finish(grpc::Status status) ABSL_LOCKS_EXCLUDED(mu_) {
    Ended(status.error_code());
    {
      absl::MutexLock lock(&mu_);
      finish_status_ = std::move(status);
      if (writing_) return;  // OnWritten finishes after the last write
      finish_started_ = true;
    }
    // NOTE: outside mu_: once the final op is started the CQ thread may
    // delete this call, mutex included.
    writer_.Finish(*finish_status_, &finished_);
  }

  // The same as Finish: the final op carries no message, so it costs the
  // calling thread little (see UnaryCall::FinishOnCq).
  void FinishOnCq(grpc::Status status) { Finish(std::move(status)); }

  // Bytes queued and not yet handed to gRPC (for memory bounds).
  size_t queued_bytes() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return queued_bytes_;
  }

  // A queued message was handed to gRPC: its write started, and what
  // follows it is held back by the transport's flow control. Runs under the
  // write lock (mu_) on the thread that started the write; must not block
  // or take a lock ordered before mu_. Not called for a claimed message.
  virtual void OnMessageTaken() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {}

  // Whether the stream has nothing to write: no write in flight, none
  // queued, not ending. If so, the next message written counts as taken
  // now (the caller's business) and its OnMessageTaken is skipped: the
  // caller must make sure that message is the next Write.
  bool ClaimNextWrite() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (writing_ || !queue_.empty() || broken_ || finish_status_.has_value()) {
      return false;
    }
    ++claimed_;
    return true;
  }

  void Reject(const grpc::Status& status) override { Finish(status); }

  Request request_;
  grpc::ServerAsyncWriter<Response> writer_{&context()};
  // The write path's lock (Write, Finish). Protected so that a subclass
  // lock held around Write can say it comes first (ABSL_ACQUIRED_BEFORE).
  absl::Mutex mu_;

 private:
  void StartNextWrite() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writing_ = true;
    in_flight_ = std::move(queue_.front().message);
    in_flight_memory_ = std::move(queue_.front().memory);
    queue_.pop_front();
    queued_bytes_ -= in_flight_.ByteSizeLong();
    writer_.Write(in_flight_, &written_);
    if (claimed_ > 0) {
      --claimed_;  // counted when it was claimed
    } else {
      OnMessageTaken();
    }
  }
  void OnWritten(bool ok) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      // Written (or never to be): its bytes go, and so does their share of
      // the memory budget.
      in_flight_ = Response();
      in_flight_memory_.Release();
      if (!ok) {  // the client is gone: drop what is left
        broken_ = true;
        queue_.clear();
        queued_bytes_ = 0;
      }
      if (!queue_.empty()) {
        StartNextWrite();  // the call cannot end while a write is in flight
        return;
      }
      if (!finish_status_.has_value() || finish_started_) return;
      finish_started_ = true;
    }
    writer_.Finish(*finish_status_, &finished_);  // outside mu_, as in Finish
  }
  void OnFinished(bool /*ok*/) { Unref(); }

  struct Queued {
    Response message;
    memory::Reservation memory;
  };
  std::deque<Queued> queue_ ABSL_GUARDED_BY(mu_);
  Response in_flight_ ABSL_GUARDED_BY(mu_);
  memory::Reservation in_flight_memory_ ABSL_GUARDED_BY(mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  int claimed_ ABSL_GUARDED_BY(mu_) = 0;  // ClaimNextWrite, not yet written
  // Written once under mu_ before finish_started_; read after it without.
  std::optional<grpc::Status> finish_status_;
  bool finish_started_ ABSL_GUARDED_BY(mu_) = false;
  Event written_{
      this, static_cast<void (Call::*)(bool)>(&ServerStreamCall::OnWritten)};
  Event finished_{
      this, static_cast<void (Call::*)(bool)>(&ServerStreamCall::OnFinished)};
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_CALL_H_
