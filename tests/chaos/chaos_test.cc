// The fault suite (issue #16 item 10): a real fetchd process, a hostile
// origin (tests/support/hostile_origin.h) on 127.0.0.2, a normal origin on
// 127.0.0.1, and well-behaved callers running throughout. Each test first
// measures the good callers alone (solo), then again while hostile callers
// aim one fault at fetchd, and asserts that fetchd
//   - stays up (process alive, Health SERVING before, during and after);
//   - keeps its peak RSS (VmHWM) under kBudgetBytes + kRssSlackBytes;
//   - answers every RPC, good or hostile, by its deadline + kLateMargin;
//   - answers every good call in full (RPC and items OK);
//   - keeps the good callers' p99 within max(3 x solo p99,
//     solo p99 + kP99Floor): the floor keeps a noisy shared 2-core machine,
//     where a solo p99 is a few ms, from failing the 3x on scheduling noise.
// plus what each fault's items must come back with.
//
// Some faults need features other #16 items add; their flags are probed in
// this fetchd's --helpfull, passed when known, and the tests that cannot
// pass without them are skipped, naming the flag and the item.
#include <gtest/gtest.h>
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/chaos_driver.h"
#include "tests/support/fetchd_process.h"
#include "tests/support/hostile_origin.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd {
namespace {

using ::fetchd::testing::CallStats;
using ::fetchd::testing::FaultByName;
using ::fetchd::testing::FetchdKnowsFlag;
using ::fetchd::testing::FetchdProcess;
using ::fetchd::testing::HostileLoad;
using ::fetchd::testing::HostileOrigin;
using ::fetchd::testing::kLateMargin;
using ::fetchd::testing::Origin;
using ::fetchd::testing::PhaseResult;
using ::fetchd::testing::ProcessAlive;
using ::fetchd::testing::ProcessCpuTime;
using ::fetchd::testing::ProcStatusKb;
using ::fetchd::testing::Quantile;
using ::fetchd::testing::RunPhase;
using ::fetchd::testing::WaitFor;

constexpr int64_t kBudgetBytes = int64_t{256} << 20;
#if defined(__SANITIZE_ADDRESS__)
#define FETCHD_CHAOS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FETCHD_CHAOS_ASAN 1
#endif
#endif
// Above the budget: fetchd's baseline (~20 MB), allocator caches, gRPC and
// curl buffers that the budget does not count. The fetchd under test comes
// from the same build: under ASan, add its quarantine (256 MiB by default)
// and shadow memory, which hold freed bytes the budget has given back
// (measured: up to 483 MiB peak against 160 MiB in the release build).
#ifdef FETCHD_CHAOS_ASAN
constexpr int64_t kRssSlackBytes = int64_t{128 + 384} << 20;
#else
constexpr int64_t kRssSlackBytes = int64_t{128} << 20;
#endif
constexpr absl::Duration kWarmUp = absl::Milliseconds(300);
constexpr absl::Duration kSolo = absl::Seconds(1);
constexpr absl::Duration kFault = absl::Seconds(3);
// Measured here (load average 11-14 on 2 cores from parallel builds): solo
// p99 anywhere from 1.2 to 19 ms between runs of the same test. Under ASan
// every request costs 2-3x the CPU, and the solo and fault phases share the
// machine with another test (ctest -j2): DeepHtml's good p99 read 38.8 ms
// against a 37.6 ms limit there, with nothing wrong.
#ifdef FETCHD_CHAOS_ASAN
constexpr absl::Duration kP99Floor = absl::Milliseconds(60);
#else
constexpr absl::Duration kP99Floor = absl::Milliseconds(30);
#endif
// Enough good calls for a p99 to mean something.
constexpr int kMinGoodCalls = 200;

// The chaos fetchd's flags, in one place. Loopback only, twice over: only
// the two origin hosts are allowed (--allow_hosts), and only 127.0.0.0/8
// among the special-purpose ranges. --max_per_host=320 lets the hang and
// drip faults hold hundreds of connections to the hostile host.
const std::vector<std::string>& BaseFlags() {
  static const auto* flags = new std::vector<std::string>{
      "--allow_hosts=127.0.0.1,127.0.0.2",
      "--allow_cidrs=127.0.0.0/8",
      "--log_level=error",  // one line per RPC would fill the stderr pipe
      "--max_per_host=320",
      "--drain_delay=0s",
      "--shutdown_grace=1s"};
  return *flags;
}

// Flags of other #16 items, passed only when this fetchd knows them.
struct GatedFlag {
  const char* name;
  const char* value;
  const char* item;  // who adds it
};
constexpr GatedFlag kGatedFlags[] = {
    {"memory_budget_bytes", "268435456", "#16 item 3, memory budget"},
    {"min_bytes_per_second", "1024", "#16 item 6, low-speed limit"},
    {"low_speed_window", "2s", "#16 item 6, low-speed limit"},
    {"max_response_headers", "1000", "#16 item 6, response header caps"},
    {"max_response_header_bytes", "262144", "#16 item 6, response header caps"},
    {"max_process_time", "200ms", "#16 item 2, bounded processing"},
};
constexpr absl::Duration kLowSpeedWindow = absl::Seconds(2);

bool Knows(const std::string& flag) {
  return FetchdKnowsFlag(FETCHD_PATH, flag);
}

std::vector<std::string> ChaosFlags() {
  std::vector<std::string> flags = BaseFlags();
  for (const GatedFlag& f : kGatedFlags) {
    if (Knows(f.name))
      flags.push_back(absl::StrCat("--", f.name, "=", f.value));
  }
  return flags;
}

#define SKIP_UNLESS_FLAG(flag, item)                                     \
  if (!Knows(flag)) {                                                    \
    GTEST_SKIP() << "needs --" flag " (" item "): this fetchd lacks it"; \
  }

std::string Codes(const std::map<std::string, int>& codes) {
  return absl::StrJoin(codes, " ", absl::PairFormatter("="));
}

class ChaosTest : public ::testing::Test {
 protected:
  struct Outcome {
    PhaseResult solo;
    PhaseResult fault;
    absl::Duration fetchd_cpu;  // CPU fetchd used during the fault phase
    absl::Duration wall;        // the fault phase's length
  };

