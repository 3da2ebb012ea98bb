#include "server/rpc/trace_context.h"

#include <algorithm>
#include <optional>

namespace fetchd::rpc {
namespace {

// The value of `key` when the metadata holds it exactly once: two
// traceparents (or request ids) say nothing trustworthy.
std::optional<absl::string_view> OnlyValue(const grpc::ServerContext& context,
                                           const char* key) {
  const auto& metadata = context.client_metadata();
  auto [begin, end] = metadata.equal_range(key);
  if (begin == end || std::next(begin) != end) return std::nullopt;
  return absl::string_view(begin->second.data(), begin->second.size());
}

}  // namespace

bool ValidRequestId(absl::string_view id) {
  return !id.empty() && id.size() <= kMaxRequestIdBytes &&
         std::all_of(id.begin(), id.end(),
                     [](char c) { return c >= ' ' && c <= '~'; });
}

CallTrace ReadCallTrace(const grpc::ServerContext& context) {
  CallTrace trace;
  if (std::optional<absl::string_view> value =
          OnlyValue(context, "traceparent")) {
    if (std::optional<fetch::TraceContext> parsed =
            fetch::ParseTraceparent(*value)) {
      trace.context = *parsed;
    }
  }
  if (std::optional<absl::string_view> id = OnlyValue(context, "x-request-id");
      id.has_value() && ValidRequestId(*id)) {
    trace.request_id = std::string(*id);
  }
  return trace;
}

}  // namespace fetchd::rpc
