#include "tests/support/chaos_driver.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/subprocess.h"

namespace fetchd::testing {
namespace {

std::string CodeName(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

// Each caller gets its own HTTP/2 connection: a hostile caller's 64 MiB
// answer must not queue a good caller's answer behind it on the client side.
std::shared_ptr<grpc::Channel> OwnChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                   args);
}

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out->set_seconds(ns / 1'000'000'000);
  out->set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
}

v1::BatchFetchRequest GoodRequest(const std::string& base) {
  v1::BatchFetchRequest r;
  for (int i = 0; i < 4; ++i) r.add_items()->set_url(base + "/bytes/1024");
  return r;
}

v1::BatchFetchRequest HostileRequest(const std::string& base,
                                     const HostileLoad& load) {
  v1::BatchFetchRequest r;
  for (int i = 0; i < load.items; ++i) {
    v1::FetchItem* item = r.add_items();
    item->set_url(base + load.path);
    SetDuration(load.item_timeout, item->mutable_timeout());
    switch (load.process) {
      case HostileLoad::Process::kNone:
        break;
      case HostileLoad::Process::kJsonPointer:
        item->mutable_process()->mutable_json_pointer()->set_pointer("");
        break;
      case HostileLoad::Process::kJsonValidate:
        item->mutable_process()->mutable_json_validate();
        break;
      case HostileLoad::Process::kHtmlTitle:
        item->mutable_process()->mutable_html_title();
        break;
    }
  }
  r.set_max_concurrency(load.items);
  if (load.max_body_bytes > 0) r.set_max_body_bytes(load.max_body_bytes);
  return r;
}

// One BatchFetch, recorded into `stats` under `mu`.
void Call(v1::Fetch::Stub& stub, const v1::BatchFetchRequest& request,
          absl::Duration deadline, bool good, absl::Mutex& mu,
          CallStats& stats) {
  grpc::ClientContext context;
  const absl::Time start = absl::Now();
  context.set_deadline(absl::ToChronoTime(start + deadline));
  v1::BatchFetchResponse response;
  const grpc::Status status = stub.BatchFetch(&context, request, &response);
  const absl::Duration took = absl::Now() - start;
  absl::MutexLock lock(&mu);
  ++stats.calls;
  stats.latencies.push_back(took);
  if (took > deadline + kLateMargin) ++stats.late;
  ++stats.rpc_codes[CodeName(status.error_code())];
  std::string failure;
  if (!status.ok()) {
    failure = absl::StrCat("RPC ", CodeName(status.error_code()), ": ",
                           status.error_message());
  }
  for (const v1::FetchResult& result : response.results()) {
    const std::string code = CodeName(result.error().code());
    ++stats.item_codes[code];
    if (result.error().code() != 0) {
      stats.item_messages.emplace(code, result.error().message());
      if (failure.empty()) {
        failure = absl::StrCat("item ", code, ": ", result.error().message());
      }
    }
  }
  if (good && !failure.empty()) {
    if (stats.failed++ == 0) stats.first_failure = failure;
  }
}

}  // namespace

std::vector<std::pair<std::string, HostileLoad>> Faults() {
  using P = HostileLoad::Process;
  // Hundreds of connections for the faults that hold them (hang, drip);
  // a few callers for the ones that cost bytes or CPU.
  return {
      {"hang",
       {.path = "/hang",
        .callers = 1,
        .items = 300,
        .item_timeout = absl::Milliseconds(1500),
        .deadline = absl::Seconds(3)}},
      {"drip",
       {.path = "/drip",
        .callers = 1,
        .items = 64,
        .item_timeout = absl::Milliseconds(1500),
        .deadline = absl::Seconds(3)}},
      // 2 x 8 MiB at loopback speed (GB/s) every ~300 ms: 4 every 200 ms
      // kept the one I/O thread copying long enough to break the p99 bound
      // in ~1 of 6 runs at ctest -j2.
      {"endless",
       {.path = "/endless",
        .callers = 1,
        .items = 2,
        .item_timeout = absl::Seconds(4),
        .deadline = absl::Seconds(5),
        .pause = absl::Milliseconds(300)}},
      {"big-header",
       {.path = "/big-header",
        .callers = 2,
        .items = 16,
        .item_timeout = absl::Seconds(2),
        .deadline = absl::Seconds(4)}},
      {"many-headers",
       {.path = "/many-headers",
        .callers = 2,
        .items = 16,
        .item_timeout = absl::Seconds(2),
        .deadline = absl::Seconds(4)}},
      {"redirect-loop",
       {.path = "/loop/a",
        .callers = 2,
        .items = 16,
        .item_timeout = absl::Seconds(2),
        .deadline = absl::Seconds(4)}},
      {"reset",
       {.path = "/reset",
        .callers = 2,
        .items = 32,
        .item_timeout = absl::Seconds(2),
        .deadline = absl::Seconds(4)}},
      {"deep-json",
       {.path = "/deep-json",
        .callers = 2,
        .items = 4,
        .item_timeout = absl::Seconds(2),
        .deadline = absl::Seconds(4),
        .process = P::kJsonPointer}},
      {"deep-html",
       {.path = "/deep-html",
        .callers = 2,
        .items = 4,
        .item_timeout = absl::Seconds(2),
        .deadline = absl::Seconds(4),
        .process = P::kHtmlTitle}},
      {"big-64mib",
       {.path = "/big",
        .callers = 3,
        .items = 3,
        .item_timeout = absl::Seconds(8),
        .deadline = absl::Seconds(10),
        .max_body_bytes = int64_t{64} << 20}},
  };
}

