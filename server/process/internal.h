// The individual processors (internal to process/).
#ifndef FETCHD_SERVER_PROCESS_INTERNAL_H_
#define FETCHD_SERVER_PROCESS_INTERNAL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace fetchd::process {

// A budget of this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so a
// processor that shares a core with others is not charged for their time.
// Reading the clock is a syscall (~0.3 us): loops call Tick() per unit of
// work, which reads it every `kTicksPerCheck` ticks.
class CpuBudget {
 public:
  explicit CpuBudget(absl::Duration limit);
  // True once the budget is spent (and from then on).
  bool Tick() {
    if (++ticks_ < kTicksPerCheck) return spent_;
    ticks_ = 0;
    return Check();
  }
  // Reads the clock now.
  bool Check();
  // RESOURCE_EXHAUSTED naming the processor and --max_process_time.
  absl::Status Exhausted(absl::string_view processor) const;

 private:
  static constexpr int kTicksPerCheck = 1024;
  const absl::Duration limit_;
  absl::Duration start_;
  int ticks_ = 0;
  bool spent_ = false;
};

absl::StatusOr<std::string> HtmlTitle(absl::string_view body,
                                      CpuBudget& budget);
absl::StatusOr<std::string> JsonPointer(absl::string_view pointer,
                                        absl::string_view body,
                                        CpuBudget& budget);
absl::StatusOr<std::string> JsonValidate(absl::string_view body,
                                         CpuBudget& budget);
absl::Status ValidateJsonPointer(absl::string_view pointer);

}  // namespace fetchd::process

#endif  // FETCHD_SERVER_PROCESS_INTERNAL_H_
