// Fetch.FetchPages: one call-state object per walk (internal to rpc/). The
// engine walks the pages on its I/O thread; this call processes each page
// if asked (worker pool), else converts it on its CQ thread, writes them in
// order, and tells the engine each time gRPC has taken one, which is what
// moves the prefetch window.
#ifndef FETCHD_SERVER_RPC_PAGES_CALL_H_
#define FETCHD_SERVER_RPC_PAGES_CALL_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "server/request/request.h"
#include "server/rpc/call.h"
#include "server/rpc/fetch_call.h"

namespace fetchd::rpc {

class FetchPagesCall final
    : public ServerStreamCall<v1::FetchPagesRequest, v1::FetchPagesResponse> {
 public:
  FetchPagesCall(const FetchServices& services, CqLoop* loop)
      : ServerStreamCall(loop), services_(services) {}

 private:
  // A page on its way out: sent once it and every page before it are ready
  // (a big body is processed on the worker pool).
  struct Slot {
    fetch::Page page;
    v1::FetchPagesResponse message;  // written by Convert before `ready`
    // The page's bytes against the memory budget, until gRPC wrote it.
    memory::Reservation memory;
    bool ready = false;  // guarded by order_mu_
  };

  void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) override;
  void Spawn() override;
  absl::string_view method() const override { return "Fetch.FetchPages"; }
  // A walk counts as one item against its caller's items/s quota.
  int64_t quota_items() const override { return 1; }
  void OnStart() override;
  void OnCancel() override ABSL_LOCKS_EXCLUDED(walk_mu_);
  void OnMessageTaken() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One more page taken by gRPC (or claimed as its next write): the walk's
  // window moves. Lock-free; any thread.
  void CountTaken();
  // Tells the walk of `n` more pages taken by gRPC.
  static void Consumed(fetch::WalkHandle* walk, int64_t n);

  void OnPage(fetch::Page page) ABSL_LOCKS_EXCLUDED(order_mu_);
  // On the CQ thread: converts and writes the pages OnPage queued.
  void OnHopped(bool ok) ABSL_LOCKS_EXCLUDED(order_mu_);
  void OnWalkDone(absl::Status status) ABSL_LOCKS_EXCLUDED(order_mu_);
  void Convert(Slot& slot, const absl::StatusOr<std::string>* processed);
  // Marks `ready` (converted) ready, writes the ready pages at the front
  // and finishes after the last one.
  void Flush(absl::Span<const std::shared_ptr<Slot>> ready)
      ABSL_LOCKS_EXCLUDED(order_mu_);

  const FetchServices services_;
  request::WalkPlan plan_;  // set in OnStart, before the walk starts

  // Held around engine->Walk, which may end the walk at once (an engine
  // shutting down) and so reach order_mu_.
  absl::Mutex walk_mu_ ABSL_ACQUIRED_BEFORE(order_mu_);
  std::shared_ptr<fetch::WalkHandle> walk_ ABSL_GUARDED_BY(walk_mu_);
  bool cancelled_ ABSL_GUARDED_BY(walk_mu_) = false;
  // The walk for OnMessageTaken, which runs under the write lock and so
  // cannot take walk_mu_: set once Walk returned. Pages taken before that
  // (a processed page on a worker may be, in principle) wait in `early_`;
  // both sides count and then drain, so none is lost.
  std::atomic<fetch::WalkHandle*> taken_by_ = nullptr;
  std::atomic<int64_t> early_ = 0;

  // Flush holds it around Write, which takes the write path's mu_: this
  // order, never the other.
  absl::Mutex order_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::deque<std::shared_ptr<Slot>> slots_ ABSL_GUARDED_BY(order_mu_);
  std::optional<absl::Status> end_ ABSL_GUARDED_BY(order_mu_);
  bool finishing_ ABSL_GUARDED_BY(order_mu_) = false;
  // Pages to convert and write on the CQ thread, and whether the hop that
  // takes them there is set. The I/O thread only queues a page and, for
  // the first of a run, sets the alarm: the proto, the resume token and
  // gRPC's write (a fifth of its CPU per page) happen on the CQ thread
  // while the I/O thread waits for the next page.
  std::vector<std::shared_ptr<Slot>> to_convert_ ABSL_GUARDED_BY(order_mu_);
  bool hop_pending_ ABSL_GUARDED_BY(order_mu_) = false;
  grpc::Alarm hop_;  // Set only under order_mu_, with hop_pending_ false
  Event hopped_{this,
                static_cast<void (Call::*)(bool)>(&FetchPagesCall::OnHopped)};
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_PAGES_CALL_H_
