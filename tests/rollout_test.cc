// A rolling restart under load (issue #15): two fetchd processes behind one
// client channel with libfetchd_client's service config (round_robin,
// client-side health checking, retry on UNAVAILABLE). Each replica in turn
// gets SIGTERM, drains, exits and starts again on the same port while 8
// callers keep calling. No unary RPC may fail, and a FetchPages walk cut
// by a shutdown resumes from its last token on the other replica with
// every page exactly once.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "fetchd/v1/compute.grpc.pb.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "tests/support/fetchd_process.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd {
namespace {

using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::FetchdProcess;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::Origin;
using ::fetchd::testing::ScrapeSample;
using ::fetchd::testing::SqrtSumRequest;
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

// 8 callers: 5 Compute.Run, 2 BatchFetch, 1 FetchPages walk.
constexpr int kComputeCallers = 5;
constexpr int kBatchCallers = 2;
constexpr int kWalkPages = 250;
constexpr char kComputeOk[] =
    "fetchd_rpcs_total{method=\"Compute.Run\",code=\"OK\",identity="
    "\"anonymous\"}";

// One replica: a fetchd process that can be stopped (SIGTERM, waited for)
// and started again on the port it had.
class Replica {
 public:
  explicit Replica(std::vector<std::string> flags) : flags_(std::move(flags)) {}

  ::testing::AssertionResult Start() {
    std::vector<std::string> flags = flags_;
    // The client's address list is fixed: a restart takes the same port
    // (the last --listen wins over FetchdProcess's port 0).
    if (port_ != 0) flags.push_back(absl::StrCat("--listen=127.0.0.1:", port_));
    process_ = std::make_unique<FetchdProcess>(FETCHD_PATH, flags);
    if (!process_->ok()) return ::testing::AssertionFailure() << "no start";
    if (port_ != 0 && process_->port() != port_) {
      return ::testing::AssertionFailure()
             << "restarted on " << process_->port() << ", not " << port_;
    }
    port_ = process_->port();
    return ::testing::AssertionSuccess();
  }

  // SIGTERM, then waits for a clean exit (drain, grace, "stopped").
  ::testing::AssertionResult Stop() {
    process_->process().Signal(SIGTERM);
    auto exit = process_->process().Wait(kEventTimeout);
    if (!exit.ok()) {
      return ::testing::AssertionFailure() << exit.status().ToString();
    }
    if (exit->exit_code != 0 ||
        exit->err.find("\"event\":\"stopped\"") == std::string::npos) {
      return ::testing::AssertionFailure()
             << "exit " << exit->exit_code << ": " << exit->err;
    }
    return ::testing::AssertionSuccess();
  }

  // Compute.Run calls this process has served OK (its /metrics).
  double ComputeServed() const {
    auto n = ScrapeSample(process_->metrics_port(), kComputeOk);
    return n.ok() ? *n : 0;
  }

  int port() const { return port_; }

 private:
  const std::vector<std::string> flags_;
  std::unique_ptr<FetchdProcess> process_;
  int port_ = 0;
};

// Counts unary RPCs and keeps the first few failures.
class Tally {
 public:
  void Add(const std::string& what, const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    ++total_;
    if (status.ok()) return;
    ++failed_;
    if (failures_.size() < 10) {
      failures_.push_back(absl::StrCat(what, ": ", status.error_code(), " ",
                                       status.error_message()));
    }
  }
  void Fail(const std::string& what) {
    absl::MutexLock lock(&mu_);
    ++failed_;
    if (failures_.size() < 10) failures_.push_back(what);
  }
  int total() const {
    absl::MutexLock lock(&mu_);
    return total_;
  }
  int failed() const {
    absl::MutexLock lock(&mu_);
    return failed_;
  }
  std::vector<std::string> failures() const {
    absl::MutexLock lock(&mu_);
    return failures_;
  }

 private:
  mutable absl::Mutex mu_;
  int total_ ABSL_GUARDED_BY(mu_) = 0;
  int failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> failures_ ABSL_GUARDED_BY(mu_);
};

// The page number N of a page fetched from ".../pn/...&page=N".
int64_t PageNumber(const v1::Page& page) {
  const std::string& url = page.result().url();
  const size_t at = url.rfind("page=");
  int64_t n = -1;
  if (at == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(url).substr(at + 5), &n)) {
    return -1;
  }
  return n;
}

// The port of "ipv4:127.0.0.1:PORT".
int PeerPort(const std::string& peer) {
  int port = 0;
  const size_t colon = peer.rfind(':');
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(absl::string_view(peer).substr(colon + 1), &port)) {
    return 0;
  }
  return port;
}

