// Admission of RPCs before they run (internal to rpc/, issue #16):
//
//   IdentityLimits  the --identity_limits_file: RPCs/s and items/s per
//                   identity, with a default line
//   QuotaBuckets    token buckets per identity against those limits, a
//                   bounded number of them (least recently used go first)
//   RpcAdmission    --max_concurrent_rpcs (RPCs in progress, every method)
//                   and the quotas; what CqLoop asks before OnStart
//
// No gRPC types: the CQ layer (call.cc) turns a refusal into
// RESOURCE_EXHAUSTED with `retry-after` trailing metadata.
#ifndef FETCHD_SERVER_RPC_ADMISSION_H_
#define FETCHD_SERVER_RPC_ADMISSION_H_

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/log/log.h"
#include "server/metrics/metrics.h"

namespace fetchd::rpc {

// One identity's quota. A rate of nullopt is unlimited.
struct QuotaLimit {
  std::optional<double> rpcs_per_second;
  std::optional<double> items_per_second;
  double burst_seconds = 1;  // a bucket holds this many seconds of its rate
  int line = 0;              // where it was set in the file (messages)
};

// The parsed --identity_limits_file. Format, one entry a line, '#' starts a
// comment:
//   IDENTITY [rpcs_per_second=R] [items_per_second=I] [burst=SECONDS]
//   default  [rpcs_per_second=R] [items_per_second=I] [burst=SECONDS]
// IDENTITY is a tokens-file identity or an mTLS subject; a caller without
// one (anonymous) is known by its peer IP address ("127.0.0.1", "::1").
// Rates are positive decimals; a rate left out is unlimited; burst
// (default 1) is how many seconds of the rate a bucket holds (at least one
// RPC or item). Identities without a line take the default line, or are
// unlimited when there is none.
class IdentityLimits {
 public:
  // INVALID_ARGUMENT naming --identity_limits_file, the path and the line.
  static absl::StatusOr<IdentityLimits> Parse(absl::string_view text,
                                              absl::string_view path);
  static absl::StatusOr<IdentityLimits> Load(const std::string& path);

  // The limit for `key`, or null when it is unlimited.
  const QuotaLimit* Find(absl::string_view key) const;
  size_t size() const { return by_identity_.size() + (default_ ? 1 : 0); }

 private:
  absl::flat_hash_map<std::string, QuotaLimit> by_identity_;
  std::optional<QuotaLimit> default_;
};

// Token buckets per identity key, at most `max_keys` of them: a flood of
// peers evicts the least recently used bucket instead of growing memory.
// Thread-safe.
class QuotaBuckets {
 public:
  QuotaBuckets(std::shared_ptr<const IdentityLimits> limits, size_t max_keys)
      : limits_(std::move(limits)), max_keys_(max_keys) {}

  struct Refusal {
    std::string message;          // names the identity, the limit and its line
    int64_t retry_after_seconds;  // >= 1
    bool items;                   // the items quota (else the RPCs quota)
  };
  // Charges one RPC and `items` items to `key` at `now`, or says why not
  // (nothing is charged then). An items bucket may go into debt by one
  // large request (a batch bigger than the burst still runs once); the
  // next request waits until the debt is paid.
  std::optional<Refusal> Charge(absl::string_view key, int64_t items,
                                absl::Time now) ABSL_LOCKS_EXCLUDED(mu_);

  // New limits (a reload); every bucket starts afresh.
  void SetLimits(std::shared_ptr<const IdentityLimits> limits)
      ABSL_LOCKS_EXCLUDED(mu_);

  size_t tracked() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Bucket {
    double rpcs = 0, items = 0;  // tokens; items may go negative (debt)
    absl::Time refilled;
  };
  using Lru = std::list<std::pair<std::string, Bucket>>;  // front: newest

  Bucket& Find(absl::string_view key, const QuotaLimit& limit, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::shared_ptr<const IdentityLimits> limits_ ABSL_GUARDED_BY(mu_);
  const size_t max_keys_;
  Lru lru_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Lru::iterator> index_ ABSL_GUARDED_BY(mu_);
};

struct AdmissionOptions {
  int max_concurrent_rpcs = 1024;    // --max_concurrent_rpcs
  std::string identity_limits_file;  // --identity_limits_file; "" = none
  size_t max_tracked_identities = 10000;
  log::Logger* logger = nullptr;  // reloads are logged here; may be null
};

// What every fetchd RPC passes before it runs. Thread-safe.
class RpcAdmission {
 public:
  // Loads the limits file (its error names the flag and the line).
  static absl::StatusOr<std::unique_ptr<RpcAdmission>> Create(
      AdmissionOptions options);

  struct Refusal {
    std::string message;
    int64_t retry_after_seconds = 0;  // 0: no retry-after to send
  };

  // Counts one RPC in progress, or refuses it past --max_concurrent_rpcs
  // (then nothing is counted). Pair a success with Leave().
  std::optional<Refusal> Enter();
  void Leave() { in_progress_.fetch_sub(1, std::memory_order_relaxed); }

  // Charges the caller's quota (`key`: its identity, or its peer address
  // when anonymous) one RPC and `items` items.
  std::optional<Refusal> Charge(absl::string_view key, int64_t items);

  bool has_quotas() const { return buckets_ != nullptr; }

  // Reads --identity_limits_file again (on SIGHUP); on an error the limits
  // in force stay and the error is returned. Logged either way.
  absl::Status Reload(absl::string_view trigger);

  // fetchd_rpcs_in_progress, fetchd_rpcs_refused_total{reason}.
  void Render(metrics::Exposition& out) const;

 private:
  explicit RpcAdmission(AdmissionOptions options)
      : options_(std::move(options)) {}

  const AdmissionOptions options_;
  std::unique_ptr<QuotaBuckets> buckets_;  // null without a limits file
  std::atomic<int> in_progress_{0};
  std::atomic<uint64_t> refused_concurrency_{0};
  std::atomic<uint64_t> refused_rpc_quota_{0};
  std::atomic<uint64_t> refused_item_quota_{0};
  absl::Mutex reload_mu_;  // one reload at a time
};

// The quota key of a caller: its identity, or for an anonymous caller the
// IP address of `peer` (gRPC's "ipv4:1.2.3.4:5678" / "ipv6:[::1]:5678"
// form; the port is dropped so that new connections share one bucket).
std::string QuotaKey(absl::string_view identity, absl::string_view peer);

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_ADMISSION_H_
