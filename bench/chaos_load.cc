// chaos_load: one fault of the fault suite against a running fetchd, for
// bench/chaos.sh. Starts the test suite's normal origin (127.0.0.1) and
// hostile origin (127.0.0.2) in process, measures the well-behaved callers
// alone for --solo_seconds, then again for --seconds while hostile callers
// aim --fault at fetchd (tests/support/chaos_driver.h), and prints one line:
//
//   fault=hang solo_p50_ms=.. solo_p99_ms=.. p50_ms=.. p99_ms=..
//   good_calls=.. good_failed=.. late=.. health_failures=.. hostile_calls=..
//   rpc_codes=OK:2 item_codes=DEADLINE_EXCEEDED:600
//
//   chaos_load --target=127.0.0.1:50051 --fault=hang --seconds=5
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/support/chaos_driver.h"
#include "tests/support/hostile_origin.h"
#include "tests/support/origin.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "fetchd address");
ABSL_FLAG(std::string, fault, "hang",
          "hang, drip, endless, big-header, many-headers, redirect-loop, "
          "reset, deep-json, deep-html or big-64mib; or \"list\"");
ABSL_FLAG(int, drip_connections, 0,
          "for --fault=drip: items per hostile call instead of the suite's");
ABSL_FLAG(double, seconds, 5, "how long hostile callers keep calling");
ABSL_FLAG(double, solo_seconds, 3, "good callers alone, first");
ABSL_FLAG(int, good_callers, 2, "well-behaved callers");

namespace {

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

std::string Codes(const std::map<std::string, int>& codes) {
  return codes.empty() ? "-"
                       : absl::StrJoin(codes, ",", absl::PairFormatter(":"));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  using namespace fetchd::testing;  // NOLINT: a small driver
  const std::string fault = absl::GetFlag(FLAGS_fault);
  if (fault == "list") {
    for (const auto& [name, load] : Faults()) std::printf("%s\n", name.c_str());
    return 0;
  }
  std::optional<HostileLoad> load = FaultByName(fault);
  if (!load.has_value()) {
    std::fprintf(stderr, "chaos_load: no fault %s (--fault=list)\n",
                 fault.c_str());
    return 2;
  }
  if (fault == "drip" && absl::GetFlag(FLAGS_drip_connections) > 0) {
    load->items = absl::GetFlag(FLAGS_drip_connections);
  }
  Origin origin("127.0.0.1");
  HostileOrigin::Options options;
  options.address = "127.0.0.2";
  HostileOrigin hostile(options);
  if (!hostile.ok()) {
    std::fprintf(stderr, "chaos_load: hostile origin did not start\n");
    return 1;
  }
  const std::string target = absl::GetFlag(FLAGS_target);
  const int callers = absl::GetFlag(FLAGS_good_callers);
  // Warm up (connections, the origin's small listen backlog), unmeasured.
  RunPhase(target, origin.base(), hostile.base(), nullptr,
           absl::Milliseconds(300), callers);
  const PhaseResult solo =
      RunPhase(target, origin.base(), hostile.base(), nullptr,
               absl::Seconds(absl::GetFlag(FLAGS_solo_seconds)), callers);
  const PhaseResult run =
      RunPhase(target, origin.base(), hostile.base(), &*load,
               absl::Seconds(absl::GetFlag(FLAGS_seconds)), callers);
  std::printf(
      "fault=%s solo_p50_ms=%.2f solo_p99_ms=%.2f p50_ms=%.2f p99_ms=%.2f "
      "good_calls=%d good_failed=%d late=%d health_failures=%d "
      "hostile_calls=%d peak_hostile_connections=%d rpc_codes=%s "
      "item_codes=%s\n",
      fault.c_str(), Ms(Quantile(solo.good.latencies, 0.5)),
      Ms(Quantile(solo.good.latencies, 0.99)),
      Ms(Quantile(run.good.latencies, 0.5)),
      Ms(Quantile(run.good.latencies, 0.99)), run.good.calls, run.good.failed,
      run.good.late + run.hostile.late, run.health_failures, run.hostile.calls,
      hostile.peak_connections(), Codes(run.hostile.rpc_codes).c_str(),
      Codes(run.hostile.item_codes).c_str());
  return 0;
}
