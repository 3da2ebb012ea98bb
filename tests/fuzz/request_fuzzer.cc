// Request conversion (server/request/plan.cc, rpc/compute_call.cc's
// KernelFromProto): arbitrary bytes parsed as each request proto, then the
// checks and conversions the server runs before any work starts, without a
// server and without the engine: PlanBatch and each item's
// ValidateFetchSpec, ASCII URL and host rules; PlanWalk, the walk's start
// and its resume token; KernelFromProto and ValidateKernel (a kernel that
// fits small limits is run).
//
// Input: one byte picks the message (0 BatchFetchRequest, 1
// FetchPagesRequest, 2 RunRequest, 3 Jobs.SubmitRequest: CheckWork and
// ValidateWebhook), one byte the deadline; the rest is the message in
// protobuf wire format.
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "server/compute/compute.h"
#include "server/fetch/address_guard.h"
#include "server/jobs/webhook.h"
#include "server/jobs/work.h"
#include "server/request/request.h"
#include "server/rpc/compute_call.h"
#include "tests/fuzz/fuzz_input.h"

namespace fetchd::rpc {
namespace {

struct Setup {
  request::FetchConfig config;
  std::unique_ptr<fetch::AddressGuard> guard;
};

const Setup& TheSetup() {
  static const Setup* setup = [] {
    auto* s = new Setup;
    s->config.resume_token_key = "fuzz-key-0123456789abcdef0123456789abcdef";
    s->config.address_guard.deny_hosts = {"*.internal", "metadata"};
    absl::StatusOr<std::unique_ptr<fetch::AddressGuard>> guard =
        fetch::AddressGuard::Create(s->config.address_guard);
    FUZZ_CHECK(guard.ok());
    s->guard = *std::move(guard);
    return s;
  }();
  return *setup;
}

void CheckBatch(const v1::BatchFetchRequest& request, absl::Time deadline) {
  const Setup& setup = TheSetup();
  absl::StatusOr<request::BatchPlan> plan =
      request::PlanBatch(request, setup.config, {}, deadline);
  if (!plan.ok()) return;
  FUZZ_CHECK(plan->item_count == static_cast<size_t>(request.items_size()));
  FUZZ_CHECK(plan->specs.size() + plan->rejected.size() == plan->item_count);
  FUZZ_CHECK(plan->processors.size() == plan->specs.size());
  FUZZ_CHECK(plan->request_index.size() == plan->specs.size());
  FUZZ_CHECK(plan->options.max_concurrency >= 1);
  for (size_t i = 0; i < plan->specs.size(); ++i) {
    FUZZ_CHECK(plan->request_index[i] < plan->item_count);
    FUZZ_CHECK(process::ValidateProcessor(plan->processors[i]).ok());
    // What Engine::Submit does with each item before any transfer.
    fetch::FetchSpec spec = plan->specs[i];
    if (!fetch::ValidateFetchSpec(spec, setup.config.engine.limits).ok()) {
      continue;
    }
    absl::StatusOr<std::string> ascii = fetch::AsciiUrl(spec.url);
    if (!ascii.ok()) continue;
    absl::StatusOr<std::string> host = fetch::UrlHost(*ascii);
    if (host.ok()) (void)setup.guard->CheckHost(*host);
  }
  v1::FetchResult out;
  fetch::FetchResult result;
  result.status = absl::NotFoundError("fuzz");
  request::ToProtoResult(0, request.items(0).url(), std::move(result), nullptr,
                         plan->drop_body, &out);
  FUZZ_CHECK(out.error().code() ==
             static_cast<int>(absl::StatusCode::kNotFound));
}

void CheckWalk(const v1::FetchPagesRequest& request, absl::Time deadline) {
  const Setup& setup = TheSetup();
  absl::StatusOr<request::WalkPlan> plan =
      request::PlanWalk(request, setup.config, {}, deadline);
  if (!plan.ok()) {
    // A bad field, or a list past its cap (#16: RESOURCE_EXHAUSTED).
    FUZZ_CHECK(plan.status().code() == absl::StatusCode::kInvalidArgument ||
               plan.status().code() == absl::StatusCode::kResourceExhausted);
    return;
  }
  FUZZ_CHECK(
      fetch::ValidateFetchSpec(plan->first, setup.config.engine.limits).ok());
  FUZZ_CHECK(fetch::ValidatePageStrategy(plan->strategy).ok());
  fetch::Paginator paginator(plan->strategy, plan->first.url,
                             setup.config.engine.limits);
  paginator.Restart(plan->from);
  if (!plan->from.done()) {
    FUZZ_CHECK(paginator.UrlOf(plan->from.next_index).value_or("") ==
               plan->from.next_url);
  }
  // The token of where this walk stands resumes it there.
  v1::FetchPagesRequest again = request;
  again.set_resume_token(request::ResumeToken(setup.config, *plan, plan->from));
  absl::StatusOr<request::WalkPlan> resumed =
      request::PlanWalk(again, setup.config, {}, deadline);
  if (resumed.ok()) {
    FUZZ_CHECK(resumed->from.next_index == plan->from.next_index);
    FUZZ_CHECK(resumed->from.next_url == plan->from.next_url);
    FUZZ_CHECK(resumed->fingerprint == plan->fingerprint);
  } else {
    // Only a start URL that fails the item checks (e.g. the page
    // parameter made it too long) is refused.
    FUZZ_CHECK(absl::StartsWith(resumed.status().message(),
                                "resume_token: its next page's"));
  }
}

void CheckCompute(const v1::RunRequest& request) {
  absl::StatusOr<compute::Kernel> kernel = request::KernelFromProto(request);
  if (!kernel.ok()) return;
  (void)compute::ValidateKernel(*kernel, compute::KernelLimits{});
  (void)compute::KernelName(*kernel);
  // Small enough to run on every input.
  compute::KernelLimits small;
  small.max_n = 4096;
  small.max_data_bytes = 4096;
  small.max_rounds = 4096;  // sha256_chain has its own cap since #16
  if (compute::ValidateKernel(*kernel, small).ok()) {
    FUZZ_CHECK(compute::RunKernel(*kernel, compute::StopToken()).ok());
  }
}

// #17: what Jobs.Submit checks before it stores a job (the work, through
// the same planning, and the webhook).
void CheckSubmit(const v1::SubmitRequest& request) {
  const Setup& setup = TheSetup();
  absl::StatusOr<jobs::WorkSummary> work =
      jobs::CheckWork(request, setup.config, compute::KernelLimits{}, 1000);
  if (!work.ok()) {
    FUZZ_CHECK(work.status().code() == absl::StatusCode::kInvalidArgument ||
               work.status().code() == absl::StatusCode::kResourceExhausted);
  } else if (request.has_batch_fetch()) {
    FUZZ_CHECK(work->total == request.batch_fetch().items_size());
  }
  if (request.has_webhook()) {
    jobs::WebhookSecrets secrets;
    absl::Status valid =
        jobs::ValidateWebhook({.url = request.webhook().url(),
                               .secret = request.webhook().secret(),
                               .secret_id = request.webhook().secret_id()},
                              secrets);
    FUZZ_CHECK(valid.ok() ||
               valid.code() == absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace fetchd::rpc

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fetchd::fuzz::FuzzInput in(data, size);
  const uint8_t which = in.Byte();
  const absl::Time deadline = (in.Byte() & 1) != 0
                                  ? absl::InfiniteFuture()
                                  : absl::FromUnixSeconds(2'000'000'000);
  const absl::string_view wire = in.Rest();
  const int wire_size = static_cast<int>(wire.size());
  switch (which % 4) {
    case 0: {
      fetchd::v1::BatchFetchRequest request;
      if (request.ParseFromArray(wire.data(), wire_size)) {
        fetchd::rpc::CheckBatch(request, deadline);
      }
      break;
    }
    case 1: {
      fetchd::v1::FetchPagesRequest request;
      if (request.ParseFromArray(wire.data(), wire_size)) {
        fetchd::rpc::CheckWalk(request, deadline);
      }
      break;
    }
    case 2: {
      fetchd::v1::RunRequest request;
      if (request.ParseFromArray(wire.data(), wire_size)) {
        fetchd::rpc::CheckCompute(request);
      }
      break;
    }
    case 3: {
      fetchd::v1::SubmitRequest request;
      if (request.ParseFromArray(wire.data(), wire_size)) {
        fetchd::rpc::CheckSubmit(request);
      }
      break;
    }
  }
  return 0;
}
