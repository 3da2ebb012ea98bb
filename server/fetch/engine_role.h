// Internal to server/fetch/ (the engine's parts include it; nothing else
// should). The I/O-thread rule, machine-checked.
//
// Owns: nothing but a name. ThreadRole is a capability with no state and no
// cost: the loop's I/O-thread fields are ABSL_GUARDED_BY(io_thread_) and its
// I/O-thread methods ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_), so clang's
// -Wthread-safety rejects any path to them that did not start in Run (which
// asserts the role) or in a curl callback (which asserts it too: curl calls
// them from curl_multi_perform on the I/O thread).
// Threads: any thread may name it; only the I/O thread may assert it.
#ifndef FETCHD_SERVER_FETCH_ENGINE_ROLE_H_
#define FETCHD_SERVER_FETCH_ENGINE_ROLE_H_

#include "absl/base/thread_annotations.h"

namespace fetchd::fetch::internal {

class ABSL_LOCKABLE ThreadRole {
 public:
  // "This code runs on the role's thread": a statement for the analysis,
  // no instruction.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}
};

}  // namespace fetchd::fetch::internal

#endif  // FETCHD_SERVER_FETCH_ENGINE_ROLE_H_
