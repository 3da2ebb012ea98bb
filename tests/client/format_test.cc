#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "client/client.h"

namespace fetchd::client {
namespace {

using ::testing::HasSubstr;

v1::ComputeResponse Timed(v1::ComputeResponse r) {
  r.mutable_queue_wait()->set_nanos(12'000);
  r.mutable_run_time()->set_seconds(1);
  r.mutable_run_time()->set_nanos(500'000'000);
  return r;
}

TEST(FormatTest, HumanLineShowsCallValueAndTimings) {
  v1::ComputeRequest request;
  request.mutable_sqrt_sum()->set_n(10);
  v1::ComputeResponse response;
  response.set_sqrt_sum(19.306000526);
  const std::string line = FormatComputeHuman(request, Timed(response));
  EXPECT_THAT(line, HasSubstr("sqrt_sum(n=10) = 19.306000526"));
  EXPECT_THAT(line, HasSubstr("queue 12us"));
  EXPECT_THAT(line, HasSubstr("run 1.5s"));
}

TEST(FormatTest, HumanLineShowsDigestInHex) {
  v1::ComputeRequest request;
  request.mutable_sha256_chain()->set_data("abc");
  request.mutable_sha256_chain()->set_rounds(3);
  v1::ComputeResponse response;
  response.set_sha256_chain(std::string("\x01\xab", 2));
  EXPECT_THAT(FormatComputeHuman(request, response),
              HasSubstr("sha256_chain(data=3 bytes, rounds=3) = 01ab"));
}

TEST(FormatTest, JsonLineParsesWithEveryField) {
  v1::ComputeRequest request;
  request.mutable_count_primes()->set_limit(100);
  v1::ComputeResponse response;
  response.set_count_primes(25);
  const auto json =
      nlohmann::json::parse(FormatComputeJson(request, Timed(response)));
  EXPECT_EQ(json["kernel"], "count_primes");
  EXPECT_EQ(json["limit"], 100);
  EXPECT_EQ(json["value"], 25);
  EXPECT_DOUBLE_EQ(json["queue_wait_us"].get<double>(), 12.0);
  EXPECT_DOUBLE_EQ(json["run_time_us"].get<double>(), 1'500'000.0);
}

TEST(FormatTest, ErrorJsonCarriesCodeNameAndEscapedMessage) {
  const auto json = nlohmann::json::parse(
      FormatErrorJson(absl::InvalidArgumentError("bad \"n\"\n")));
  EXPECT_EQ(json["code"], "INVALID_ARGUMENT");
  EXPECT_EQ(json["message"], "bad \"n\"\n");
}

}  // namespace
}  // namespace fetchd::client
