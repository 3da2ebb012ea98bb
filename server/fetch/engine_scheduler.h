// Internal to server/fetch/: admission and scheduling (engine_scheduler.cc:
// AddBatch, the round robin over runnable_ batches, host slots and the
// batches blocked_on_host_, Report/EndBatch/EraseIfDone).
//
// Owns: Batch (a submitted batch or walk: its specs, per-item state, its
// FIFO of waiting items) and Item. The loop's maps of them (batches_,
// runnable_, host_running_, blocked_on_host_) are declared in
// engine_loop.h, guarded by io_thread_.
// Threads: a Batch is built on the submitting thread (Submit validates
// there) and handed over through the command queue; from then on the I/O
// thread only.
#ifndef FETCHD_SERVER_FETCH_ENGINE_SCHEDULER_H_
#define FETCHD_SERVER_FETCH_ENGINE_SCHEDULER_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "server/fetch/engine_transfer.h"
#include "server/fetch/engine_walk.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch::internal {

// One caller's share of the transfer slots (BatchOptions::identity): the
// loop's runnable_ is a ring of identities, each with its own ring of
// batches. Lives while it has a batch or is in runnable_.
struct Identity {
  std::string name;
  std::deque<uint64_t> runnable;  // its batches with waiting items and room
  int running = 0;                // its transfers on the multi handle
  int batches = 0;                // its batches and walks not yet ended
  bool queued = false;            // in the loop's runnable_
};

enum class ItemState { kWaiting, kRunning, kBackingOff, kDone };
struct Item {
  ItemState state = ItemState::kWaiting;
  int attempts = 0;
  std::unique_ptr<Transfer> transfer;
};

struct Batch {
  uint64_t id = 0;
  // Item i lives at [i - base]; only walks ever raise base.
  std::deque<FetchSpec> specs;
  std::deque<std::string> hosts;      // HostKey of each spec's URL (valid ones)
  std::vector<absl::Status> invalid;  // per item: OK or why it is invalid
  std::deque<Item> items;
  size_t base = 0;
  Item* item(size_t i) { return i < base ? nullptr : &items[i - base]; }
  const FetchSpec& spec(size_t i) const { return specs[i - base]; }
  const std::string& host(size_t i) const { return hosts[i - base]; }
  std::unique_ptr<WalkState> walk;  // set for walks
  Identity* identity = nullptr;     // set by AddBatch
  BatchOptions options;
  ItemCallback on_item;
  DoneCallback on_done;
  std::deque<size_t> waiting;  // FIFO of items ready for a transfer
  int running = 0;
  size_t remaining = 0;       // items not yet reported
  bool runnable = false;      // queued in its identity's runnable
  bool host_blocked = false;  // queued in blocked_on_host_
  // Set (by Submit, on the caller's thread) when every valid item goes to
  // one host, as in most batches: a full host then blocks the whole
  // batch, with no scan for another host's item.
  std::string one_host;
};

// Waiting items looked at per turn for one whose host has room.
inline constexpr size_t kHostScan = 8;
inline size_t HostScan(const Batch& batch) {
  return batch.one_host.empty() ? std::min(kHostScan, batch.waiting.size())
                                : std::min<size_t>(1, batch.waiting.size());
}

}  // namespace fetchd::fetch::internal

#endif  // FETCHD_SERVER_FETCH_ENGINE_SCHEDULER_H_
