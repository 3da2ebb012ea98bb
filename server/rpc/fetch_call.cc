#include "server/rpc/fetch_call.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/rpc/convert.h"

namespace fetchd::rpc {
namespace {

// With fail_fast, the first failure becomes the RPC's status.
absl::Status FailureOf(const v1::FetchResult& r) {
  return absl::Status(static_cast<absl::StatusCode>(r.error().code()),
                      absl::StrCat("item ", r.index(), " (", r.url(),
                                   "): ", r.error().message()));
}

// Drops the body of a result that would take the RPC past its byte budget.
void DropBodyOverBudget(v1::FetchResult& r, int64_t held, int64_t limit) {
  r.clear_body();
  if (r.error().code() == 0) {
    r.mutable_error()->set_code(
        static_cast<int>(absl::StatusCode::kResourceExhausted));
    r.mutable_error()->set_message(
        absl::StrCat("body dropped: the RPC already holds ", held,
                     " body bytes (--max_response_bytes=", limit, ")"));
  }
}

}  // namespace

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
  const bool cancel_rest = plan_.options.fail_fast && !plan_.rejected.empty();
  const size_t engine_items = specs.size();
  for (auto& rejected : plan_.rejected) {
    v1::FetchResult r;
    fetch::FetchResult failed;
    failed.status = std::move(rejected.status);
    failed.final_url = rejected.url;
    ToProtoResult(rejected.index, rejected.url, std::move(failed), nullptr,
                  plan_.drop_body, &r);
    Complete(std::move(r));
  }
  if (engine_items == 0) return;  // Complete() already finished
  if (cancel_rest) {  // fail_fast and an item was refused: fetch nothing
    for (size_t i = 0; i < engine_items; ++i) {
      fetch::FetchResult cancelled;
      cancelled.status = absl::CancelledError(
          "cancelled: an item was invalid and fail_fast is set");
      cancelled.final_url = url_of_spec_[i];
      v1::FetchResult r;
      ToProtoResult(plan_.request_index[i], url_of_spec_[i],
                    std::move(cancelled), nullptr, plan_.drop_body, &r);
      Complete(std::move(r));
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
  const uint32_t index = plan_.request_index[spec_index];
  const process::Processor& processor = plan_.processors[spec_index];
  if (processor.kind == process::Processor::Kind::kNone ||
      !result.status.ok()) {
    v1::FetchResult r;
    ToProtoResult(index, url_of_spec_[spec_index], std::move(result), nullptr,
                  plan_.drop_body, &r);
    return Complete(std::move(r));
  }
  // The body must outlive a run on the worker pool.
  auto held = std::make_shared<fetch::FetchResult>(std::move(result));
  services_.processor->Run(
      processor, held->body,
      [this, held, index, spec_index](absl::StatusOr<std::string> output) {
        v1::FetchResult r;
        ToProtoResult(index, url_of_spec_[spec_index], std::move(*held),
                      &output, plan_.drop_body, &r);
        Complete(std::move(r));
      });
}

void BatchDriver::Complete(v1::FetchResult result) {
  deliver_(std::move(result));
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
  OnPlanned(*plan);
  driver_.Start(
      *std::move(plan), [this](v1::FetchResult r) { OnResult(std::move(r)); },
      [this] { OnAllDone(); });
}

template <typename Base>
bool FetchCall<Base>::NoteFailure(const v1::FetchResult& r) {
  if (!fail_fast_ || r.error().code() == 0) return true;
  absl::MutexLock lock(&mu_);
  if (!first_failure_.ok()) return false;  // cancelled by the first failure
  first_failure_ = FailureOf(r);
  return true;
}

template <typename Base>
void FetchCall<Base>::OnAllDone() {
  absl::Status failure;
  {
    absl::MutexLock lock(&mu_);
    failure = first_failure_;
  }
  this->Finish(ToGrpcStatus(failure));
}

// --- BatchFetch (unary)
// -------------------------------------------------------------

void BatchFetchCall::RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) {
  services_.service->RequestBatchFetch(&context(), &request_, &responder_, cq,
                                       cq, tag);
}

void BatchFetchCall::Spawn() { Arm(new BatchFetchCall(services_, loop())); }

void BatchFetchCall::OnPlanned(const BatchPlan& plan) {
  response_.mutable_results()->Reserve(static_cast<int>(plan.item_count));
  for (size_t i = 0; i < plan.item_count; ++i) response_.add_results();
}

void BatchFetchCall::OnResult(v1::FetchResult r) {
  if (!NoteFailure(r)) return;
  absl::MutexLock lock(&response_mu_);
  const int64_t limit = services_.config->max_response_bytes;
  if (body_bytes_ + static_cast<int64_t>(r.body().size()) > limit) {
    DropBodyOverBudget(r, body_bytes_, limit);
  }
  body_bytes_ += static_cast<int64_t>(r.body().size());
  const uint32_t index = r.index();
  *response_.mutable_results(static_cast<int>(index)) = std::move(r);
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

void StreamBatchFetchCall::OnResult(v1::FetchResult r) {
  if (!NoteFailure(r)) return;
  const int64_t limit = services_.config->max_response_bytes;
  const int64_t queued = static_cast<int64_t>(queued_bytes());
  if (queued + static_cast<int64_t>(r.body().size()) > limit) {
    DropBodyOverBudget(r, queued, limit);
  }
  Write(std::move(r));
}

}  // namespace fetchd::rpc