// For a client without health checking: fetchd's CANCELLED at shutdown
// means "never started" (a call gRPC accepted after Shutdown began), so
// retrying it is as safe as retrying UNAVAILABLE.
constexpr char kRetryCancelledServiceConfig[] = R"({
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "fetchd.v1.Compute"}, {"service": "fetchd.v1.Fetch"}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.05s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE", "CANCELLED"]
    }
  }]
})";

// The rollout with a client that uses client-side health checking
// (`health_checking`: libfetchd_client's config) or not (round_robin and a
// retry on UNAVAILABLE and CANCELLED).
void RollOut(bool health_checking) {
  Origin origin;
  // Resume tokens are signed: both replicas (and their restarts) share the
  // key, so a walk cut on one continues on the other.
  const std::string key_file =
      absl::StrCat(::testing::TempDir(), "rollout_token_key_", getpid());
  {
    std::ofstream out(key_file, std::ios::binary);
    out << "rollout-test-key-0123456789abcdef-0123456789abcdef";
  }
  const std::vector<std::string> flags = {
      "--drain_delay=1s",
      "--shutdown_grace=2s",
      "--allow_private_networks",  // the origin is on loopback
      "--token_key_file=" + key_file,
      "--cq_threads=2",
      "--workers=2",
      "--log_level=warn"};  // nobody reads stderr while the load runs
  std::array<Replica, 2> replicas = {Replica(flags), Replica(flags)};
  for (Replica& replica : replicas) ASSERT_TRUE(replica.Start());

  // The client a calling service would use: libfetchd_client's channel
  // arguments (round_robin, health checking, retry on UNAVAILABLE), over
  // both addresses. A short reconnect backoff only keeps the test short:
  // the restarted replica is picked up within half a second, not gRPC's
  // default 1 s, 1.6 s, 2.6 s... after the refused attempts.
  grpc::ChannelArguments args;
  if (health_checking) {
    args = client::ClientChannelArguments({.retry_unavailable = true});
  } else {
    args.SetServiceConfigJSON(kRetryCancelledServiceConfig);
  }
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  auto channel = grpc::CreateCustomChannel(
      absl::StrCat("ipv4:127.0.0.1:", replicas[0].port(),
                   ",127.0.0.1:", replicas[1].port()),
      grpc::InsecureChannelCredentials(), args);
  auto compute = v1::Compute::NewStub(channel);
  auto fetch = v1::Fetch::NewStub(channel);

  Tally tally;
  std::atomic<bool> stop{false};
  std::vector<std::thread> callers;
  for (int i = 0; i < kComputeCallers; ++i) {
    callers.emplace_back([&] {
      while (!stop.load()) {
        v1::RunResponse response;
        const grpc::Status status =
            compute->Run(ContextWithTimeout(kEventTimeout).get(),
                         SqrtSumRequest(20000), &response);
        tally.Add("Compute.Run", status);
        if (status.ok() && response.sqrt_sum() <= 0) {
          tally.Fail("Compute.Run: no sum");
        }
      }
    });
  }
  for (int i = 0; i < kBatchCallers; ++i) {
    callers.emplace_back([&, i] {
      v1::BatchFetchRequest request;
      for (int k = 0; k < 4; ++k) {
        request.add_items()->set_url(
            origin.Url(absl::StrCat("/bytes/", 100 + 10 * i + k)));
      }
      while (!stop.load()) {
        v1::BatchFetchResponse response;
        const grpc::Status status = fetch->BatchFetch(
            ContextWithTimeout(kEventTimeout).get(), request, &response);
        tally.Add("Fetch.BatchFetch", status);
        if (!status.ok()) continue;
        for (const v1::FetchResult& result : response.results()) {
          if (result.http_status() != 200) {
            tally.Fail(absl::StrCat("BatchFetch item ", result.url(), ": HTTP ",
                                    result.http_status(), " ",
                                    result.error().message()));
          }
        }
      }
    });
  }

  // The walk: one page every ~40 ms from the origin, so it outlasts both
  // restarts. A stream cut by a shutdown (past --shutdown_grace) resumes
  // from the last page's token, on whichever replica the channel picks.
  std::atomic<int> walk_port{0};      // the replica serving the walk now
  std::atomic<int> walk_pages{0};     // pages received so far
  std::map<int64_t, int> pages_seen;  // page number -> times received
  int resumes = 0;
  std::vector<std::string> walk_breaks;
  grpc::Status walk_status;
  absl::Mutex walk_mu;
  grpc::ClientContext* walk_context = nullptr;  // the stream under way
  std::thread walker([&] {
    v1::FetchPagesRequest request;
    request.mutable_first()->set_url(
        origin.Url(absl::StrCat("/pn/rollout?last=", kWalkPages, "&delay=40")));
    request.mutable_page_number();
    request.set_items_pointer("/items");
    request.set_prefetch(1);
    std::string token;
    for (int attempt = 0; attempt < 10 && !stop.load(); ++attempt) {
      if (!token.empty()) ++resumes;
      request.set_resume_token(token);
      auto context = ContextWithTimeout(absl::Seconds(60));
      {
        absl::MutexLock lock(&walk_mu);
        walk_context = context.get();
      }
      absl::Cleanup forget = [&] {
        absl::MutexLock lock(&walk_mu);
        walk_context = nullptr;
      };
      auto reader = fetch->FetchPages(context.get(), request);
      v1::FetchPagesResponse response;
      while (reader->Read(&response)) {
        const v1::Page& page = response.page();
        walk_port.store(PeerPort(context->peer()));
        ++pages_seen[PageNumber(page)];
        token = page.resume_token();
        walk_pages.fetch_add(1);
      }
      walk_status = reader->Finish();
      if (walk_status.ok()) return;
      walk_breaks.push_back(absl::StrCat(walk_status.error_code(), " ",
                                         walk_status.error_message()));
    }
  });

  // On every way out (an ASSERT too): stop the load, join its threads.
  absl::Cleanup join = [&] {
    stop.store(true);
    {
      absl::MutexLock lock(&walk_mu);
      if (walk_context != nullptr) walk_context->TryCancel();
    }
    if (walker.joinable()) walker.join();
    for (std::thread& caller : callers) caller.join();
    unlink(key_file.c_str());
  };

  // Load on both replicas before the first restart.
  ASSERT_TRUE(WaitFor(
      [&] {
        return replicas[0].ComputeServed() > 0 &&
               replicas[1].ComputeServed() > 0 && walk_pages.load() > 0;
      },
      kEventTimeout, "calls on both replicas and the walk under way"));
  // The replica serving the walk goes first, so the walk is cut and
  // resumed on the other one.
  const int first = walk_port.load() == replicas[1].port() ? 1 : 0;
  for (int i : {first, 1 - first}) {
    Replica& replica = replicas[i];
    ASSERT_TRUE(replica.Stop()) << "replica " << i;
    ASSERT_TRUE(replica.Start()) << "replica " << i;
    // Rolled: the restarted replica takes calls again before the next one
    // goes (what a rollout's readiness gate waits for).
    ASSERT_TRUE(WaitFor([&] { return replica.ComputeServed() > 0; },
                        kEventTimeout,
                        absl::StrCat("calls on restarted replica ", i)));
  }
  walker.join();
  std::move(join).Invoke();

  const int total = tally.total();
  std::fprintf(stderr,
               "rollout: %d failed of %d unary RPCs; walk: %d pages, %d "
               "resumes\n",
               tally.failed(), total, walk_pages.load(), resumes);
  for (const std::string& b : walk_breaks) {
    std::fprintf(stderr, "rollout: walk cut: %s\n", b.c_str());
  }
  EXPECT_EQ(tally.failed(), 0) << ::testing::PrintToString(tally.failures());
  EXPECT_GT(total, 100);
  EXPECT_TRUE(walk_status.ok()) << walk_status.error_message();
  EXPECT_GE(resumes, 1);
  ASSERT_EQ(pages_seen.size(), static_cast<size_t>(kWalkPages));
  for (int64_t n = 1; n <= kWalkPages; ++n) {
    EXPECT_EQ(pages_seen[n], 1) << "page " << n;
  }
}

// A draining replica says NOT_SERVING on its health Watch stream: the
// client stops picking it before it shuts down, so no call races the
// shutdown.
TEST(RolloutTest, RollingRestartUnderLoadLosesNoRpc) { RollOut(true); }

// Without health checking calls reach the replica until it shuts down, and
// gRPC 1.51 cancels (CANCELLED) each one whose headers or message arrive
// after Server::Shutdown began, before the client has seen the GOAWAY: a
// few per restart under this load, however many requests are armed. Such
// a client must retry CANCELLED as well as UNAVAILABLE.
TEST(RolloutTest, RollingRestartWithoutClientHealthCheckingLosesNoRpc) {
  RollOut(false);
}

}  // namespace
}  // namespace fetchd
