// RpcAdmission: the concurrent-RPC cap and per-identity quotas.
#include "server/rpc/admission.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/auth/auth.h"
#include "server/auth/line_file.h"

namespace fetchd::rpc {

// --- IdentityLimits -------------------------------------------------------

absl::StatusOr<IdentityLimits> IdentityLimits::Parse(absl::string_view text,
                                                     absl::string_view path) {
  IdentityLimits out;
  for (const auth::FileLine& line :
       auth::SplitLineFile(text, auth::Comments::kTrailing)) {
    const int line_number = line.number;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--identity_limits_file ", path, " line ", line_number, ": ", why));
    };
    const std::vector<absl::string_view>& words = line.fields;
    if (words.size() < 2) {
      return bad(absl::StrCat("\"", words[0],
                              "\" has no limits; want IDENTITY "
                              "rpcs_per_second=R items_per_second=I "
                              "[burst=SECONDS]"));
    }
    QuotaLimit limit;
    limit.line = line_number;
    for (size_t i = 1; i < words.size(); ++i) {
      std::pair<absl::string_view, absl::string_view> kv =
          absl::StrSplit(words[i], absl::MaxSplits('=', 1));
      double value = 0;
      if (!absl::SimpleAtod(kv.second, &value) || !std::isfinite(value) ||
          value <= 0) {
        return bad(absl::StrCat("\"", words[i],
                                "\": want KEY=NUMBER with a number above 0"));
      }
      if (kv.first == "rpcs_per_second") {
        limit.rpcs_per_second = value;
      } else if (kv.first == "items_per_second") {
        limit.items_per_second = value;
      } else if (kv.first == "burst") {
        limit.burst_seconds = value;
      } else {
        return bad(absl::StrCat("unknown key \"", kv.first,
                                "\"; want rpcs_per_second, items_per_second "
                                "or burst"));
      }
    }
    const std::string identity(words[0]);
    if (identity == "default") {
      if (out.default_.has_value()) {
        return bad(absl::StrCat("a second default line (the first is line ",
                                out.default_->line, ")"));
      }
      out.default_ = limit;
      continue;
    }
    auto [it, inserted] = out.by_identity_.emplace(identity, limit);
    if (!inserted) {
      return bad(absl::StrCat("identity \"", identity,
                              "\" again (first on line ", it->second.line,
                              ")"));
    }
  }
  return out;
}

absl::StatusOr<IdentityLimits> IdentityLimits::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("--identity_limits_file ", path, ": cannot read it"));
  }
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

const QuotaLimit* IdentityLimits::Find(absl::string_view key) const {
  if (auto it = by_identity_.find(key); it != by_identity_.end()) {
    return &it->second;
  }
  return default_.has_value() ? &*default_ : nullptr;
}

// --- QuotaBuckets ---------------------------------------------------------

namespace {

// A bucket's capacity: `burst` seconds of `rate`, and at least one token.
double Capacity(double rate, double burst) {
  return std::max(1.0, rate * burst);
}

int64_t RetryAfter(double missing, double rate) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(missing / rate)));
}

std::string Rate(double r) { return absl::StrFormat("%g", r); }

}  // namespace

QuotaBuckets::Bucket& QuotaBuckets::Find(absl::string_view key,
                                         const QuotaLimit& limit,
                                         absl::Time now) {
  if (auto it = index_.find(key); it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second);  // most recently used
    return it->second->second;
  }
  if (lru_.size() >= max_keys_ && !lru_.empty()) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  Bucket fresh;
  fresh.rpcs = Capacity(limit.rpcs_per_second.value_or(1), limit.burst_seconds);
  fresh.items =
      Capacity(limit.items_per_second.value_or(1), limit.burst_seconds);
  fresh.refilled = now;
  lru_.emplace_front(std::string(key), fresh);
  index_.emplace(lru_.front().first, lru_.begin());
  return lru_.front().second;
}

std::optional<QuotaBuckets::Refusal> QuotaBuckets::Charge(absl::string_view key,
                                                          int64_t items,
                                                          absl::Time now) {
  absl::MutexLock lock(&mu_);
  const QuotaLimit* limit = limits_->Find(key);
  if (limit == nullptr) return std::nullopt;  // unlimited: no bucket kept
  Bucket& b = Find(key, *limit, now);
  const double elapsed = std::max(0.0, absl::ToDoubleSeconds(now - b.refilled));
  b.refilled = std::max(b.refilled, now);
  const std::string where =
      absl::StrCat("--identity_limits_file line ", limit->line);
  if (limit->rpcs_per_second.has_value()) {
    const double rate = *limit->rpcs_per_second;
    b.rpcs =
        std::min(Capacity(rate, limit->burst_seconds), b.rpcs + elapsed * rate);
  }
  if (limit->items_per_second.has_value()) {
    const double rate = *limit->items_per_second;
    b.items = std::min(Capacity(rate, limit->burst_seconds),
                       b.items + elapsed * rate);
  }
  if (limit->rpcs_per_second.has_value() && b.rpcs < 1) {
    const double rate = *limit->rpcs_per_second;
    return Refusal{absl::StrCat("identity \"", key, "\" is past its quota of ",
                                Rate(rate), " RPCs per second (", where, ")"),
                   RetryAfter(1 - b.rpcs, rate), false};
  }
  // Items: any positive balance admits the request, which may then leave
  // the bucket in debt (a batch larger than the burst runs once).
  if (limit->items_per_second.has_value() && items > 0 && b.items <= 0) {
    const double rate = *limit->items_per_second;
    return Refusal{absl::StrCat("identity \"", key, "\" is past its quota of ",
                                Rate(rate), " items per second (", where, ")"),
                   RetryAfter(std::max(1.0, -b.items), rate), true};
  }
  if (limit->rpcs_per_second.has_value()) b.rpcs -= 1;
  if (limit->items_per_second.has_value()) {
    b.items -= static_cast<double>(items);
  }
  return std::nullopt;
}

