#include "server/rpc/fetch_call.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/rpc/convert.h"

namespace fetchd::rpc {
namespace {

// With fail_fast, the first failure becomes the RPC's status.
absl::Status FailureOf(const ItemOutcome& outcome) {
  const absl::Status status = outcome.status();
  return absl::Status(status.code(),
                      absl::StrCat("item ", outcome.index, " (", *outcome.url,
                                   "): ", status.message()));
}

// Drops the body of a result that would take the RPC past its byte budget.
void DropBodyOverBudget(ItemOutcome& outcome, int64_t held, int64_t limit) {
  outcome.body_over_budget = true;  // dropped at conversion; size kept
  if (outcome.status().ok()) {
    outcome.result.status = absl::ResourceExhaustedError(
        absl::StrCat("body dropped: the RPC already holds ", held,
                     " body bytes (--max_response_bytes=", limit, ")"));
  }
}

}  // namespace

absl::Status ItemOutcome::status() const {
  if (!result.status.ok() || !processed.has_value()) return result.status;
  return processed->status();
}

memory::Reservation ItemOutcome::ToProto(bool drop_body,
                                         v1::FetchResult* out) && {
  memory::Reservation memory = std::move(result.memory);
  const bool drop = drop_body || body_over_budget;
  if (drop) {  // the body goes with the conversion: so do its bytes
    memory.ShrinkTo(memory.bytes() -
                    fetch::kBodyMemoryFactor *
                        static_cast<int64_t>(result.body.capacity()));
  }
  ToProtoResult(index, *url, std::move(result),
                processed.has_value() ? &*processed : nullptr, drop, out);
  return memory;
}

void HoldProcessed(fetch::FetchResult& result,
                   absl::StatusOr<std::string>& output) {
  if (!output.ok()) return;
  if (!result.memory.TryGrow(static_cast<int64_t>(output->capacity()))) {
    const memory::Budget* budget = result.memory.budget();
    output = absl::ResourceExhaustedError(absl::StrCat(
        "the memory budget of ", budget != nullptr ? budget->limit() : 0,
        " bytes (--memory_budget_bytes) is spent: no room for ", output->size(),
        " bytes of processed output"));
  }
}

// --- BatchDriver
// -----------------------------------------------------------------

void BatchDriver::Start(BatchPlan plan, Deliver deliver, Finished finished) {
  plan_ = std::move(plan);
  deliver_ = std::move(deliver);
  finished_ = std::move(finished);
  remaining_.store(plan_.item_count);
  // The engine's specs must not move while it runs: take them out first.
  std::vector<fetch::FetchSpec> specs = std::move(plan_.specs);
  url_of_spec_.reserve(specs.size());
  for (const auto& spec : specs) url_of_spec_.push_back(spec.url);
  url_of_rejected_.reserve(plan_.rejected.size());
  for (const auto& rejected : plan_.rejected) {
    url_of_rejected_.push_back(rejected.url);
  }
  const bool cancel_rest = plan_.options.fail_fast && !plan_.rejected.empty();
  const size_t engine_items = specs.size();
  for (size_t i = 0; i < plan_.rejected.size(); ++i) {
    ItemOutcome outcome;
    outcome.index = plan_.rejected[i].index;
    outcome.url = &url_of_rejected_[i];
    outcome.result.status = std::move(plan_.rejected[i].status);
    outcome.result.final_url = url_of_rejected_[i];
    Complete(std::move(outcome));
  }
  if (engine_items == 0) return;  // Complete() already finished
  if (cancel_rest) {  // fail_fast and an item was refused: fetch nothing
    for (size_t i = 0; i < engine_items; ++i) {
      ItemOutcome outcome;
      outcome.index = plan_.request_index[i];
      outcome.url = &url_of_spec_[i];
      outcome.result.status = absl::CancelledError(
          "cancelled: an item was invalid and fail_fast is set");
      outcome.result.final_url = url_of_spec_[i];
      Complete(std::move(outcome));
    }
    return;
  }
  handle_ = services_.engine->Submit(
      std::move(specs), plan_.options,
      [this](size_t i, fetch::FetchResult result) {
        OnFetched(i, std::move(result));
      },
      nullptr);
}

void BatchDriver::Cancel() {
  if (handle_ != nullptr) handle_->Cancel();
}

void BatchDriver::OnFetched(size_t spec_index, fetch::FetchResult result) {
  ItemOutcome outcome;
  outcome.index = plan_.request_index[spec_index];
  outcome.url = &url_of_spec_[spec_index];
  const process::Processor& processor = plan_.processors[spec_index];
  if (processor.kind == process::Processor::Kind::kNone ||
      !result.status.ok()) {
    outcome.result = std::move(result);
    return Complete(std::move(outcome));
  }
  // The body must outlive a run on the worker pool.
  auto held = std::make_shared<ItemOutcome>(std::move(outcome));
  held->result = std::move(result);
  services_.processor->Run(processor, held->result.body,
                           [this, held](absl::StatusOr<std::string> output) {
                             HoldProcessed(held->result, output);
                             held->processed = std::move(output);
                             Complete(std::move(*held));
                           });
}

void BatchDriver::Complete(ItemOutcome outcome) {
  deliver_(std::move(outcome));
  if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) finished_();
}

// --- FetchCall
// ---------------------------------------------------------------------

template <typename Base>
void FetchCall<Base>::OnStart() {
  absl::StatusOr<BatchPlan> plan =
      PlanBatch(this->request_, *services_.config, DeadlineOf(this->context()));
  if (!plan.ok()) return this->Finish(ToGrpcStatus(plan.status()));
  fail_fast_ = plan->options.fail_fast;
  plan->options.identity = this->ShareIdentity();
  drop_body_ = plan->drop_body;
  OnPlanned(*plan);
  driver_.Start(
      *std::move(plan),
      [this](ItemOutcome o) {
        retries_.fetch_add(std::max(0, o.result.attempts - 1),
                           std::memory_order_relaxed);
        OnResult(std::move(o));
      },
      [this] { OnAllDone(); });
}

template <typename Base>
bool FetchCall<Base>::NoteFailure(const ItemOutcome& outcome) {
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

void BatchFetchCall::OnPlanned(const BatchPlan& plan) {
  response_->mutable_results()->Reserve(static_cast<int>(plan.item_count));
  for (size_t i = 0; i < plan.item_count; ++i) response_->add_results();
}

void BatchFetchCall::OnResult(ItemOutcome outcome) {
  if (!NoteFailure(outcome)) return;
  absl::MutexLock lock(&response_mu_);
  const int64_t limit = services_.config->max_response_bytes;
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

void StreamBatchFetchCall::OnResult(ItemOutcome outcome) {
  if (!NoteFailure(outcome)) return;
  const int64_t limit = services_.config->max_response_bytes;
  const auto queued = static_cast<int64_t>(queued_bytes());
  if (!drop_body() &&
      queued + static_cast<int64_t>(outcome.result.body.size()) > limit) {
    DropBodyOverBudget(outcome, queued, limit);
  }
  v1::FetchResult message;
  memory::Reservation memory =
      std::move(outcome).ToProto(drop_body(), &message);
  Write(std::move(message), std::move(memory));
}

}  // namespace fetchd::rpc
