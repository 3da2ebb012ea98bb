// Test support: the fault suite's load (tests/chaos, bench/chaos_load).
// Well-behaved callers fetch small bodies from a normal origin in a loop
// while hostile callers aim BatchFetch at a HostileOrigin route, and a
// prober checks gRPC health; every call's latency, code and lateness
// (answer after its deadline + a margin) is recorded.
#ifndef FETCHD_TESTS_SUPPORT_CHAOS_DRIVER_H_
#define FETCHD_TESTS_SUPPORT_CHAOS_DRIVER_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"

namespace fetchd::testing {

// What one hostile caller sends, again and again, until the phase ends.
struct HostileLoad {
  enum class Process { kNone, kJsonPointer, kJsonValidate, kHtmlTitle };
  std::string path;  // a HostileOrigin route, e.g. "/hang"
  int callers = 1;   // threads, one BatchFetch in flight each
  int items = 1;     // per BatchFetch, all of them in flight at once
  absl::Duration item_timeout = absl::Seconds(2);
  absl::Duration deadline = absl::Seconds(4);  // of each RPC
  int64_t max_body_bytes = 0;                  // 0: the server's default
  // Between one answer and the next call: the fault is the origin's
  // behaviour, not a flood of calls (floods are the quotas' business).
  absl::Duration pause = absl::Milliseconds(100);
  Process process = Process::kNone;
};

// The fault catalogue: name -> load (hang, drip, endless, big-header,
// many-headers, redirect-loop, reset, deep-json, deep-html, big-64mib).
std::vector<std::pair<std::string, HostileLoad>> Faults();
std::optional<HostileLoad> FaultByName(const std::string& name);

struct CallStats {
  int calls = 0;
  std::vector<absl::Duration> latencies;  // one per call
  // Calls answered later than deadline + kLateMargin, or not at all.
  int late = 0;
  // RPC status codes by name ("OK", "DEADLINE_EXCEEDED", ...).
  std::map<std::string, int> rpc_codes;
  // Item codes by name, over the items of OK RPCs.
  std::map<std::string, int> item_codes;
  // The first message seen per item code other than OK.
  std::map<std::string, std::string> item_messages;
  // Good callers only: calls with a non-OK RPC or item.
  int failed = 0;
  std::string first_failure;
};

struct PhaseResult {
  CallStats good;
  CallStats hostile;
  int health_checks = 0;
  int health_failures = 0;  // not SERVING, or no answer within 1 s
  std::string first_health_failure;
};

inline constexpr absl::Duration kLateMargin = absl::Milliseconds(250);
inline constexpr absl::Duration kGoodDeadline = absl::Seconds(5);

// Runs `good_callers` well-behaved callers (BatchFetch of 4 x 1 KB from
// `good_base`/bytes/1024) and a health prober against `target`, plus
// `hostile` against `hostile_base` when given. Hostile callers start calls
// until `duration` has passed; the phase ends when the last one is
// answered, so it lasts at most duration + hostile->deadline + margin.
PhaseResult RunPhase(const std::string& target, const std::string& good_base,
                     const std::string& hostile_base,
                     const HostileLoad* hostile, absl::Duration duration,
                     int good_callers = 2);

// The q-quantile (0..1) of `samples`, nearest rank; zero when empty.
absl::Duration Quantile(std::vector<absl::Duration> samples, double q);

// A field of /proc/<pid>/status in kB ("VmHWM", "VmRSS"); -1 if unreadable.
int64_t ProcStatusKb(pid_t pid, const std::string& field);

// CPU time (user + system) `pid` has used so far; zero if unreadable.
absl::Duration ProcessCpuTime(pid_t pid);

// Whether `pid` exists and is not a zombie.
bool ProcessAlive(pid_t pid);

// Flags the `fetchd` binary knows ("memory_budget_bytes", ...), from its
// --helpfull; a cache per binary path.
bool FetchdKnowsFlag(const std::string& fetchd, const std::string& flag);

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_CHAOS_DRIVER_H_
