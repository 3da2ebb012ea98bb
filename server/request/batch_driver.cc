// HoldProcessed and BatchDriver (request.h).
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/request/request.h"

namespace fetchd::request {

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

}  // namespace fetchd::request