void QuotaBuckets::SetLimits(std::shared_ptr<const IdentityLimits> limits) {
  absl::MutexLock lock(&mu_);
  limits_ = std::move(limits);
  lru_.clear();
  index_.clear();
}

size_t QuotaBuckets::tracked() const {
  absl::MutexLock lock(&mu_);
  return lru_.size();
}

// --- RpcAdmission ---------------------------------------------------------

absl::StatusOr<std::unique_ptr<RpcAdmission>> RpcAdmission::Create(
    AdmissionOptions options) {
  if (options.max_concurrent_rpcs < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_concurrent_rpcs=", options.max_concurrent_rpcs,
                     " is invalid: must be >= 1"));
  }
  std::unique_ptr<RpcAdmission> admission(new RpcAdmission(options));
  if (!options.identity_limits_file.empty()) {
    absl::StatusOr<IdentityLimits> limits =
        IdentityLimits::Load(options.identity_limits_file);
    if (!limits.ok()) return limits.status();
    admission->buckets_ = std::make_unique<QuotaBuckets>(
        std::make_shared<const IdentityLimits>(*std::move(limits)),
        std::max<size_t>(1, options.max_tracked_identities));
  }
  return admission;
}

std::optional<RpcAdmission::Refusal> RpcAdmission::Enter() {
  int now = in_progress_.load(std::memory_order_relaxed);
  while (now < options_.max_concurrent_rpcs) {
    if (in_progress_.compare_exchange_weak(now, now + 1,
                                           std::memory_order_relaxed)) {
      return std::nullopt;
    }
  }
  refused_concurrency_.fetch_add(1, std::memory_order_relaxed);
  return Refusal{absl::StrCat("fetchd is serving ", now,
                              " RPCs, its limit (--max_concurrent_rpcs=",
                              options_.max_concurrent_rpcs, "): retry later"),
                 1};
}

std::optional<RpcAdmission::Refusal> RpcAdmission::Charge(absl::string_view key,
                                                          int64_t items) {
  if (buckets_ == nullptr) return std::nullopt;
  std::optional<QuotaBuckets::Refusal> refusal =
      buckets_->Charge(key, items, absl::Now());
  if (!refusal.has_value()) return std::nullopt;
  (refusal->items ? refused_item_quota_ : refused_rpc_quota_)
      .fetch_add(1, std::memory_order_relaxed);
  return Refusal{absl::StrCat(refusal->message, "; retry after ",
                              refusal->retry_after_seconds, "s"),
                 refusal->retry_after_seconds};
}

absl::Status RpcAdmission::Reload(absl::string_view trigger) {
  if (buckets_ == nullptr) return absl::OkStatus();
  absl::MutexLock lock(&reload_mu_);
  absl::StatusOr<IdentityLimits> limits =
      IdentityLimits::Load(options_.identity_limits_file);
  if (limits.ok()) {
    const size_t entries = limits->size();
    buckets_->SetLimits(
        std::make_shared<const IdentityLimits>(*std::move(limits)));
    if (options_.logger != nullptr) {
      options_.logger->LogAlways(
          log::Level::kInfo,
          absl::StrFormat(
              R"("event":"identity_limits_loaded","trigger":"%s","file":"%s","entries":%d)",
              log::JsonEscape(trigger),
              log::JsonEscape(options_.identity_limits_file), entries));
    }
    return absl::OkStatus();
  }
  if (options_.logger != nullptr) {
    options_.logger->LogAlways(
        log::Level::kError,
        absl::StrFormat(
            R"("event":"identity_limits_reload_failed","trigger":"%s","error":"%s","note":"the limits in force stay")",
            log::JsonEscape(trigger),
            log::JsonEscape(limits.status().ToString())));
  }
  return limits.status();
}

void RpcAdmission::Render(metrics::Exposition& out) const {
  out.Family("fetchd_rpcs_in_progress", "gauge",
             "fetchd RPCs running now (every method; the cap is "
             "--max_concurrent_rpcs)");
  out.Sample("fetchd_rpcs_in_progress",
             in_progress_.load(std::memory_order_relaxed));
  out.Family("fetchd_rpcs_refused_total", "counter",
             "RPCs answered RESOURCE_EXHAUSTED before they ran: "
             "concurrency (--max_concurrent_rpcs), rpc_quota or item_quota "
             "(--identity_limits_file)");
  const std::pair<const char*, const std::atomic<uint64_t>*> reasons[] = {
      {"concurrency", &refused_concurrency_},
      {"rpc_quota", &refused_rpc_quota_},
      {"item_quota", &refused_item_quota_}};
  for (const auto& [reason, count] : reasons) {
    out.Sample("fetchd_rpcs_refused_total", {{"reason", reason}},
               static_cast<double>(count->load(std::memory_order_relaxed)));
  }
}

std::string QuotaKey(absl::string_view identity, absl::string_view peer) {
  if (identity != auth::kAnonymous) return std::string(identity);
  // "ipv4:127.0.0.1:5678", "ipv6:[::1]:5678"; anything else as it is.
  absl::string_view address = peer;
  if (absl::ConsumePrefix(&address, "ipv6:")) {
    if (absl::ConsumePrefix(&address, "[")) {
      return std::string(address.substr(0, address.find(']')));
    }
    return std::string(address);
  }
  if (absl::ConsumePrefix(&address, "ipv4:")) {
    return std::string(address.substr(0, address.rfind(':')));
  }
  return std::string(peer);
}

}  // namespace fetchd::rpc
