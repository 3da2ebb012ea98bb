#include "client/client.h"

#include <gtest/gtest.h>

#include "tests/support/test_server.h"

namespace fetchd::client {
namespace {

using ::fetchd::testing::TestServer;

TEST(ClientTest, ComputeAndHealthAgainstARealServer) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  Client client({.target = server.address(), .timeout = absl::Seconds(10)});
  v1::ComputeRequest request;
  request.mutable_count_primes()->set_limit(100);
  auto response = client.Compute(request);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->count_primes(), 25);
  auto health = client.Health("");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST(ClientTest, ErrorsKeepTheGrpcCodeAndMessage) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  Client client({.target = server.address(), .timeout = absl::Seconds(10)});
  v1::ComputeRequest request;
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
  v1::ComputeRequest request;
  request.mutable_sqrt_sum()->set_n(10'000'000'000);
  EXPECT_EQ(client.Compute(request).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace fetchd::client
