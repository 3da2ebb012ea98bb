#include "client/client.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/support/fetchd_process.h"
#include "tests/support/test_server.h"

namespace fetchd::client {
namespace {

using ::fetchd::testing::FetchdProcess;
using ::fetchd::testing::ScrapeSample;
using ::fetchd::testing::TestServer;
using ::fetchd::testing::WaitFor;

TEST(ClientTest, ComputeAndHealthAgainstARealServer) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  Client client({.target = server.address(), .timeout = absl::Seconds(10)});
  v1::RunRequest request;
  request.mutable_count_primes()->set_limit(100);
  auto response = client.Compute(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->count_primes(), 25);
  auto health = client.Health("");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
}

// Client-side health checking: once the server drains (NOT_SERVING) the
// channel stops picking it, so with no other replica calls fail
// UNAVAILABLE at once; Health, on its own channel, still answers.
TEST(ClientTest, ADrainingServerGetsNoCallsButHealthAnswersNotServing) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  Client client({.target = server.address(), .timeout = absl::Seconds(10)});
  v1::RunRequest request;
  request.mutable_count_primes()->set_limit(100);
  ASSERT_TRUE(client.Compute(request).ok());
  server.server().StartDraining();
  auto health = client.Health("");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  EXPECT_TRUE(WaitFor(
      [&] {
        return client.Compute(request).status().code() ==
               absl::StatusCode::kUnavailable;
      },
      absl::Seconds(10), "calls to the draining server to stop"));
}

TEST(ClientTest, ErrorsKeepTheGrpcCodeAndMessage) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  Client client({.target = server.address(), .timeout = absl::Seconds(10)});
  v1::RunRequest request;
  request.mutable_sqrt_sum()->set_n(-3);
  auto response = client.Compute(request);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(response.status().message().find("sqrt_sum.n"), std::string::npos);
}

TEST(ClientTest, TimeoutBecomesDeadlineExceeded) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  Client client(
      {.target = server.address(), .timeout = absl::Milliseconds(200)});
  v1::RunRequest request;
  request.mutable_sqrt_sum()->set_n(10'000'000'000);
  EXPECT_EQ(client.Compute(request).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

// Scale-out: three fetchd processes behind one client target. RPCs are
// spread round robin over all three, and when one is killed (SIGKILL, no
// drain) the UNAVAILABLE retry sends its RPCs to the others: none is lost.
TEST(ClientScaleOutTest, RoundRobinOverReplicasAndNoRpcLostWhenOneDies) {
  constexpr char kOk[] =
      "fetchd_rpcs_total{method=\"Compute.Run\",code=\"OK\",identity="
      "\"anonymous\"}";
  std::array<std::unique_ptr<FetchdProcess>, 3> replicas;
  std::vector<std::string> addresses;
  for (auto& replica : replicas) {
    replica = std::make_unique<FetchdProcess>(FETCHD_PATH,
                                              std::vector<std::string>{});
    ASSERT_TRUE(replica->ok());
    addresses.push_back(replica->address());
  }
  Client client({.target = absl::StrCat("ipv4:", absl::StrJoin(addresses, ",")),
                 .timeout = absl::Seconds(20)});
  v1::RunRequest request;
  request.mutable_count_primes()->set_limit(1000);
  auto served = [&](size_t i) {
    auto n = ScrapeSample(replicas[i]->metrics_port(), kOk);
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? static_cast<int>(*n) : -1;
  };

  // Until every replica has served some (connections come up one by one).
  int sent = 0;
  ASSERT_TRUE(WaitFor(
      [&] {
        for (int k = 0; k < 30; ++k, ++sent) {
          auto response = client.Compute(request);
          EXPECT_TRUE(response.ok()) << response.status();
        }
        return served(0) > 0 && served(1) > 0 && served(2) > 0;
      },
      absl::Seconds(20), "RPCs on all three replicas"));
  EXPECT_EQ(served(0) + served(1) + served(2), sent);

  const int before = served(1) + served(2);
  replicas[0]->process().Signal(SIGKILL);
  ASSERT_TRUE(replicas[0]->process().Wait(absl::Seconds(20)).ok());
  for (int k = 0; k < 60; ++k) {
    auto response = client.Compute(request);
    ASSERT_TRUE(response.ok()) << "call " << k << ": " << response.status();
    EXPECT_EQ(response->count_primes(), 168);
  }
  EXPECT_EQ(served(1) + served(2) - before, 60);
}

}  // namespace
}  // namespace fetchd::client