std::optional<HostileLoad> FaultByName(const std::string& name) {
  for (auto& [n, load] : Faults()) {
    if (n == name) return load;
  }
  return std::nullopt;
}

PhaseResult RunPhase(const std::string& target, const std::string& good_base,
                     const std::string& hostile_base,
                     const HostileLoad* hostile, absl::Duration duration,
                     int good_callers) {
  PhaseResult result;
  absl::Mutex mu;
  std::atomic<bool> stop_good{false};
  const absl::Time end = absl::Now() + duration;

  std::vector<std::thread> good;
  for (int i = 0; i < good_callers; ++i) {
    good.emplace_back([&] {
      auto stub = v1::Fetch::NewStub(OwnChannel(target));
      const v1::BatchFetchRequest request = GoodRequest(good_base);
      while (!stop_good.load()) {
        Call(*stub, request, kGoodDeadline, true, mu, result.good);
      }
    });
  }
  std::thread health([&] {
    auto stub = grpc::health::v1::Health::NewStub(OwnChannel(target));
    while (!stop_good.load()) {
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      grpc::health::v1::HealthCheckResponse response;
      const grpc::Status status = stub->Check(
          &context, grpc::health::v1::HealthCheckRequest(), &response);
      {
        absl::MutexLock lock(&mu);
        ++result.health_checks;
        if (!status.ok() ||
            response.status() !=
                grpc::health::v1::HealthCheckResponse::SERVING) {
          if (result.health_failures++ == 0) {
            result.first_health_failure =
                status.ok() ? absl::StrCat("status ", response.status())
                            : absl::StrCat(CodeName(status.error_code()), ": ",
                                           status.error_message());
          }
        }
      }
      absl::SleepFor(absl::Milliseconds(50));  // a probe's period, not a sync
    }
  });

  std::vector<std::thread> bad;
  if (hostile != nullptr) {
    for (int i = 0; i < hostile->callers; ++i) {
      bad.emplace_back([&] {
        auto stub = v1::Fetch::NewStub(OwnChannel(target));
        const v1::BatchFetchRequest request =
            HostileRequest(hostile_base, *hostile);
        while (absl::Now() < end) {
          Call(*stub, request, hostile->deadline, false, mu, result.hostile);
          absl::SleepFor(hostile->pause);  // pacing, not synchronisation
        }
      });
    }
  } else {
    // No hostile callers: the phase is just `duration` long.
    absl::SleepFor(std::max(absl::ZeroDuration(), end - absl::Now()));
  }
  for (std::thread& t : bad) t.join();
  stop_good.store(true);
  for (std::thread& t : good) t.join();
  health.join();
  return result;
}

absl::Duration Quantile(std::vector<absl::Duration> samples, double q) {
  if (samples.empty()) return absl::ZeroDuration();
  std::sort(samples.begin(), samples.end());
  const size_t rank =
      static_cast<size_t>(std::ceil(q * static_cast<double>(samples.size())));
  return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
}

int64_t ProcStatusKb(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (!absl::StartsWith(line, field + ":")) continue;
    std::istringstream words(line.substr(field.size() + 1));
    int64_t kb = -1;
    words >> kb;
    return kb;
  }
  return -1;
}

absl::Duration ProcessCpuTime(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  if (!std::getline(in, stat)) return absl::ZeroDuration();
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return absl::ZeroDuration();
  // After ") ": state is field 3; utime and stime are fields 14 and 15.
  std::istringstream fields(stat.substr(paren + 2));
  std::string skip;
  for (int i = 3; i < 14; ++i) fields >> skip;
  int64_t utime = 0, stime = 0;
  fields >> utime >> stime;
  return absl::Seconds(static_cast<double>(utime + stime) /
                       static_cast<double>(sysconf(_SC_CLK_TCK)));
}

bool ProcessAlive(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string stat;
  if (!std::getline(in, stat)) return false;
  // "pid (comm) S ...": the state follows the last ')'.
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() &&
         stat[paren + 2] != 'Z' && stat[paren + 2] != 'X';
}

bool FetchdKnowsFlag(const std::string& fetchd, const std::string& flag) {
  static absl::Mutex mu(absl::kConstInit);
  static auto* helps = new absl::flat_hash_map<std::string, std::string>();
  absl::MutexLock lock(&mu);
  auto it = helps->find(fetchd);
  if (it == helps->end()) {
    absl::StatusOr<ProcessResult> run =
        RunProcess({fetchd, "--helpfull"}, absl::Seconds(30));
    it = helps->emplace(fetchd, run.ok() ? run->out + run->err : "").first;
  }
  // absl's --helpfull lists "    --name (description); default: ...".
  return absl::StrContains(it->second, absl::StrCat("--", flag, " ("));
}

}  // namespace fetchd::testing