  void StartAll() {
    fetchd_ = std::make_unique<FetchdProcess>(FETCHD_PATH, ChaosFlags());
    ASSERT_TRUE(fetchd_->ok());
    origin_ = std::make_unique<Origin>("127.0.0.1");
    HostileOrigin::Options options;
    options.address = "127.0.0.2";
    options.max_connection_age = absl::Seconds(30);
    hostile_ = std::make_unique<HostileOrigin>(options);
    ASSERT_TRUE(hostile_->ok());
  }

  // Solo, then the fault; the survival checks every fault shares.
  // `check_p99` false: the p99 is measured and printed, not asserted (only
  // where a colleague's #16 item is needed for it; the test says which).
  Outcome Run(const HostileLoad& load, bool check_p99 = true) {
    Outcome o;
    StartAll();
    if (HasFatalFailure()) return o;
    // Warm up, unmeasured: the normal origin's small listen backlog drops
    // SYNs when the first connections open at once, costing a 1 s retry.
    RunPhase(fetchd_->address(), origin_->base(), hostile_->base(), nullptr,
             kWarmUp);
    o.solo = RunPhase(fetchd_->address(), origin_->base(), hostile_->base(),
                      nullptr, kSolo);
    hostile_->ResetCounters();
    const absl::Duration cpu0 = ProcessCpuTime(fetchd_->process().pid());
    const absl::Time t0 = absl::Now();
    o.fault = RunPhase(fetchd_->address(), origin_->base(), hostile_->base(),
                       &load, kFault);
    o.fetchd_cpu = ProcessCpuTime(fetchd_->process().pid()) - cpu0;
    o.wall = absl::Now() - t0;
    ExpectSurvived(o, check_p99);
    return o;
  }
  Outcome Run(const std::string& fault, bool check_p99 = true) {
    std::optional<HostileLoad> load = FaultByName(fault);
    EXPECT_TRUE(load.has_value()) << fault;
    return load ? Run(*load, check_p99) : Outcome();
  }

