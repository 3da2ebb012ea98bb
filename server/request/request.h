// request/: one fetch request, planned and run, without gRPC.
//
// A BatchFetchRequest or FetchPagesRequest (protobuf messages; no gRPC
// here) becomes a plan the engine runs: PlanBatch and PlanWalk apply the
// defaults and limits of FetchConfig (server flags) and the caller's
// identity (Caller), and BatchDriver runs a BatchPlan item by item. Live
// RPCs (server/rpc/) and the job runner (server/jobs/) plan and run through
// here alike, so a job runs as its submitter exactly as the live RPC would.
#ifndef FETCHD_SERVER_REQUEST_REQUEST_H_
#define FETCHD_SERVER_REQUEST_REQUEST_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fetchd/v1/compute.pb.h"
#include "fetchd/v1/fetch.pb.h"
#include "server/compute/compute.h"
#include "server/fetch/fetch.h"
#include "server/memory/memory.h"
#include "server/process/process.h"

namespace fetchd::request {

// A fetch request's defaults and caps (server flags), for live RPCs and
// jobs alike.
struct FetchConfig {
  fetch::Engine::Options engine;  // in-flight/per-host limits, budget, caps
  int max_batch_items = 20000;
  int default_concurrency = 64;
  int max_concurrency = 1024;
  int64_t default_max_body_bytes = 8 << 20;
  int default_max_redirects = 5;
  absl::Duration default_item_timeout = absl::Seconds(30);
  // The process-wide memory budget (--memory_budget_bytes, resolved: main
  // derives it from the cgroup when the flag is 0). Bodies as they arrive,
  // processed output, kept headers, page items and messages queued for a
  // stream count against it; Server::Start hands it to the engine.
  int64_t memory_budget_bytes = memory::kDefaultBudgetBytes;
  // Body bytes one RPC may hold before they are sent (unary: the whole
  // response; streaming: results queued for a slow reader).
  int64_t max_response_bytes = 256 << 20;
  // Taken off the RPC deadline so results reach the caller before it.
  absl::Duration deadline_reserve = absl::Milliseconds(50);
  size_t process_inline_max_bytes = 64 << 10;  // bigger bodies: worker pool
  int default_prefetch = 2;                    // FetchPages
  int max_prefetch = 16;                       // --max_prefetch
  int64_t max_walk_pages = 1'000'000;          // --max_walk_pages
  // CPU one processor run may use (--max_process_time; zero: no limit).
  absl::Duration max_process_time = absl::Seconds(2);
  // Signs FetchPages resume tokens (--token_key_file; at least 32 bytes).
  // Empty: Server::Start makes a random one, good for this process only.
  std::string resume_token_key;
  // The SSRF guard (--allow_private_networks, --allow_cidrs, --deny_cidrs,
  // --allow_hosts, --deny_hosts), on by default: only public addresses.
  // Server::Start installs it as engine.address_policy and
  // engine.host_policy (whatever those held). With engine.proxy set (the
  // --upstream_proxy) the proxy checks addresses; host rules still apply.
  fetch::AddressGuardOptions address_guard;
  // --propagate_trace: a live RPC's W3C trace (its caller's traceparent)
  // goes on to its origin requests as child spans (BatchOptions::trace,
  // WalkOptions::trace). Jobs never carry one: they outlive the call.
  bool propagate_trace = true;
  // Tests only: wraps the guard's address policy, e.g. in a harness that
  // refuses every non-loopback address whatever the guard says.
  std::function<fetch::AddressPolicy(fetch::AddressPolicy guard)>
      wrap_address_policy;
};

// Who a request runs as: the one place caller identity enters a plan.
struct Caller {
  // Whose fair share of the engine the request draws on
  // (fetch::BatchOptions::identity): for an RPC the caller's identity, or an
  // anonymous caller's peer address (rpc/'s QuotaKey); for a job, the
  // identity stored with it.
  std::string identity;
};

// What running a request needs (not owned; they outlive it).
struct Services {
  fetch::Engine* engine;
  process::ProcessRunner* processor;
  const FetchConfig* config;
};

struct BatchPlan {
  size_t item_count = 0;
  std::vector<fetch::FetchSpec> specs;  // the items the engine runs
  std::vector<uint32_t> request_index;  // specs[i] is items[request_index[i]]
  std::vector<process::Processor> processors;  // one per spec
  // Items refused before fetching (a bad processor or timeout).
  struct Rejected {
    uint32_t index;
    std::string url;
    absl::Status status;
  };
  std::vector<Rejected> rejected;
  fetch::BatchOptions options;
  bool drop_body = false;
};

// Request-level errors: INVALID_ARGUMENT naming the field and the limit,
// RESOURCE_EXHAUSTED for more items than --max_batch_items. Item-level
// problems land in `rejected` (or are found by the engine) instead.
// `deadline` is the caller's (InfiniteFuture: none); the engine's is
// config.deadline_reserve before it. BatchRequest is v1::BatchFetchRequest or
// v1::StreamBatchFetchRequest (the same fields; defined for those two).
template <typename BatchRequest>
absl::StatusOr<BatchPlan> PlanBatch(const BatchRequest& request,
                                    const FetchConfig& config, Caller caller,
                                    absl::Time deadline);

// A FetchPages request, checked and ready for Engine::Walk.
struct WalkPlan {
  fetch::FetchSpec first;
  process::Processor processor;
  fetch::PageStrategy strategy;
  fetch::WalkPosition from;  // the start, or where the resume token points
  fetch::WalkOptions options;
  bool drop_body = false;
  std::string fingerprint;  // ties resume tokens to this URL and strategy
};

// INVALID_ARGUMENT naming the field and the limit for anything the walk
// cannot run with (including a resume token from another request).
absl::StatusOr<WalkPlan> PlanWalk(const v1::FetchPagesRequest& request,
                                  const FetchConfig& config, Caller caller,
                                  absl::Time deadline);

// The signed, opaque token that resumes `plan`'s walk at `next`
// (server/request/resume_token.h), with config.resume_token_key.
std::string ResumeToken(const FetchConfig& config, const WalkPlan& plan,
                        const fetch::WalkPosition& next);

// Fills `out` for item `index`; `processed` is the processor's output (or
// error) when one ran.
void ToProtoResult(uint32_t index, const std::string& url,
                   fetch::FetchResult result,
                   const absl::StatusOr<std::string>* processed, bool drop_body,
                   v1::FetchResult* out);

// One finished item before conversion: the fetch result and, when a
// processor ran, its output.
struct ItemOutcome {
  uint32_t index = 0;
  const std::string* url = nullptr;  // owned by the driver, outlives the call
  fetch::FetchResult result;
  std::optional<absl::StatusOr<std::string>> processed;
  bool body_over_budget = false;  // --max_response_bytes: send no body

