// What a caller says about the trace and request an RPC belongs to, read
// from its gRPC metadata (internal to rpc/): a W3C `traceparent`, kept in
// the RPC's log line and passed on to its origin requests
// (--propagate_trace), and an `x-request-id`, echoed in the log line.
// Malformed values are dropped, never an error.
#ifndef FETCHD_SERVER_RPC_TRACE_CONTEXT_H_
#define FETCHD_SERVER_RPC_TRACE_CONTEXT_H_

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/strings/string_view.h"
#include "server/fetch/trace.h"

namespace fetchd::rpc {

// Longest x-request-id kept (UUIDs are 36 characters; many ids are longer,
// none need more).
inline constexpr size_t kMaxRequestIdBytes = 128;

struct CallTrace {
  // Valid when the call carried exactly one valid version-00 traceparent.
  fetch::TraceContext context;
  // The call's x-request-id when it carried exactly one, of 1 to
  // kMaxRequestIdBytes printable ASCII characters; else empty.
  std::string request_id;
};

// The call's trace and request id from its client metadata.
CallTrace ReadCallTrace(const grpc::ServerContext& context);

// Whether `id` may go into a log line as a request id: 1 to
// kMaxRequestIdBytes characters, each printable ASCII (space to '~').
bool ValidRequestId(absl::string_view id);

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_TRACE_CONTEXT_H_
