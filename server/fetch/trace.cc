#include "server/fetch/trace.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"

namespace fetchd::fetch {
namespace {

bool IsLowerHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

// `n` lower-case hex digits at `at`, copied to `out`; false if any is not.
template <size_t N>
bool TakeHex(absl::string_view value, size_t at, std::array<char, N>& out) {
  for (size_t i = 0; i < N; ++i) {
    if (!IsLowerHex(value[at + i])) return false;
    out[i] = value[at + i];
  }
  return true;
}

template <size_t N>
bool AllZero(const std::array<char, N>& hex) {
  return std::all_of(hex.begin(), hex.end(), [](char c) { return c == '0'; });
}

}  // namespace

std::optional<TraceContext> ParseTraceparent(absl::string_view value) {
  // 00-{32}-{16}-{2}: dashes at 2, 35 and 52.
  if (value.size() != 55 || value[0] != '0' || value[1] != '0' ||
      value[2] != '-' || value[35] != '-' || value[52] != '-') {
    return std::nullopt;
  }
  TraceContext trace;
  if (!TakeHex(value, 3, trace.trace_id) ||
      !TakeHex(value, 36, trace.span_id) || !TakeHex(value, 53, trace.flags) ||
      AllZero(trace.trace_id) || AllZero(trace.span_id)) {
    return std::nullopt;
  }
  trace.valid = true;
  return trace;
}

std::string ChildTraceparentLine(const TraceContext& trace, uint64_t span) {
  return absl::StrFormat(
      "traceparent: 00-%s-%016x-%s", trace.trace_id_hex(), span,
      absl::string_view(trace.flags.data(), trace.flags.size()));
}

bool IsTraceparentHeader(absl::string_view name) {
  return absl::EqualsIgnoreCase(name, "traceparent");
}

}  // namespace fetchd::fetch