  // The item's status: the fetch's, else the processor's.
  absl::Status status() const;
  // Into the API's FetchResult. Returns what the message holds against the
  // memory budget (the body's bytes are released when it is dropped).
  memory::Reservation ToProto(bool drop_body, v1::FetchResult* out) &&;
};

// Inline: the RPCs call them per item, and there is no LTO (they were
// defined in the RPCs' own file before request/ existed).
inline absl::Status ItemOutcome::status() const {
  if (!result.status.ok() || !processed.has_value()) return result.status;
  return processed->status();
}

inline memory::Reservation ItemOutcome::ToProto(bool drop_body,
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

// Counts a processor's `output` in the result's reservation; when the
// memory budget has no room for it, it becomes RESOURCE_EXHAUSTED naming
// the budget (and is freed).
void HoldProcessed(fetch::FetchResult& result,
                   absl::StatusOr<std::string>& output);

// Runs one plan: rejected items first, then the engine's results, each
// processed if asked and handed to `deliver` exactly once per item. `deliver`
// may run on the caller's thread, the engine's I/O thread or a worker, possibly
// concurrently; `finished` runs once, after the last `deliver` returned.
class BatchDriver {
 public:
  using Deliver = absl::AnyInvocable<void(ItemOutcome)>;
  using Finished = absl::AnyInvocable<void()>;

  explicit BatchDriver(const Services& services) : services_(services) {}

  void Start(BatchPlan plan, Deliver deliver, Finished finished);
  // Cancels the engine's part (the rest still reports, as CANCELLED).
  void Cancel();

 private:
  void OnFetched(size_t spec_index, fetch::FetchResult result);
  void Complete(ItemOutcome outcome);

  const Services services_;
  BatchPlan plan_;
  Deliver deliver_;
  Finished finished_;
  std::vector<std::string> url_of_spec_;  // the item URLs, for results
  std::vector<std::string> url_of_rejected_;
  std::atomic<size_t> remaining_{0};
  std::shared_ptr<fetch::BatchHandle> handle_;
};

// --- Compute and walks (results.cc)
// -------------------------------------------

// The request's kernel (INVALID_ARGUMENT naming the oneof when unset). Its
// limits are checked by compute::KernelRunner when it runs.
absl::StatusOr<compute::Kernel> KernelFromProto(const v1::RunRequest& req);

// A kernel's answer, with its queue and run times.
void ToProtoCompute(compute::ComputeResult result, v1::RunResponse* out);

void ToProtoDuration(absl::Duration d, google::protobuf::Duration* out);

// A walk's page as the API's Page, with the resume token that continues
// after it. Returns what the message holds against the memory budget (the
// body's share is released when the plan drops bodies).
memory::Reservation ToProtoPage(const FetchConfig& config, const WalkPlan& plan,
                                fetch::Page page,
                                const absl::StatusOr<std::string>* processed,
                                v1::Page* out);

}  // namespace fetchd::request

#endif  // FETCHD_SERVER_REQUEST_REQUEST_H_
