// fetchctl as a user runs it: the real binary against a real fetchd.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/subprocess.h"
#include "tests/support/test_server.h"

namespace fetchd::client {
namespace {

using ::fetchd::testing::ProcessResult;
using ::fetchd::testing::RunProcess;
using ::fetchd::testing::TestServer;
using ::testing::HasSubstr;

class FetchctlTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ok()); }
  ProcessResult Fetchctl(std::vector<std::string> args) {
    args.insert(args.begin(), {FETCHCTL_PATH, "--addr=" + server_.address()});
    auto result = RunProcess(args, absl::Seconds(30));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : ProcessResult{};
  }
  TestServer server_;
};

TEST_F(FetchctlTest, ComputeSqrtSumHuman) {
  ProcessResult r = Fetchctl({"compute", "sqrt_sum", "--n=4"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sqrt_sum(n=4) = 4.146264369941973 "));
}

TEST_F(FetchctlTest, ComputeJsonIsOneObjectPerLine) {
  ProcessResult r =
      Fetchctl({"--json", "compute", "count_primes", "--limit=1000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1);
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["value"], 168);
  EXPECT_EQ(json["kernel"], "count_primes");

  r = Fetchctl({"--json", "compute", "sha256_chain", "--data_hex=616263"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["value"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(FetchctlTest, RpcFailurePrintsCodeAndMessageAndExitsOne) {
  ProcessResult r = Fetchctl({"compute", "sqrt_sum", "--n=-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT: sqrt_sum.n"));
  EXPECT_EQ(r.out, "");

  r = Fetchctl({"--timeout=200ms", "compute", "sqrt_sum", "--n=10000000000"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("DEADLINE_EXCEEDED"));
}

TEST_F(FetchctlTest, UsageErrorsExitTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {},
           {"compute"},
           {"compute", "sqrt_sum"},
           {"compute", "nope", "--n=1"},
           {"compute", "sha256_chain", "--data_hex=zz"},
           {"frobnicate"}}) {
    ProcessResult r = Fetchctl(args);
    EXPECT_EQ(r.exit_code, 2) << ::testing::PrintToString(args) << r.err;
    EXPECT_THAT(r.err, HasSubstr("Usage"));
  }
}

TEST_F(FetchctlTest, HealthServing) {
  ProcessResult r = Fetchctl({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");
}

TEST(FetchctlNoServerTest, UnreachableServerFailsWithinTimeout) {
  // Port 1 on loopback: nothing listens there.
  auto r = RunProcess(
      {FETCHCTL_PATH, "--addr=127.0.0.1:1", "--timeout=500ms", "health"},
      absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_THAT(r->err, ::testing::AnyOf(HasSubstr("UNAVAILABLE"),
                                       HasSubstr("DEADLINE_EXCEEDED")));
}

}  // namespace
}  // namespace fetchd::client
