#include "server/rpc/fetch_call.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/rpc/convert.h"

namespace fetchd::rpc {
namespace {

// With fail_fast, the first failure becomes the RPC's status.
absl::Status FailureOf(const request::ItemOutcome& outcome) {
  const absl::Status status = outcome.status();
  return absl::Status(status.code(),
                      absl::StrCat("item ", outcome.index, " (", *outcome.url,
                                   "): ", status.message()));
}

// Drops the body of a result that would take the RPC past its byte budget.
void DropBodyOverBudget(request::ItemOutcome& outcome, int64_t held,
                        int64_t limit) {
  outcome.body_over_budget = true;  // dropped at conversion; size kept
  if (outcome.status().ok()) {
    outcome.result.status = absl::ResourceExhaustedError(
        absl::StrCat("body dropped: the RPC already holds ", held,
                     " body bytes (--max_response_bytes=", limit, ")"));
  }
}

}  // namespace

// --- FetchCall
// ---------------------------------------------------------------------

template <typename Base>
void FetchCall<Base>::OnStart() {
  absl::StatusOr<request::BatchPlan> plan = request::PlanBatch(
      this->request_, *services_.request.config,
      {.identity = this->ShareIdentity()}, DeadlineOf(this->context()));
  if (!plan.ok()) return this->Finish(ToGrpcStatus(plan.status()));
  if (services_.request.config->propagate_trace) {
    plan->options.trace = this->trace().context;
  }
  fail_fast_ = plan->options.fail_fast;
  drop_body_ = plan->drop_body;
  OnPlanned(*plan);
  driver_.Start(
      *std::move(plan),
      [this](request::ItemOutcome o) {
        retries_.fetch_add(std::max(0, o.result.attempts - 1),
                           std::memory_order_relaxed);
        OnResult(std::move(o));
      },
      [this] { OnAllDone(); });
}

template <typename Base>
bool FetchCall<Base>::NoteFailure(const request::ItemOutcome& outcome) {
  if (!fail_fast_ || outcome.status().ok()) return true;
  absl::MutexLock lock(&mu_);
  if (!first_failure_.ok()) return false;  // cancelled by the first failure
  first_failure_ = FailureOf(outcome);
  return true;
}

template <typename Base>
void FetchCall<Base>::OnAllDone() {
  absl::Status failure;
  {
    absl::MutexLock lock(&mu_);
    failure = first_failure_;
  }
  // The last item may end on the I/O thread: encoding the response there
  // would hold up every other call's transfers.
  this->FinishOnCq(ToGrpcStatus(failure));
}

// --- BatchFetch (unary)
// -------------------------------------------------------------

void BatchFetchCall::RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) {
  services_.service->RequestBatchFetch(&context(), &request_, &responder_, cq,
                                       cq, tag);
}

void BatchFetchCall::Spawn() { Arm(new BatchFetchCall(services_, loop())); }

void BatchFetchCall::OnPlanned(const request::BatchPlan& plan) {
  response_->mutable_results()->Reserve(static_cast<int>(plan.item_count));
  for (size_t i = 0; i < plan.item_count; ++i) response_->add_results();
}

void BatchFetchCall::OnResult(request::ItemOutcome outcome) {
  if (!NoteFailure(outcome)) return;
  absl::MutexLock lock(&response_mu_);
  const int64_t limit = services_.request.config->max_response_bytes;
  const auto size = static_cast<int64_t>(outcome.result.body.size());
  if (!drop_body() && body_bytes_ + size > limit) {
    DropBodyOverBudget(outcome, body_bytes_, limit);
  } else if (!drop_body()) {
    body_bytes_ += size;
  }
  // Converted straight into the arena-allocated response, which holds its
  // bytes until the response is sent (the call's end).
  const int index = static_cast<int>(outcome.index);
  held_.Merge(std::move(outcome).ToProto(drop_body(),
                                         response_->mutable_results(index)));
}

// --- StreamBatchFetch
// -----------------------------------------------------------------

void StreamBatchFetchCall::RequestCall(grpc::ServerCompletionQueue* cq,
                                       Tag* tag) {
  services_.service->RequestStreamBatchFetch(&context(), &request_, &writer_,
                                             cq, cq, tag);
}

void StreamBatchFetchCall::Spawn() {
  Arm(new StreamBatchFetchCall(services_, loop()));
}

void StreamBatchFetchCall::OnResult(request::ItemOutcome outcome) {
  if (!NoteFailure(outcome)) return;
  const int64_t limit = services_.request.config->max_response_bytes;
  const auto queued = static_cast<int64_t>(queued_bytes());
  if (!drop_body() &&
      queued + static_cast<int64_t>(outcome.result.body.size()) > limit) {
    DropBodyOverBudget(outcome, queued, limit);
  }
  v1::StreamBatchFetchResponse message;
  memory::Reservation memory =
      std::move(outcome).ToProto(drop_body(), message.mutable_result());
  Write(std::move(message), std::move(memory));
}

}  // namespace fetchd::rpc