  void ExpectSurvived(const Outcome& o, bool check_p99) {
    const pid_t pid = fetchd_->process().pid();
    EXPECT_TRUE(ProcessAlive(pid)) << "fetchd died";
    // Answers now, SERVING.
    grpc::health::v1::HealthCheckResponse health;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    const grpc::Status status =
        grpc::health::v1::Health::NewStub(
            grpc::CreateChannel(fetchd_->address(),
                                grpc::InsecureChannelCredentials()))
            ->Check(&context, grpc::health::v1::HealthCheckRequest(), &health);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    EXPECT_GT(o.fault.health_checks, 0);
    EXPECT_EQ(o.fault.health_failures, 0) << o.fault.first_health_failure;

    const int64_t hwm_kb = ProcStatusKb(pid, "VmHWM");
    EXPECT_GT(hwm_kb, 0);
    EXPECT_LT(hwm_kb * 1024, kBudgetBytes + kRssSlackBytes)
        << "peak RSS " << hwm_kb / 1024 << " MiB";

    const CallStats& good = o.fault.good;
    const CallStats& bad = o.fault.hostile;
    EXPECT_EQ(o.solo.good.failed, 0) << o.solo.good.first_failure;
    EXPECT_EQ(good.failed, 0) << good.first_failure;
    EXPECT_EQ(good.late, 0);
    EXPECT_EQ(bad.late, 0) << "hostile calls answered after their deadline";
    EXPECT_GT(bad.calls, 0);
    EXPECT_GE(o.solo.good.calls, kMinGoodCalls);
    if (check_p99) {
      EXPECT_GE(good.calls, kMinGoodCalls);
    }

    const absl::Duration solo_p99 = Quantile(o.solo.good.latencies, 0.99);
    const absl::Duration p99 = Quantile(good.latencies, 0.99);
    const absl::Duration limit = std::max(3 * solo_p99, solo_p99 + kP99Floor);
    if (check_p99) {
      EXPECT_LE(p99, limit) << "good p99 " << p99 << " vs solo " << solo_p99;
    }

    // One line per fault, for the log (bench/chaos.sh prints the table).
    std::printf(
        "chaos %s: good p50 %s p99 %s (solo p50 %s p99 %s, limit %s, %d "
        "calls); peak RSS %lld MiB; hostile calls %d, RPC codes {%s}, item "
        "codes {%s}; hostile peak connections %d; fetchd CPU %s in %s\n",
        ::testing::UnitTest::GetInstance()->current_test_info()->name(),
        absl::FormatDuration(Quantile(good.latencies, 0.5)).c_str(),
        absl::FormatDuration(p99).c_str(),
        absl::FormatDuration(Quantile(o.solo.good.latencies, 0.5)).c_str(),
        absl::FormatDuration(solo_p99).c_str(),
        absl::FormatDuration(limit).c_str(), good.calls,
        static_cast<long long>(hwm_kb / 1024), bad.calls,
        Codes(bad.rpc_codes).c_str(), Codes(bad.item_codes).c_str(),
        hostile_->peak_connections(),
        absl::FormatDuration(absl::Trunc(o.fetchd_cpu, absl::Milliseconds(1)))
            .c_str(),
        absl::FormatDuration(absl::Trunc(o.wall, absl::Milliseconds(1)))
            .c_str());
    for (const auto& [code, message] : bad.item_messages) {
      std::printf("  %s: %s\n", code.c_str(), message.substr(0, 200).c_str());
    }
  }

  // Every hostile item came back with `code`, in OK RPCs (fetchd answered,
  // not the client's deadline).
  void ExpectAllItems(const Outcome& o, const std::string& code,
                      int items_per_call) {
    const CallStats& bad = o.fault.hostile;
    EXPECT_EQ(bad.rpc_codes.count("OK") ? bad.rpc_codes.at("OK") : 0, bad.calls)
        << Codes(bad.rpc_codes);
    EXPECT_EQ(bad.item_codes.size(), 1u) << Codes(bad.item_codes);
    EXPECT_EQ(bad.item_codes.count(code) ? bad.item_codes.at(code) : 0,
              bad.calls * items_per_call)
        << Codes(bad.item_codes);
  }

