// process/: what fetchd computes from a fetched body, so callers get the
// answer instead of the bytes.
//
//   html_title     the document's <title>, whitespace collapsed (gumbo, a
//                  real HTML5 parser)
//   sha256         hex SHA-256 of the body (OpenSSL, via compute/)
//   json_pointer   the JSON value at an RFC 6901 pointer, as JSON text
//   json_validate  "valid", or the parse error
//
// Hostile bodies (#16): nothing here recurses on the document. JSON nested
// deeper than kMaxJsonDepth is refused (FAILED_PRECONDITION) while it is
// parsed; html_title finds the title with a linear scan of the first
// kMaxTitleScanBytes and gives gumbo only the <title> element (at most
// kMaxTitleBytes). Every processor checks a CPU
// budget (--max_process_time) and stops with RESOURCE_EXHAUSTED past it.
//
// ProcessRunner runs small bodies inline (on the caller's thread, the fetch
// I/O thread) and big ones on the worker pool, so the I/O thread never
// stalls on a large document.
#ifndef FETCHD_SERVER_PROCESS_PROCESS_H_
#define FETCHD_SERVER_PROCESS_PROCESS_H_

#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "server/compute/compute.h"

namespace fetchd::process {

// The deepest nesting of arrays and objects the JSON processors accept.
inline constexpr int kMaxJsonDepth = 512;
// html_title looks for the <title> start tag in the first
// kMaxTitleScanBytes of the body (later ones are NOT_FOUND), and reads at
// most kMaxTitleBytes of the element; a longer one is cut (an unclosed
// <title> would otherwise run to the end of the body).
inline constexpr size_t kMaxTitleScanBytes = 1 << 20;
inline constexpr size_t kMaxTitleBytes = 16 << 10;

struct Processor {
  enum class Kind { kNone, kHtmlTitle, kSha256, kJsonPointer, kJsonValidate };
  Kind kind = Kind::kNone;
  std::string pointer;  // kJsonPointer only
};

// INVALID_ARGUMENT naming `process.json_pointer` for a malformed pointer.
absl::Status ValidateProcessor(const Processor& processor);

// The processor's output for `body`. Errors: NOT_FOUND (no <title>, no
// value at the pointer), FAILED_PRECONDITION (the body is not JSON, or
// nests deeper than kMaxJsonDepth), RESOURCE_EXHAUSTED (more than
// `max_cpu` of this thread's CPU time spent), with a message that says
// which.
absl::StatusOr<std::string> Process(
    const Processor& processor, absl::string_view body,
    absl::Duration max_cpu = absl::InfiniteDuration());

// Runs processors inline or on a WorkerPool it does not own. Thread-safe.
class ProcessRunner {
 public:
  using Callback = absl::AnyInvocable<void(absl::StatusOr<std::string>) &&>;

  // Bodies of at most `inline_max_bytes` are processed on the calling
  // thread. Each Process gets `max_cpu` of CPU (--max_process_time;
  // infinite or zero: no budget).
  ProcessRunner(compute::WorkerPool* pool, size_t inline_max_bytes,
                absl::Duration max_cpu = absl::InfiniteDuration())
      : pool_(pool),
        inline_max_bytes_(inline_max_bytes),
        max_cpu_(max_cpu <= absl::ZeroDuration() ? absl::InfiniteDuration()
                                                 : max_cpu) {}

  // Calls `done` exactly once: inline, or later on a worker. When the pool
  // is full, `done` gets RESOURCE_EXHAUSTED at once (naming the limit).
  // `body` must stay alive and unchanged until `done` runs.
  void Run(const Processor& processor, absl::string_view body, Callback done);

 private:
  compute::WorkerPool* const pool_;
  const size_t inline_max_bytes_;
  const absl::Duration max_cpu_;
};

}  // namespace fetchd::process

#endif  // FETCHD_SERVER_PROCESS_PROCESS_H_
