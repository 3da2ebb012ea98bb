// server/rpc/admission.cc: the --identity_limits_file format, the token
// buckets, and against a real fetchd: --max_concurrent_rpcs and the
// per-identity quotas (RESOURCE_EXHAUSTED with retry-after), reloads.
#include "server/rpc/admission.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "fetchd/v1/compute.grpc.pb.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/rpc/rpc.h"
#include "tests/support/certs.h"
#include "tests/support/test_server.h"

namespace fetchd::rpc {
namespace {

using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::kEndlessN;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::SqrtSumRequest;
using ::fetchd::testing::TempDir;
using ::fetchd::testing::TestConfig;
using ::fetchd::testing::TestServer;
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

// --- IdentityLimits -------------------------------------------------------

TEST(IdentityLimitsTest, ParsesLinesCommentsAndTheDefault) {
  absl::StatusOr<IdentityLimits> limits = IdentityLimits::Parse(
      "# quotas\n"
      "\n"
      "alice rpcs_per_second=10 items_per_second=2.5 burst=3  # trailing\n"
      "default rpcs_per_second=1\n"
      "bob items_per_second=100\n",
      "limits.txt");
  ASSERT_TRUE(limits.ok()) << limits.status();
  EXPECT_EQ(limits->size(), 3u);
  const QuotaLimit* alice = limits->Find("alice");
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(alice->rpcs_per_second, 10);
  EXPECT_EQ(alice->items_per_second, 2.5);
  EXPECT_EQ(alice->burst_seconds, 3);
  EXPECT_EQ(alice->line, 3);
  const QuotaLimit* bob = limits->Find("bob");
  ASSERT_NE(bob, nullptr);
  EXPECT_FALSE(bob->rpcs_per_second.has_value());  // unlimited
  EXPECT_EQ(bob->items_per_second, 100);
  const QuotaLimit* other = limits->Find("127.0.0.1");
  ASSERT_NE(other, nullptr);  // the default line
  EXPECT_EQ(other->line, 4);
  EXPECT_EQ(other->rpcs_per_second, 1);

  absl::StatusOr<IdentityLimits> no_default =
      IdentityLimits::Parse("alice rpcs_per_second=1\n", "f");
  ASSERT_TRUE(no_default.ok());
  EXPECT_EQ(no_default->Find("bob"), nullptr);  // unlimited
}

TEST(IdentityLimitsTest, ErrorsNameTheFlagFileAndLine) {
  struct Case {
    const char* text;
    const char* want;
  };
  for (const Case& c : std::vector<Case>{
           {"alice\n", "line 1: \"alice\" has no limits"},
           {"# c\nalice rpcs=1\n", "line 2: unknown key \"rpcs\""},
           {"alice rpcs_per_second=0\n", "line 1: \"rpcs_per_second=0\""},
           {"alice rpcs_per_second=-1\n", "line 1"},
           {"alice rpcs_per_second=x\n", "line 1"},
           {"alice rpcs_per_second\n", "line 1"},
           {"alice rpcs_per_second=1\nalice rpcs_per_second=2\n",
            "line 2: identity \"alice\" again (first on line 1)"},
           {"default burst=2\ndefault burst=3\n",
            "line 2: a second default line"},
       }) {
    absl::StatusOr<IdentityLimits> limits =
        IdentityLimits::Parse(c.text, "/etc/limits");
    ASSERT_FALSE(limits.ok()) << c.text;
    EXPECT_EQ(limits.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(limits.status().message(),
                HasSubstr("--identity_limits_file /etc/limits"));
    EXPECT_THAT(limits.status().message(), HasSubstr(c.want)) << c.text;
  }
  absl::StatusOr<IdentityLimits> missing =
      IdentityLimits::Load("/nonexistent/limits");
  EXPECT_THAT(missing.status().message(),
              HasSubstr("--identity_limits_file /nonexistent/limits"));
}

// --- QuotaBuckets ---------------------------------------------------------

std::shared_ptr<const IdentityLimits> Limits(const std::string& text) {
  absl::StatusOr<IdentityLimits> limits = IdentityLimits::Parse(text, "f");
  EXPECT_TRUE(limits.ok()) << limits.status();
  return std::make_shared<const IdentityLimits>(*std::move(limits));
}

TEST(QuotaBucketsTest, RpcsRefillAtTheRateUpToTheBurst) {
  QuotaBuckets buckets(Limits("a rpcs_per_second=2 burst=2\n"), 100);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  for (int i = 0; i < 4; ++i) {  // burst: 2 x 2 = 4
    EXPECT_FALSE(buckets.Charge("a", 0, t0).has_value()) << i;
  }
  std::optional<QuotaBuckets::Refusal> refused = buckets.Charge("a", 0, t0);
  ASSERT_TRUE(refused.has_value());
  EXPECT_FALSE(refused->items);
  EXPECT_EQ(refused->retry_after_seconds, 1);  // ceil(1 / 2)
  EXPECT_THAT(refused->message,
              HasSubstr("identity \"a\" is past its quota of 2 RPCs per "
                        "second (--identity_limits_file line 1)"));
  // Half a second later one token is back, and only one.
  const absl::Time t1 = t0 + absl::Milliseconds(500);
  EXPECT_FALSE(buckets.Charge("a", 0, t1).has_value());
  EXPECT_TRUE(buckets.Charge("a", 0, t1).has_value());
  // An hour idle refills to the burst, not beyond.
  const absl::Time t2 = t1 + absl::Hours(1);
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(buckets.Charge("a", 0, t2)) << i;
  EXPECT_TRUE(buckets.Charge("a", 0, t2).has_value());
  // Unlisted identities without a default line are unlimited and untracked.
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(buckets.Charge("b", 0, t2));
  EXPECT_EQ(buckets.tracked(), 1u);
}

TEST(QuotaBucketsTest, ItemsMayGoIntoDebtOnceAndRetryAfterPaysItBack) {
  QuotaBuckets buckets(Limits("default items_per_second=10\n"), 100);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  // A batch of 50 against a bucket of 10 runs once: 40 in debt.
  EXPECT_FALSE(buckets.Charge("a", 50, t0).has_value());
  std::optional<QuotaBuckets::Refusal> refused = buckets.Charge("a", 1, t0);
  ASSERT_TRUE(refused.has_value());
  EXPECT_TRUE(refused->items);
  EXPECT_EQ(refused->retry_after_seconds, 4);  // 40 items at 10/s
  EXPECT_THAT(refused->message, HasSubstr("10 items per second"));
  // An RPC without items (Compute) is not held by the items debt.
  EXPECT_FALSE(buckets.Charge("a", 0, t0).has_value());
  // Other identities have their own bucket (the default line's).
  EXPECT_FALSE(buckets.Charge("b", 10, t0).has_value());
  // Once the debt is paid (4 s), items pass again.
  EXPECT_TRUE(buckets.Charge("a", 1, t0 + absl::Seconds(3.9)).has_value());
  EXPECT_FALSE(buckets.Charge("a", 1, t0 + absl::Seconds(4.1)).has_value());
}

TEST(QuotaBucketsTest, AFloodOfKeysIsBoundedLeastRecentlyUsedFirst) {
  QuotaBuckets buckets(Limits("default rpcs_per_second=1\n"), 3);
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  EXPECT_FALSE(buckets.Charge("a", 0, t0));
  EXPECT_TRUE(buckets.Charge("a", 0, t0));  // a is empty
  for (int i = 0; i < 10000; ++i) {
    buckets.Charge(absl::StrCat("10.0.", i / 256, ".", i % 256), 0, t0);
    EXPECT_LE(buckets.tracked(), 3u);
  }
  // a was evicted long ago: it starts afresh (the price of the bound).
  EXPECT_FALSE(buckets.Charge("a", 0, t0));
  // A key in use stays while others come and go.
  EXPECT_TRUE(buckets.Charge("a", 0, t0));
  buckets.Charge("x", 0, t0);
  EXPECT_TRUE(buckets.Charge("a", 0, t0));
  buckets.Charge("y", 0, t0);
  EXPECT_TRUE(buckets.Charge("a", 0, t0));  // still tracked, still empty
}

TEST(QuotaKeyTest, IdentityElseThePeersAddressWithoutItsPort) {
  EXPECT_EQ(QuotaKey("alice", "ipv4:127.0.0.1:5000"), "alice");
  EXPECT_EQ(QuotaKey("anonymous", "ipv4:127.0.0.1:5000"), "127.0.0.1");
  EXPECT_EQ(QuotaKey("anonymous", "ipv6:[::1]:5000"), "::1");
  EXPECT_EQ(QuotaKey("anonymous", "unix:/tmp/s"), "unix:/tmp/s");
}

TEST(RpcAdmissionTest, CountsRpcsInProgressUpToTheCap) {
  auto admission = RpcAdmission::Create({.max_concurrent_rpcs = 2});
  ASSERT_TRUE(admission.ok());
  RpcAdmission& a = **admission;
  EXPECT_FALSE(a.Enter().has_value());
  EXPECT_FALSE(a.Enter().has_value());
  std::optional<RpcAdmission::Refusal> refused = a.Enter();
  ASSERT_TRUE(refused.has_value());
  EXPECT_THAT(refused->message, HasSubstr("--max_concurrent_rpcs=2"));
  EXPECT_EQ(refused->retry_after_seconds, 1);
  a.Leave();
  EXPECT_FALSE(a.Enter().has_value());
  metrics::Exposition out;
  a.Render(out);
  EXPECT_THAT(out.text(), HasSubstr("fetchd_rpcs_in_progress 2\n"));
  EXPECT_THAT(out.text(),
              HasSubstr("fetchd_rpcs_refused_total{reason=\"concurrency\"} 1"));
  EXPECT_FALSE(RpcAdmission::Create({.max_concurrent_rpcs = 0}).ok());
}

// --- Against a real fetchd ------------------------------------------------

std::string WriteFile(const TempDir& dir, const std::string& name,
                      const std::string& text) {
  const std::string path = dir.File(name);
  std::ofstream(path) << text;
  return path;
}

grpc::Status SqrtSum(const std::shared_ptr<grpc::Channel>& channel,
                     const std::string& token = "",
                     std::string* retry_after = nullptr) {
  auto context = ContextWithTimeout(absl::Seconds(5));
  if (!token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }
  v1::RunResponse response;
  grpc::Status status = v1::Compute::NewStub(channel)->Run(
      context.get(), SqrtSumRequest(10), &response);
  if (retry_after != nullptr) {
    const auto& trailers = context->GetServerTrailingMetadata();
    auto it = trailers.find("retry-after");
    *retry_after = it == trailers.end()
                       ? ""
                       : std::string(it->second.data(), it->second.size());
  }
  return status;
}

int64_t Seconds(const std::string& retry_after) {
  int64_t seconds = -1;
  if (!absl::SimpleAtoi(retry_after, &seconds)) return -1;
  return seconds;
}

TEST(AdmissionServerTest, PastMaxConcurrentRpcsANewRpcIsRefusedAtOnce) {
  rpc::ServerConfig config = TestConfig();
  config.max_concurrent_rpcs = 2;
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  auto stub = v1::Compute::NewStub(channel);
  // Two RPCs that run until cancelled hold both places.
  grpc::CompletionQueue cq;
  struct Long {
    std::unique_ptr<grpc::ClientContext> context;
    v1::RunResponse response;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<v1::RunResponse>> rpc;
  };
  Long longs[2];
  for (Long& l : longs) {
    l.context = ContextWithTimeout(absl::Seconds(30));
    l.rpc = stub->AsyncRun(l.context.get(), SqrtSumRequest(kEndlessN), &cq);
    l.rpc->Finish(&l.response, &l.status, &l);
  }
  ASSERT_TRUE(
      WaitFor([&] { return server.server().worker_stats().running == 2; },
              kEventTimeout, "both endless kernels running"));
  const absl::Time start = absl::Now();
  std::string retry_after;
  grpc::Status refused = SqrtSum(channel, "", &retry_after);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("--max_concurrent_rpcs=2"));
  EXPECT_EQ(retry_after, "1");
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));  // at once, not queued
  // Other methods count too: a BatchFetch is refused the same way.
  {
    auto context = ContextWithTimeout(absl::Seconds(5));
    v1::BatchFetchRequest request;
    request.add_items()->set_url("http://127.0.0.1:1/");
    v1::BatchFetchResponse response;
    grpc::Status status = v1::Fetch::NewStub(channel)->BatchFetch(
        context.get(), request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // Health still answers: it is not one of fetchd's RPCs.
  {
    auto context = ContextWithTimeout(absl::Seconds(5));
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = grpc::health::v1::Health::NewStub(channel)->Check(
        context.get(), grpc::health::v1::HealthCheckRequest(), &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(response.status(),
              grpc::health::v1::HealthCheckResponse::SERVING);
  }
  for (Long& l : longs) l.context->TryCancel();
  for (int i = 0; i < 2; ++i) {
    void* tag;
    bool ok;
    ASSERT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(static_cast<Long*>(tag)->status.error_code(),
              grpc::StatusCode::CANCELLED);
  }
  // Once they are gone, RPCs run again (the places were given back).
  EXPECT_TRUE(WaitFor([&] { return SqrtSum(channel).ok(); }, kEventTimeout,
                      "an RPC admitted after the long ones ended"));
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

TEST(AdmissionServerTest, AnonymousCallersAreKnownByTheirAddress) {
  TempDir dir;
  rpc::ServerConfig config = TestConfig();
  // 3 RPCs of burst, then a token every 100 s: the test never sees a refill.
  config.identity_limits_file =
      WriteFile(dir, "limits",
                "# anonymous callers on loopback\n"
                "127.0.0.1 rpcs_per_second=0.01 burst=300\n");
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  for (int i = 0; i < 3; ++i) {
    grpc::Status status = SqrtSum(channel);
    EXPECT_TRUE(status.ok()) << i << ": " << status.error_message();
  }
  std::string retry_after;
  grpc::Status refused = SqrtSum(channel, "", &retry_after);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              HasSubstr("identity \"127.0.0.1\" is past its quota of 0.01 "
                        "RPCs per second (--identity_limits_file line 2)"));
  EXPECT_GE(Seconds(retry_after), 1) << retry_after;
  EXPECT_LE(Seconds(retry_after), 100) << retry_after;
  // A new connection from the same address shares the bucket.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto other = grpc::CreateCustomChannel(
      server.address(), grpc::InsecureChannelCredentials(), args);
  EXPECT_EQ(SqrtSum(other).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(AdmissionServerTest, ItemsQuotaCountsBatchItems) {
  TempDir dir;
  rpc::ServerConfig config = TestConfig();
  config.identity_limits_file = WriteFile(
      dir, "limits", "default items_per_second=0.01 burst=1000\n");  // 10
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto stub = v1::Fetch::NewStub(server.NewChannel());
  v1::BatchFetchRequest request;
  // Items refused one by one (no URL): nothing is fetched, the RPC is OK.
  for (int i = 0; i < 15; ++i) request.add_items();
  auto run = [&](std::string* retry_after) {
    auto context = ContextWithTimeout(absl::Seconds(5));
    v1::BatchFetchResponse response;
    grpc::Status status = stub->BatchFetch(context.get(), request, &response);
    const auto& trailers = context->GetServerTrailingMetadata();
    auto it = trailers.find("retry-after");
    *retry_after = it == trailers.end()
                       ? ""
                       : std::string(it->second.data(), it->second.size());
    return status;
  };
  std::string retry_after;
  grpc::Status first = run(&retry_after);  // 15 against 10: runs, in debt
  EXPECT_TRUE(first.ok()) << first.error_message();
  EXPECT_EQ(retry_after, "");
  grpc::Status second = run(&retry_after);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(second.error_message(),
              HasSubstr("is past its quota of 0.01 items per second"));
  // 5 items of debt (and a bit of refill) at 0.01/s: about 500 s.
  EXPECT_GE(Seconds(retry_after), 400) << retry_after;
  EXPECT_LE(Seconds(retry_after), 500) << retry_after;
}

constexpr char kAliceToken[] = "alice-token-0123456789abcdef";
constexpr char kBobToken[] = "bob-token-0123456789abcdef01";

TEST(AdmissionServerTest, QuotasFollowTokenIdentitiesAndReloadOnSighup) {
  TempDir dir;
  rpc::ServerConfig config = TestConfig();
  config.auth_tokens_file =
      WriteFile(dir, "tokens",
                absl::StrCat("alice ", kAliceToken, "\nbob ", kBobToken, "\n"));
  const std::string limits = WriteFile(
      dir, "limits", "alice rpcs_per_second=0.01 burst=100\n");  // 1 RPC
  config.identity_limits_file = limits;
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  EXPECT_TRUE(SqrtSum(channel, kAliceToken).ok());
  grpc::Status refused = SqrtSum(channel, kAliceToken);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("identity \"alice\""));
  // Bob has no line and there is no default: unlimited, whatever alice does.
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(SqrtSum(channel, kBobToken).ok());
  // Authentication comes before the quota: a wrong token is refused as such.
  EXPECT_EQ(SqrtSum(channel, "wrong").error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  // A bad file on reload is an error and the limits in force stay.
  WriteFile(dir, "limits", "alice rpcs_per_second=fast\n");
  absl::Status bad = server.server().Reload();
  EXPECT_THAT(bad.message(), HasSubstr("--identity_limits_file"));
  EXPECT_THAT(bad.message(), HasSubstr("line 1"));
  EXPECT_EQ(SqrtSum(channel, kAliceToken).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  // A good one takes over: now bob is limited and alice is not.
  WriteFile(dir, "limits", "bob rpcs_per_second=0.01 burst=100\n");
  ASSERT_TRUE(server.server().Reload().ok());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(SqrtSum(channel, kAliceToken).ok());
  EXPECT_TRUE(SqrtSum(channel, kBobToken).ok());
  EXPECT_EQ(SqrtSum(channel, kBobToken).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(AdmissionServerTest, ABadLimitsFileStopsTheStartNamingFlagAndLine) {
  TempDir dir;
  rpc::ServerConfig config = TestConfig();
  config.identity_limits_file =
      WriteFile(dir, "limits", "# ok\ndefault rpcs_per_second=1\nalice\n");
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(config);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(),
              HasSubstr("--identity_limits_file " +
                        config.identity_limits_file + " line 3"));
  config.identity_limits_file = dir.File("missing");
  EXPECT_FALSE(Server::Start(config).ok());
}

// With one stream per connection, a second call on the same connection
// waits for the first; another connection is not held.
TEST(AdmissionServerTest, MaxConcurrentStreamsIsPerConnection) {
  rpc::ServerConfig config = TestConfig();
  config.max_concurrent_streams = 1;
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  auto stub = v1::Compute::NewStub(channel);
  grpc::CompletionQueue cq;
  auto long_context = ContextWithTimeout(absl::Seconds(30));
  v1::RunResponse long_response;
  grpc::Status long_status;
  auto long_rpc =
      stub->AsyncRun(long_context.get(), SqrtSumRequest(kEndlessN), &cq);
  long_rpc->Finish(&long_response, &long_status, &long_status);
  ASSERT_TRUE(
      WaitFor([&] { return server.server().worker_stats().running == 1; },
              kEventTimeout, "the endless kernel running"));
  {
    auto context = ContextWithTimeout(absl::Milliseconds(500));
    v1::RunResponse response;
    grpc::Status status =
        stub->Run(context.get(), SqrtSumRequest(10), &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto other = grpc::CreateCustomChannel(
      server.address(), grpc::InsecureChannelCredentials(), args);
  EXPECT_TRUE(SqrtSum(other).ok());
  long_context->TryCancel();
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_EQ(long_status.error_code(), grpc::StatusCode::CANCELLED);
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

}  // namespace
}  // namespace fetchd::rpc