  // After the fault, fetchd lets go of every hostile connection.
  void ExpectConnectionsReleased() {
    EXPECT_TRUE(WaitFor([&] { return hostile_->open_connections() == 0; },
                        absl::Seconds(5),
                        "fetchd closes its hostile connections"))
        << hostile_->open_connections() << " still open";
  }

  std::unique_ptr<FetchdProcess> fetchd_;
  std::unique_ptr<Origin> origin_;
  std::unique_ptr<HostileOrigin> hostile_;
};

// Hundreds of connections accepted and never answered: the item timeout
// ends them, fetchd answers every RPC itself, and closes them all.
TEST_F(ChaosTest, AcceptAndNeverAnswer) {
  const Outcome o = Run("hang");
  ExpectAllItems(o, "DEADLINE_EXCEEDED", 300);
  EXPECT_GE(hostile_->peak_connections(), 250);
  ExpectConnectionsReleased();
}

// Headers, then 1 byte a second, on 64 connections (--max_per_host's
// default): bounded here by the item timeout (1.5 s).
TEST_F(ChaosTest, DripOneBytePerSecond) {
  const Outcome o = Run("drip");
  ExpectAllItems(o, "DEADLINE_EXCEEDED", 64);
  EXPECT_GE(hostile_->peak_connections(), 60);
  ExpectConnectionsReleased();
}

// The low-speed limit ends a trickle long before a generous item timeout.
TEST_F(ChaosTest, DripEndsAtLowSpeedLimit) {
  SKIP_UNLESS_FLAG("min_bytes_per_second", "#16 item 6, low-speed limit");
  HostileLoad load = *FaultByName("drip");
  load.items = 50;
  // Generous, and still bounding this test's time if the limit is broken.
  load.item_timeout = absl::Seconds(20);
  load.deadline = absl::Seconds(25);
  const Outcome o = Run(load);
  ExpectAllItems(o, "DEADLINE_EXCEEDED", 50);
  // Window + slack, against 20 s without the limit.
  EXPECT_LE(Quantile(o.fault.hostile.latencies, 1.0),
            kLowSpeedWindow + absl::Seconds(3));
  ExpectConnectionsReleased();
}

// An endless chunked body ends at max_body_bytes (8 MiB by default).
// Today each 8 MiB body costs fetchd ~30 MiB of RSS (4 at once: ~130 MiB).
TEST_F(ChaosTest, EndlessChunkedBody) {
  const Outcome o = Run("endless");
  ExpectAllItems(o, "RESOURCE_EXHAUSTED", 2);
  ExpectConnectionsReleased();
}

// A 1 MB header line never makes an OK item (curl refuses lines past
// 100 KB; the header byte cap refuses it too).
TEST_F(ChaosTest, MegabyteHeaderLine) {
  const Outcome o = Run("big-header");
  const CallStats& bad = o.fault.hostile;
  EXPECT_EQ(bad.item_codes.count("OK"), 0u) << Codes(bad.item_codes);
  EXPECT_GT(bad.calls, 0);
}

// 100,000 headers of ~10 bytes. On the code of #16 curl parses them until
// its own 300 KB total cap (UNAVAILABLE "Too large response headers"),
// ~25,000 lines per transfer on the one I/O thread, which pushed the good
// p99 to 95-440 ms (solo 2-17 ms) in 4 runs: the p99 is asserted only with the
// header count cap (--max_response_headers, #16 item 6), which ends such a
// transfer at its 1,000th header. Everything else is asserted here.
TEST_F(ChaosTest, HundredThousandHeaders) {
  const Outcome o = Run("many-headers",
                        /*check_p99=*/Knows("max_response_headers"));
  EXPECT_EQ(o.fault.hostile.item_codes.count("OK"), 0u)
      << Codes(o.fault.hostile.item_codes);
}

// With the cap, fetchd itself refuses every item and names the cap.
TEST_F(ChaosTest, HundredThousandHeadersRefusedByCap) {
  SKIP_UNLESS_FLAG("max_response_headers", "#16 item 6, header caps");
  const Outcome o = Run("many-headers");
  const CallStats& bad = o.fault.hostile;
  EXPECT_EQ(bad.item_codes.count("OK"), 0u) << Codes(bad.item_codes);
  EXPECT_FALSE(bad.item_messages.empty());
  for (const auto& [code, message] : bad.item_messages) {
    EXPECT_TRUE(absl::StrContains(message, "max_response_header"))
        << code << ": " << message;
  }
}

// /loop/a -> /loop/b -> /loop/a ...: max_redirects (5) ends it.
TEST_F(ChaosTest, RedirectLoop) {
  const Outcome o = Run("redirect-loop");
  ExpectAllItems(o, "RESOURCE_EXHAUSTED", 16);
  EXPECT_GT(hostile_->requests("/loop/b"), 0);
}

// 64 KB of a 1 MiB body, then a TCP RST.
TEST_F(ChaosTest, ResetMidBody) {
  const Outcome o = Run("reset");
  ExpectAllItems(o, "UNAVAILABLE", 32);
}

// 400 KB of nested [[[...]]] through json_pointer "": SIGSEGV on the code
// before #16 (the serializer recursed per level); refused by depth after.
TEST_F(ChaosTest, DeepJson) {
  SKIP_UNLESS_FLAG("max_process_time", "#16 item 2, JSON depth limit");
  const Outcome o = Run("deep-json");
  ExpectAllItems(o, "FAILED_PRECONDITION", 4);
  ASSERT_TRUE(o.fault.hostile.item_messages.count("FAILED_PRECONDITION"));
  EXPECT_TRUE(
      absl::StrContains(o.fault.hostile.item_messages.at("FAILED_PRECONDITION"),
                        "deeper than 512 levels"))
      << o.fault.hostile.item_messages.at("FAILED_PRECONDITION");
}

TEST_F(ChaosTest, DeepJsonValidate) {
  SKIP_UNLESS_FLAG("max_process_time", "#16 item 2, JSON depth limit");
  HostileLoad load = *FaultByName("deep-json");
  load.process = HostileLoad::Process::kJsonValidate;
  const Outcome o = Run(load);
  // Refused by depth like json_pointer: never a crash (checked by Run) and
  // never a held worker (the deadline).
  ExpectAllItems(o, "FAILED_PRECONDITION", 4);
}

// 2.2 MB of nested <div> through html_title: 4 min 27 s of CPU before #16;
// now each item answers quickly.
TEST_F(ChaosTest, DeepHtml) {
  SKIP_UNLESS_FLAG("max_process_time", "#16 item 2, bounded html_title");
  const Outcome o = Run("deep-html");
  const CallStats& bad = o.fault.hostile;
  EXPECT_EQ(bad.rpc_codes.count("OK") ? bad.rpc_codes.at("OK") : 0, bad.calls)
      << Codes(bad.rpc_codes);
  // The document has no <title>: the bounded scan says so at once.
  ExpectAllItems(o, "NOT_FOUND", 4);
  EXPECT_LE(Quantile(bad.latencies, 1.0), absl::Seconds(2));
}

// 3 callers x 3 items x 64 MiB (576 MiB wanted at once) against a
// 256 MiB budget: transfers wait or fail, RSS stays under budget + slack.
TEST_F(ChaosTest, SixtyFourMebibyteBodies) {
  SKIP_UNLESS_FLAG("memory_budget_bytes", "#16 item 3, memory budget");
  const Outcome o = Run("big-64mib");
  for (const auto& [code, n] : o.fault.hostile.item_codes) {
    EXPECT_TRUE(code == "OK" || code == "RESOURCE_EXHAUSTED" ||
                code == "DEADLINE_EXCEEDED")
        << code;
  }
  EXPECT_GT(hostile_->requests("/big"), 0);
}

}  // namespace
}  // namespace fetchd
