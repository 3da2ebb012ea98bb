// The compute kernels. Each one works in slices of well under 1 ms and polls
// its StopToken between slices, so a cancelled or expired call frees its
// worker quickly.
#include <openssl/evp.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <memory>

#include "absl/strings/str_cat.h"
#include "server/compute/compute.h"

namespace fetchd::compute {
namespace {

// Largest r with r * r <= x, for x >= 0.
int64_t IntegerSqrt(int64_t x) {
  auto r = static_cast<int64_t>(std::sqrt(static_cast<double>(x)));
  while (r > 0 && r * r > x) --r;
  while ((r + 1) * (r + 1) <= x) ++r;
  return r;
}

struct EvpMdDeleter {
  void operator()(EVP_MD* md) const { EVP_MD_free(md); }
};
struct EvpMdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

absl::Status CheckRange(const char* field, int64_t value, int64_t min,
                        int64_t max, const char* flag) {
  if (value >= min && value <= max) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " must be between ",
                                                 min, " and ", max, " (", flag,
                                                 "), got ", value));
}

}  // namespace

absl::StatusOr<double> RunSqrtSum(int64_t n, const StopToken& stop) {
  // Eight independent lanes keep the adds off one dependency chain and let
  // packed sqrt run; summing the lanes pairwise at the end is also more
  // accurate than one running sum. x stays exact: integers below 2^53.
  constexpr int kLanes = 8;
  constexpr int64_t kSlice = 1 << 15;  // ~30 µs of work between polls
  const int64_t vector_end = n - n % kLanes;
  double lanes[kLanes] = {};
  int64_t i = 0;
#if defined(__SSE2__)
  __m128d acc[kLanes / 2], x[kLanes / 2];
  for (int k = 0; k < kLanes / 2; ++k) {
    acc[k] = _mm_setzero_pd();
    x[k] = _mm_set_pd(2 * k + 1, 2 * k);
  }
  const __m128d step = _mm_set1_pd(kLanes);
  while (i < vector_end) {
    if (stop.stop_requested()) return stop.status();
    const int64_t slice_end = std::min(vector_end, i + kSlice);
    for (; i < slice_end; i += kLanes) {
      for (int k = 0; k < kLanes / 2; ++k) {
        acc[k] = _mm_add_pd(acc[k], _mm_sqrt_pd(x[k]));
        x[k] = _mm_add_pd(x[k], step);
      }
    }
  }
  for (int k = 0; k < kLanes / 2; ++k) _mm_storeu_pd(&lanes[2 * k], acc[k]);
#else
  double x[kLanes];
  for (int k = 0; k < kLanes; ++k) x[k] = k;
  while (i < vector_end) {
    if (stop.stop_requested()) return stop.status();
    const int64_t slice_end = std::min(vector_end, i + kSlice);
    for (; i < slice_end; i += kLanes) {
      for (int k = 0; k < kLanes; ++k) {
        lanes[k] += std::sqrt(x[k]);
        x[k] += kLanes;
      }
    }
  }
#endif
  double tail = 0;
  for (; i < n; ++i) tail += std::sqrt(static_cast<double>(i));
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])) + tail;
}

absl::StatusOr<std::string> RunSha256Chain(absl::string_view data,
                                           int64_t rounds,
                                           const StopToken& stop) {
  if (rounds < 1) return absl::InvalidArgumentError("rounds must be >= 1");
  // Fetching the algorithm costs far more than hashing 32 bytes: do it
  // once. An EVP_MD is immutable and safe to share between threads.
  static const std::unique_ptr<EVP_MD, EvpMdDeleter> md(
      EVP_MD_fetch(nullptr, "SHA256", nullptr));
  std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter> ctx(EVP_MD_CTX_new());
  if (md == nullptr || ctx == nullptr) {
    return absl::InternalError("OpenSSL could not set up SHA-256");
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  bool ok = EVP_DigestInit_ex2(ctx.get(), md.get(), nullptr) == 1;
  // The first round hashes the caller's bytes in pieces (~0.1 ms each).
  constexpr size_t kPiece = 64 * 1024;
  for (size_t offset = 0; ok && offset < data.size(); offset += kPiece) {
    if (stop.stop_requested()) return stop.status();
    ok = EVP_DigestUpdate(ctx.get(), data.data() + offset,
                          std::min(kPiece, data.size() - offset)) == 1;
  }
  ok = ok && EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) == 1;
  // Later rounds hash 32 bytes each (~0.3 µs): poll every 1024 of them.
  for (int64_t round = 1; ok && round < rounds; ++round) {
    if (round % 1024 == 0 && stop.stop_requested()) return stop.status();
    ok = EVP_DigestInit_ex2(ctx.get(), md.get(), nullptr) == 1 &&
         EVP_DigestUpdate(ctx.get(), digest, digest_len) == 1 &&
         EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) == 1;
  }
  if (!ok) return absl::InternalError("OpenSSL SHA-256 failed");
  return std::string(reinterpret_cast<const char*>(digest), digest_len);
}

