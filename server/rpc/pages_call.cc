#include "server/rpc/pages_call.h"

#include <utility>

#include "server/rpc/convert.h"

namespace fetchd::rpc {

void FetchPagesCall::RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) {
  services_.service->RequestFetchPages(&context(), &request_, &writer_, cq, cq,
                                       tag);
}

void FetchPagesCall::Spawn() { Arm(new FetchPagesCall(services_, loop())); }

void FetchPagesCall::OnStart() {
  absl::StatusOr<request::WalkPlan> plan =
      request::PlanWalk(request_, *services_.request.config,
                        {.identity = ShareIdentity()}, DeadlineOf(context()));
  if (!plan.ok()) return Finish(ToGrpcStatus(plan.status()));
  plan_ = *std::move(plan);
  if (services_.request.config->propagate_trace) {
    plan_.options.trace = trace().context;
  }
  absl::MutexLock lock(&walk_mu_);
  // NOTE: under walk_mu_, so OnCancel sees the handle.
  walk_ = services_.request.engine->Walk(
      plan_.first, plan_.strategy, plan_.from, plan_.options,
      [this](fetch::Page page) { OnPage(std::move(page)); },
      [this](absl::Status status) { OnWalkDone(std::move(status)); });
  taken_by_.store(walk_.get());
  Consumed(walk_.get(), early_.exchange(0));
  if (cancelled_) walk_->Cancel();
}

void FetchPagesCall::OnCancel() {
  absl::MutexLock lock(&walk_mu_);
  cancelled_ = true;
  if (walk_ != nullptr) walk_->Cancel();
}

// A page counts as consumed once gRPC has taken it (its write started) or
// it was claimed as the next write (OnPage), not once its write completes:
// fetchd still holds at most `prefetch` pages beyond the one being written.
void FetchPagesCall::OnMessageTaken() { CountTaken(); }

void FetchPagesCall::CountTaken() {
  early_.fetch_add(1);
  if (fetch::WalkHandle* walk = taken_by_.load()) {
    Consumed(walk, early_.exchange(0));
  }
}

void FetchPagesCall::Consumed(fetch::WalkHandle* walk, int64_t n) {
  for (; n > 0; --n) walk->Consumed();
}

void FetchPagesCall::Convert(Slot& slot,
                             const absl::StatusOr<std::string>* processed) {
  slot.memory = request::ToProtoPage(*services_.request.config, plan_,
                                     std::move(slot.page), processed,
                                     slot.message.mutable_page());
}

void FetchPagesCall::OnPage(fetch::Page page) {
  auto slot = std::make_shared<Slot>();
  slot->page = std::move(page);
  const bool process =
      plan_.processor.kind != process::Processor::Kind::kNone &&
      slot->page.result.status.ok();
  bool taken = false;
  {
    absl::MutexLock lock(&order_mu_);
    // Nothing before it left to write: the page is the stream's next
    // write, whichever thread gets to it, so it counts as taken now. The
    // next page then never waits for the CQ thread to wake up; a reader
    // that stops still holds the walk (the write in flight never ends).
    taken = slots_.empty() && ClaimNextWrite();
    slots_.push_back(slot);
    if (!process) {
      to_convert_.push_back(slot);
      if (!hop_pending_) {
        hop_pending_ = true;
        Ref();  // the alarm's event; OnHopped lets go
        // An alarm in the past fires at once, on this call's CQ thread.
        hop_.Set(loop()->cq(), gpr_inf_past(GPR_CLOCK_MONOTONIC), &hopped_);
      }
    }
  }
  if (taken) CountTaken();
  if (!process) return;
  services_.request.processor->Run(
      plan_.processor, slot->page.result.body,
      [this, slot](absl::StatusOr<std::string> output) {
        request::HoldProcessed(slot->page.result, output);
        Convert(*slot, &output);
        Flush({slot});
      });
}

void FetchPagesCall::OnHopped(bool /*ok: false only if cancelled, which
                                     nothing does*/) {
  std::vector<std::shared_ptr<Slot>> ready;
  {
    absl::MutexLock lock(&order_mu_);
    hop_pending_ = false;
    ready.swap(to_convert_);
  }
  for (const std::shared_ptr<Slot>& slot : ready) Convert(*slot, nullptr);
  Flush(ready);
  Unref();  // NOTE: last: it may delete the call
}

void FetchPagesCall::OnWalkDone(absl::Status status) {
  {
    absl::MutexLock lock(&order_mu_);
    end_ = std::move(status);
  }
  Flush({});
}

void FetchPagesCall::Flush(absl::Span<const std::shared_ptr<Slot>> ready) {
  grpc::Status finish;
  {
    absl::MutexLock lock(&order_mu_);
    for (const std::shared_ptr<Slot>& slot : ready) slot->ready = true;
    while (!slots_.empty() && slots_.front()->ready) {
      Write(std::move(slots_.front()->message),
            std::move(slots_.front()->memory));
      slots_.pop_front();
    }
    if (!slots_.empty() || !end_.has_value() || finishing_) return;
    finishing_ = true;
    finish = ToGrpcStatus(*end_);
  }
  // NOTE: outside order_mu_: the call may be deleted once Finish started.
  Finish(std::move(finish));
}

}  // namespace fetchd::rpc
