#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "absl/strings/escaping.h"
#include "server/compute/compute.h"

namespace fetchd::compute {
namespace {

using ::testing::HasSubstr;

// Independent reference: one long-double running sum.
double ReferenceSqrtSum(int64_t n) {
  long double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::sqrt(static_cast<long double>(i));
  return static_cast<double>(sum);
}

// Independent reference: plain sieve of Eratosthenes.
int64_t ReferenceCountPrimes(int64_t limit) {
  if (limit <= 2) return 0;
  std::vector<bool> composite(limit, false);
  int64_t count = 0;
  for (int64_t i = 2; i < limit; ++i) {
    if (composite[i]) continue;
    ++count;
    for (int64_t j = i * i; j < limit; j += i) composite[j] = true;
  }
  return count;
}

std::string Hex(const absl::StatusOr<std::string>& digest) {
  return digest.ok() ? absl::BytesToHexString(*digest)
                     : digest.status().ToString();
}

TEST(SqrtSumTest, MatchesReferenceAcrossLaneAndSliceBoundaries) {
  for (int64_t n :
       {0, 1, 2, 7, 8, 9, 15, 16, 17, 1000, 32767, 32768, 32769, 123457}) {
    auto got = RunSqrtSum(n, StopToken());
    ASSERT_TRUE(got.ok()) << got.status();
    const double want = ReferenceSqrtSum(n);
    EXPECT_NEAR(*got, want, 1e-13 * std::max(1.0, want)) << "n=" << n;
  }
}

TEST(SqrtSumTest, MatchesPythonFsumForOneMillion) {
  // math.fsum(math.sqrt(i) for i in range(1000000)), correctly rounded.
  auto got = RunSqrtSum(1'000'000, StopToken());
  ASSERT_TRUE(got.ok());
  EXPECT_NEAR(*got, 666666166.4588221, 666666166.4588221 * 1e-14);
}

TEST(SqrtSumTest, StopsWhenCancelled) {
  StopSource source;
  source.RequestStop();
  // 1e12 terms would take about 15 minutes.
  auto got = RunSqrtSum(1'000'000'000'000, source.token());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kCancelled);
}

TEST(SqrtSumTest, StopsSoonAfterTheDeadline) {
  const absl::Time deadline = absl::Now() + absl::Milliseconds(20);
  auto got = RunSqrtSum(1'000'000'000'000, StopSource(deadline).token());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  // Polls every ~30 µs of work; allow for a slow, busy sanitizer build.
  EXPECT_LT(absl::Now() - deadline, absl::Seconds(1));
}

TEST(Sha256ChainTest, KnownDigests) {
  // FIPS 180-2 "abc" and the empty string; the rest from Python's hashlib.
  EXPECT_EQ(Hex(RunSha256Chain("abc", 1, StopToken())),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hex(RunSha256Chain("", 1, StopToken())),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hex(RunSha256Chain("abc", 2, StopToken())),
            "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");
  EXPECT_EQ(Hex(RunSha256Chain("fetchd", 5000, StopToken())),
            "64d3b5201dff915a257d77ee04446bceda64f8ca56b5a28e738a78a4d8f60456");
  // 1 MiB of 'a': hashed in several pieces.
  EXPECT_EQ(Hex(RunSha256Chain(std::string(1 << 20, 'a'), 1, StopToken())),
            "9bc1b2a288b26af7257a36277ae3816a7d4f16e89c1e7e77d0a5c48bad62b360");
}

TEST(Sha256ChainTest, StopsWhenCancelled) {
  StopSource source;
  source.RequestStop();
  auto got = RunSha256Chain("x", 1'000'000'000'000, source.token());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kCancelled);
}

TEST(CountPrimesTest, KnownValuesOfPi) {
  const std::vector<std::pair<int64_t, int64_t>> known = {{0, 0},
                                                          {1, 0},
                                                          {2, 0},
                                                          {3, 1},
                                                          {4, 2},
                                                          {10, 4},
                                                          {11, 4},
                                                          {12, 5},
                                                          {100, 25},
                                                          {1000, 168},
                                                          {1'000'000, 78498},
                                                          {10'000'000, 664579}};
  for (auto [limit, want] : known) {
    auto got = RunCountPrimes(limit, StopToken());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want) << "limit=" << limit;
  }
}