absl::StatusOr<int64_t> RunCountPrimes(int64_t limit, const StopToken& stop) {
  if (limit <= 2) return 0;
  // Odd primes up to sqrt(limit - 1) sieve every segment.
  const int64_t root = IntegerSqrt(limit - 1);
  std::vector<bool> composite(root + 1, false);
  std::vector<int64_t> primes;
  std::vector<int64_t> next_multiple;  // next odd multiple to strike
  for (int64_t p = 3; p <= root; p += 2) {
    // Near the largest limits this sieve alone takes tens of ms.
    if (p % (1 << 16) == 1 && stop.stop_requested()) return stop.status();
    if (composite[p]) continue;
    primes.push_back(p);
    next_multiple.push_back(p * p);
    for (int64_t q = p * p; q <= root; q += 2 * p) composite[q] = true;
  }
  // Segments of odd numbers: index j stands for lo + 2j. 2^18 numbers per
  // segment keep the sieve in L2 and a segment well under 1 ms.
  constexpr int64_t kSegment = int64_t{1} << 18;
  std::vector<uint8_t> is_prime(kSegment / 2);
  int64_t count = 1;  // the prime 2
  for (int64_t lo = 3; lo < limit; lo += kSegment) {
    if (stop.stop_requested()) return stop.status();
    const int64_t hi = std::min(limit, lo + kSegment);  // [lo, hi)
    const auto len = static_cast<size_t>((hi - lo + 1) / 2);
    std::fill_n(is_prime.begin(), len, 1);
    for (size_t j = 0; j < primes.size(); ++j) {
      // With millions of small primes one segment can take several ms.
      if (j % (1 << 16) == (1 << 16) - 1 && stop.stop_requested()) {
        return stop.status();
      }
      const int64_t p = primes[j];
      if (p * p >= hi) break;  // larger primes start past this segment
      int64_t m = next_multiple[j];
      for (; m < hi; m += 2 * p) is_prime[(m - lo) / 2] = 0;
      next_multiple[j] = m;
    }
    count += std::count(is_prime.begin(), is_prime.begin() + len, 1);
  }
  return count;
}

absl::StatusOr<KernelValue> RunKernel(const Kernel& kernel,
                                      const StopToken& stop) {
  struct Visitor {
    const StopToken& stop;
    absl::StatusOr<KernelValue> operator()(const SqrtSum& k) const {
      auto v = RunSqrtSum(k.n, stop);
      if (!v.ok()) return v.status();
      return KernelValue(std::in_place_index<0>, *v);
    }
    absl::StatusOr<KernelValue> operator()(const Sha256Chain& k) const {
      auto v = RunSha256Chain(k.data, k.rounds, stop);
      if (!v.ok()) return v.status();
      return KernelValue(std::in_place_index<1>, *std::move(v));
    }
    absl::StatusOr<KernelValue> operator()(const CountPrimes& k) const {
      auto v = RunCountPrimes(k.limit, stop);
      if (!v.ok()) return v.status();
      return KernelValue(std::in_place_index<2>, *v);
    }
  };
  return std::visit(Visitor{stop}, kernel);
}

absl::Status ValidateKernel(const Kernel& kernel, const KernelLimits& limits) {
  struct Visitor {
    const KernelLimits& limits;
    absl::Status operator()(const SqrtSum& k) const {
      return CheckRange("sqrt_sum.n", k.n, 0, limits.max_n, "--max_compute_n");
    }
    absl::Status operator()(const Sha256Chain& k) const {
      if (static_cast<int64_t>(k.data.size()) > limits.max_data_bytes) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sha256_chain.data is ", k.data.size(), " bytes; the limit is ",
            limits.max_data_bytes, " (--max_compute_data_bytes)"));
      }
      return CheckRange("sha256_chain.rounds", k.rounds, 1, limits.max_rounds,
                        "--max_compute_rounds");
    }
    absl::Status operator()(const CountPrimes& k) const {
      return CheckRange("count_primes.limit", k.limit, 0, limits.max_n,
                        "--max_compute_n");
    }
  };
  return std::visit(Visitor{limits}, kernel);
}

const char* KernelName(const Kernel& kernel) {
  static constexpr const char* kNames[] = {"sqrt_sum", "sha256_chain",
                                           "count_primes"};
  return kNames[kernel.index()];
}

}  // namespace fetchd::compute
