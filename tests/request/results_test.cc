// Compute requests and answers, and walk pages, as the API's messages
// (server/request/results.cc).
#include <gtest/gtest.h>

#include <variant>

#include "server/request/request.h"

namespace fetchd::request {
namespace {

TEST(KernelFromProtoTest, MapsEveryKernel) {
  v1::RunRequest r;
  r.mutable_count_primes()->set_limit(9);
  auto k = KernelFromProto(r);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(std::get<compute::CountPrimes>(*k).limit, 9);
  r.mutable_sha256_chain()->set_data("d");
  r.mutable_sha256_chain()->set_rounds(3);
  k = KernelFromProto(r);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(std::get<compute::Sha256Chain>(*k).data, "d");
  EXPECT_EQ(std::get<compute::Sha256Chain>(*k).rounds, 3);
  r.mutable_sqrt_sum()->set_n(7);
  k = KernelFromProto(r);
  ASSERT_TRUE(k.ok());
  EXPECT_EQ(std::get<compute::SqrtSum>(*k).n, 7);
  EXPECT_EQ(KernelFromProto(v1::RunRequest()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ToProtoComputeTest, SetsTheKernelsCaseAndTimes) {
  v1::RunResponse out;
  ToProtoCompute({.value = int64_t{25},
                  .queue_wait = absl::Milliseconds(1500),
                  .run_time = absl::Nanoseconds(42)},
                 &out);
  EXPECT_EQ(out.value_case(), v1::RunResponse::kCountPrimes);
  EXPECT_EQ(out.count_primes(), 25);
  EXPECT_EQ(out.queue_wait().seconds(), 1);
  EXPECT_EQ(out.queue_wait().nanos(), 500'000'000);
  EXPECT_EQ(out.run_time().seconds(), 0);
  EXPECT_EQ(out.run_time().nanos(), 42);
  ToProtoCompute({.value = std::string(32, 'd')}, &out);
  EXPECT_EQ(out.value_case(), v1::RunResponse::kSha256Chain);
  EXPECT_EQ(out.sha256_chain(), std::string(32, 'd'));
}

}  // namespace
}  // namespace fetchd::request
