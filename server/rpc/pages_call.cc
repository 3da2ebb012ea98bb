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
  // NOTE: under walk_mu_, so OnMessageSent and OnCancel see the handle.
  walk_ = services_.request.engine->Walk(
      plan_.first, plan_.strategy, plan_.from, plan_.options,
      [this](fetch::Page page) { OnPage(std::move(page)); },
      [this](absl::Status status) { OnWalkDone(std::move(status)); });
  if (cancelled_) walk_->Cancel();
}

void FetchPagesCall::OnCancel() {
  absl::MutexLock lock(&walk_mu_);
  cancelled_ = true;
  if (walk_ != nullptr) walk_->Cancel();
}

void FetchPagesCall::OnMessageSent() {
  absl::MutexLock lock(&walk_mu_);
  if (walk_ != nullptr) walk_->Consumed();
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
  {
    absl::MutexLock lock(&order_mu_);
    slots_.push_back(slot);
  }
  if (plan_.processor.kind == process::Processor::Kind::kNone ||
      !slot->page.result.status.ok()) {
    Convert(*slot, nullptr);
    return Flush(slot.get());
  }
  services_.request.processor->Run(
      plan_.processor, slot->page.result.body,
      [this, slot](absl::StatusOr<std::string> output) {
        request::HoldProcessed(slot->page.result, output);
        Convert(*slot, &output);
        Flush(slot.get());
      });
}

void FetchPagesCall::OnWalkDone(absl::Status status) {
  {
    absl::MutexLock lock(&order_mu_);
    end_ = std::move(status);
  }
  Flush(nullptr);
}

void FetchPagesCall::Flush(Slot* ready) {
  grpc::Status finish;
  {
    absl::MutexLock lock(&order_mu_);
    if (ready != nullptr) ready->ready = true;
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
