// BatchFetchRequest -> a plan the engine runs, and engine results -> the
// API's FetchResult (internal to rpc/).
#ifndef FETCHD_SERVER_RPC_FETCH_PLAN_H_
#define FETCHD_SERVER_RPC_FETCH_PLAN_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "fetchd/v1/fetch.pb.h"
#include "server/fetch/fetch.h"
#include "server/process/process.h"
#include "server/rpc/rpc.h"

namespace fetchd::rpc {

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
absl::StatusOr<BatchPlan> PlanBatch(const v1::BatchFetchRequest& request,
                                    const FetchConfig& config,
                                    absl::Time rpc_deadline);

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
                                  const FetchConfig& config,
                                  absl::Time rpc_deadline);

// The signed, opaque token that resumes `plan`'s walk at `next`
// (server/rpc/resume_token.h), with config.resume_token_key.
std::string ResumeToken(const FetchConfig& config, const WalkPlan& plan,
                        const fetch::WalkPosition& next);

// Fills `out` for item `index`; `processed` is the processor's output (or
// error) when one ran.
void ToProtoResult(uint32_t index, const std::string& url,
                   fetch::FetchResult result,
                   const absl::StatusOr<std::string>* processed, bool drop_body,
                   v1::FetchResult* out);

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_FETCH_PLAN_H_
