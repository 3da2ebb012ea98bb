// memory/: the process-wide memory budget (--memory_budget_bytes).
//
//   Budget       a byte count shared by the whole process: reservations are
//                taken against it and never past it (TryReserve fails at
//                once, it never blocks); lock-free counters
//   Reservation  RAII: bytes held against a Budget until it is destroyed;
//                movable, can grow (TryGrow) and shrink (ShrinkTo)
//   ChooseBudget the budget to use: the flag, else ~60% of the cgroup's
//                memory limit, else a fixed default (pure, tested on file
//                contents given as strings)
//
// What holds reservations: the fetch engine (response bodies as they
// arrive, kept headers, page items), the rpc layer (processed output,
// results held for a unary response, messages queued for a stream). A
// waiter (the engine's admission) asks to be woken by the next release
// (WakeOnRelease) instead of polling. No gRPC or curl types.
#ifndef FETCHD_SERVER_MEMORY_MEMORY_H_
#define FETCHD_SERVER_MEMORY_MEMORY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace fetchd::memory {

class Budget;

// Bytes held against a Budget; released when destroyed. An empty
// Reservation (default-constructed) belongs to no budget: it holds nothing
// and TryGrow on it always succeeds (no budget, no limit). Not thread-safe
// itself: one owner at a time, handed on by moving; the Budget behind it is
// thread-safe.
class Reservation {
 public:
  Reservation() = default;
  Reservation(Reservation&& other) noexcept
      : budget_(std::exchange(other.budget_, nullptr)),
        bytes_(std::exchange(other.bytes_, 0)) {}
  Reservation& operator=(Reservation&& other) noexcept {
    if (this != &other) {
      Release();
      budget_ = std::exchange(other.budget_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { Release(); }

  int64_t bytes() const { return bytes_; }
  Budget* budget() const { return budget_; }

  // Holds `more` bytes more if the budget has room; false (and nothing
  // changes) if not. Never blocks.
  inline bool TryGrow(int64_t more);
  // Holds at least `total` bytes: TryGrow of the difference (true at once
  // when it already holds that many).
  bool TryGrowTo(int64_t total) {
    return total <= bytes_ || TryGrow(total - bytes_);
  }
  // TryGrowTo, but only while at least `keep_free` bytes of the budget stay
  // free afterwards (room kept for others' first bytes).
  inline bool TryGrowTo(int64_t total, int64_t keep_free);
  // Holds at most `total` bytes, releasing the rest.
  inline void ShrinkTo(int64_t total);
  // Releases everything; the reservation stays tied to its budget.
  void Release() { ShrinkTo(0); }
  // Takes over `other`'s bytes (`other` ends empty). Both must belong to
  // the same budget, or one of them to none.
  inline void Merge(Reservation&& other);

 private:
  friend class Budget;
  Reservation(Budget* budget, int64_t bytes) : budget_(budget), bytes_(bytes) {}

  Budget* budget_ = nullptr;
  int64_t bytes_ = 0;
};

// A process-wide byte budget. Thread-safe; reserving and releasing are a
// compare-and-swap or an atomic add (no lock), so they may run per body
// chunk. NOTE: a Budget must outlive every Reservation taken from it.
class Budget {
 public:
  // `limit` >= 1 bytes.
  explicit Budget(int64_t limit) : limit_(limit < 1 ? 1 : limit) {}
  Budget(const Budget&) = delete;
  Budget& operator=(const Budget&) = delete;

  int64_t limit() const { return limit_; }
  int64_t reserved() const { return reserved_.load(std::memory_order_relaxed); }
  int64_t available() const { return limit_ - reserved(); }
  // The most ever reserved at once (tests, and the fault suite's bound).
  int64_t peak() const { return peak_.load(std::memory_order_relaxed); }

  // An empty reservation tied to this budget, to grow later.
  Reservation Empty() { return Reservation(this, 0); }
  // `bytes` (>= 0) if they fit (reserved + bytes <= limit), else none.
  // Never blocks.
  std::optional<Reservation> TryReserve(int64_t bytes) {
    if (!TryTake(bytes)) return std::nullopt;
    return Reservation(this, bytes);
  }

  // Asks for one call of every waker after the next release (one-shot).
  // The pattern that loses no wakeup: TryReserve fails -> WakeOnRelease()
  // -> TryReserve again -> only then wait. Cheap; thread-safe.
  void WakeOnRelease() { wake_armed_.store(true); }
  // `wake` runs on the releasing thread (any thread, possibly under the
  // releaser's locks): it must not block nor reserve; e.g. it wakes an
  // event loop. Returns an id for RemoveWaker.
  int AddWaker(std::function<void()> wake) ABSL_LOCKS_EXCLUDED(mu_);
  void RemoveWaker(int id) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  friend class Reservation;
  bool TryTake(int64_t bytes, int64_t keep_free = 0) {
    if (bytes <= 0) return true;
    // seq_cst: pairs with WakeOnRelease (see Give).
    int64_t current = reserved_.load();
    do {
      if (bytes > limit_ - keep_free - current) return false;
    } while (!reserved_.compare_exchange_weak(current, current + bytes));
    NotePeak(current + bytes);
    return true;
  }
  void Give(int64_t bytes) {
    if (bytes <= 0) return;
    reserved_.fetch_sub(bytes);
    // NOTE: seq_cst on both sides (the waiter stores wake_armed_ then loads
    // reserved_; we change reserved_ then load wake_armed_): one of the two
    // sees the other, so a waiter never sleeps through the release that
    // would have let it in.
    if (wake_armed_.load() && wake_armed_.exchange(false)) Wake();
  }
  void NotePeak(int64_t now) {
    int64_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak &&
           !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
  }
  void Wake() ABSL_LOCKS_EXCLUDED(mu_);

  const int64_t limit_;
  std::atomic<int64_t> reserved_{0};
  std::atomic<int64_t> peak_{0};
  std::atomic<bool> wake_armed_{false};
  absl::Mutex mu_;
  std::vector<std::pair<int, std::function<void()>>> wakers_
      ABSL_GUARDED_BY(mu_);
  int next_waker_ ABSL_GUARDED_BY(mu_) = 1;
};

bool Reservation::TryGrow(int64_t more) {
  if (more <= 0) return true;
  if (budget_ != nullptr && !budget_->TryTake(more)) return false;
  bytes_ += more;
  return true;
}

bool Reservation::TryGrowTo(int64_t total, int64_t keep_free) {
  if (total <= bytes_) return true;
  if (budget_ != nullptr && !budget_->TryTake(total - bytes_, keep_free)) {
    return false;
  }
  bytes_ = total;
  return true;
}

void Reservation::ShrinkTo(int64_t total) {
  if (total < 0) total = 0;
  if (bytes_ <= total) return;
  if (budget_ != nullptr) budget_->Give(bytes_ - total);
  bytes_ = total;
}

void Reservation::Merge(Reservation&& other) {
  if (&other == this) return;
  if (budget_ == nullptr) budget_ = other.budget_;
  bytes_ += std::exchange(other.bytes_, 0);
  other.budget_ = nullptr;
}

// --- Choosing the budget
// ---------------------------------------------------------

// Used when neither the flag nor a cgroup sets the budget: 1 GiB. Outside a
// container nothing says how much memory fetchd may use; 1 GiB holds four
// RPCs at the full --max_response_bytes (256 MiB) at once and keeps fetchd
// a modest neighbour on a shared machine. In a container the cgroup limit
// decides instead.
inline constexpr int64_t kDefaultBudgetBytes = int64_t{1} << 30;
// The share of the cgroup's limit that reservations may take: the rest is
// for what the budget does not count (libcurl's, OpenSSL's and gRPC's own
// buffers, a message's serialized copy while gRPC writes it, allocator
// caches and fragmentation, thread stacks, code).
inline constexpr int kCgroupPercent = 60;

// The limit a cgroup memory file states, in bytes: cgroup v2's memory.max
// or v1's memory.limit_in_bytes, as read (a trailing newline is fine).
// None for "max", an empty or malformed file, 0, or an absurd value (v1
// writes 2^63 rounded down to a page for "no limit"; anything from 2^60
// bytes, an exbibyte, is taken as that).
std::optional<int64_t> ParseCgroupMemoryLimit(absl::string_view contents);

struct BudgetChoice {
  int64_t bytes = 0;
  // "flag", "60% of cgroup v2 memory.max=N", "60% of cgroup v1
  // memory.limit_in_bytes=N" or "default": for the start-up log.
  std::string source;
};

// The budget: `flag_bytes` when > 0; else kCgroupPercent% of the cgroup v2
// limit, else of the v1 limit (the files' contents; none = no such file);
// else `fallback`.
BudgetChoice ChooseBudget(int64_t flag_bytes,
                          const std::optional<std::string>& cgroup_v2_max,
                          const std::optional<std::string>& cgroup_v1_limit,
                          int64_t fallback = kDefaultBudgetBytes);

// ChooseBudget with the files of this process's cgroup:
// /sys/fs/cgroup/memory.max and /sys/fs/cgroup/memory/memory.limit_in_bytes.
BudgetChoice ChooseBudgetForThisProcess(int64_t flag_bytes);

}  // namespace fetchd::memory

#endif  // FETCHD_SERVER_MEMORY_MEMORY_H_
