// W3C Trace Context (https://www.w3.org/TR/trace-context/) for origin
// requests: the caller's trace, parsed from its `traceparent`, and the
// child `traceparent` each origin request carries. Plain data, no gRPC and
// no tracing library: the RPC layer parses what its caller sent, the engine
// writes one header per attempt when there is a trace.
#ifndef FETCHD_SERVER_FETCH_TRACE_H_
#define FETCHD_SERVER_FETCH_TRACE_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace fetchd::fetch {

// A parsed version-00 traceparent: ids as lower-case hex, as sent.
struct TraceContext {
  std::array<char, 32> trace_id{};
  std::array<char, 16> span_id{};  // the caller's span: our parent
  std::array<char, 2> flags{};     // trace-flags, passed on as received
  bool valid = false;              // false: no trace (nothing is added)

  absl::string_view trace_id_hex() const {
    return {trace_id.data(), trace_id.size()};
  }
  absl::string_view span_id_hex() const {
    return {span_id.data(), span_id.size()};
  }
};

// The context in a `traceparent` value, or none when it is not a valid
// version-00 value: "00-" 32 lower-case hex (not all zero) "-" 16 lower-case
// hex (not all zero) "-" 2 lower-case hex, exactly 55 characters. Anything
// else (another version, upper case, extra fields) is none: an invalid
// header is ignored, never an error.
std::optional<TraceContext> ParseTraceparent(absl::string_view value);

// "traceparent: 00-<trace id>-<span>-<flags>": the header line of an origin
// request made as a child of `trace`, with `span` its new span id (written
// as 16 hex digits; the caller makes it non-zero).
std::string ChildTraceparentLine(const TraceContext& trace, uint64_t span);

// Whether a request header is named traceparent (case-insensitive): a
// caller's own wins over the RPC's trace.
bool IsTraceparentHeader(absl::string_view name);

}  // namespace fetchd::fetch

#endif  // FETCHD_SERVER_FETCH_TRACE_H_