TEST(CountPrimesTest, MatchesPlainSieveAroundSegmentBoundaries) {
  for (int64_t limit = 0; limit < 600; ++limit) {
    ASSERT_EQ(*RunCountPrimes(limit, StopToken()), ReferenceCountPrimes(limit))
        << "limit=" << limit;
  }
  constexpr int64_t kSegment = int64_t{1} << 18;
  for (int64_t limit :
       {kSegment, kSegment + 1, kSegment + 2, kSegment + 3, kSegment + 4,
        2 * kSegment + 3, 3 * kSegment + 2, int64_t{1'234'567}}) {
    EXPECT_EQ(*RunCountPrimes(limit, StopToken()), ReferenceCountPrimes(limit))
        << "limit=" << limit;
  }
}

TEST(CountPrimesTest, StopsWhenCancelled) {
  StopSource source;
  source.RequestStop();
  auto got = RunCountPrimes(10'000'000'000, source.token());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kCancelled);
}

TEST(RunKernelTest, DispatchesToTheKernelAndKeepsTheAlternative) {
  auto v = RunKernel(CountPrimes{100}, StopToken());
  ASSERT_TRUE(v.ok());
  ASSERT_EQ(v->index(), 2u);
  EXPECT_EQ(std::get<2>(*v), 25);
  v = RunKernel(Sha256Chain{"abc", 1}, StopToken());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(std::get<1>(*v).size(), 32u);
  v = RunKernel(SqrtSum{4}, StopToken());
  ASSERT_TRUE(v.ok());
  EXPECT_DOUBLE_EQ(std::get<0>(*v), 0 + 1 + std::sqrt(2.0) + std::sqrt(3.0));
}

TEST(ValidateKernelTest, NamesTheFieldAndTheLimit) {
  const KernelLimits limits{
      .max_n = 1000, .max_data_bytes = 16, .max_rounds = 500};
  struct Case {
    Kernel kernel;
    const char* field;
    const char* limit;
  };
  const std::vector<Case> bad = {
      {SqrtSum{-1}, "sqrt_sum.n", "--max_compute_n"},
      {SqrtSum{1001}, "sqrt_sum.n", "--max_compute_n"},
      {CountPrimes{-5}, "count_primes.limit", "--max_compute_n"},
      {CountPrimes{1001}, "count_primes.limit", "--max_compute_n"},
      {Sha256Chain{"abc", 0}, "sha256_chain.rounds", "--max_compute_rounds"},
      {Sha256Chain{"abc", 501}, "sha256_chain.rounds", "500"},
      {Sha256Chain{"abc", 10'000'000'000}, "sha256_chain.rounds",
       "--max_compute_rounds"},
      {Sha256Chain{std::string(17, 'x'), 1}, "sha256_chain.data",
       "--max_compute_data_bytes"},
  };
  for (const Case& c : bad) {
    absl::Status s = ValidateKernel(c.kernel, limits);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(s.message(), HasSubstr(c.field));
    EXPECT_THAT(s.message(), HasSubstr(c.limit));
  }
  EXPECT_TRUE(ValidateKernel(SqrtSum{0}, limits).ok());
  EXPECT_TRUE(ValidateKernel(SqrtSum{1000}, limits).ok());
  EXPECT_TRUE(
      ValidateKernel(Sha256Chain{std::string(16, 'x'), 500}, limits).ok());
  // The defaults: the rounds=1e10 (~15-50 min of CPU) is refused.
  absl::Status s = ValidateKernel(Sha256Chain{"abc", 10'000'000'000}, {});
  EXPECT_THAT(s.message(), HasSubstr("between 1 and 100000000"));
  EXPECT_TRUE(ValidateKernel(CountPrimes{0}, limits).ok());
}

TEST(KernelNameTest, ApiNames) {
  EXPECT_STREQ(KernelName(SqrtSum{}), "sqrt_sum");
  EXPECT_STREQ(KernelName(Sha256Chain{}), "sha256_chain");
  EXPECT_STREQ(KernelName(CountPrimes{}), "count_primes");
}

}  // namespace
}  // namespace fetchd::compute
