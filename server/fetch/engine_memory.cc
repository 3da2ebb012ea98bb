// The engine's part of the memory budget (Options::memory_budget):
//   admission  a transfer starts only when its first bytes fit
//              (AdmitMemory); until then it waits, as for a slot, and the
//              budget wakes the loop on the next release;
//   growth     a body reserves as it arrives, twice its bytes
//              (kBodyMemoryFactor: gRPC's serialized copy when it is sent),
//              and never into the last eighth of the budget (the headroom
//              kept for new transfers' first bytes): all of it at its first
//              bytes when Content-Length says how much, else doubling
//              (MakeRoom), so the string never allocates past what is
//              reserved. A body whose first bytes find no room pauses
//              (holding only its kept headers) and resumes in order once
//              there is (ResumePaused); one that finds no room later, or
//              that is larger than the whole budget, fails its item with
//              RESOURCE_EXHAUSTED naming the budget;
//   bounds     admission that stays blocked for an item's timeout sheds
//              the item RESOURCE_EXHAUSTED (the budget is held elsewhere,
//              e.g. by a unary response waiting for its own last items).
// I/O thread only, like the rest of the loop; the budget's counters are
// atomics, touched once per capacity doubling, not per chunk.
#include <curl/curl.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/fetch/engine_loop.h"

namespace fetchd::fetch {
namespace {

// What a transfer reserves to start: its headers and the first bytes of
// most bodies (or all of a smaller max_body_bytes).
constexpr int64_t kFirstBytes = 64 << 10;

// The share of the budget that bodies may not grow into: kept for new
// transfers' first bytes, so a few huge bodies waiting for room do not stop
// every small fetch of every other caller.
int64_t Headroom(const memory::Budget* budget) {
  return budget == nullptr ? 0 : budget->limit() / 8;
}

// A body's bytes against the budget (kBodyMemoryFactor).
int64_t BodyCost(int64_t bytes) { return kBodyMemoryFactor * bytes; }

absl::Status Spent(const memory::Budget* budget, int64_t needed,
                   absl::string_view what) {
  const int64_t limit = budget != nullptr ? budget->limit() : 0;
  const int64_t free = budget != nullptr ? budget->available() : 0;
  return absl::ResourceExhaustedError(absl::StrCat(
      "memory budget of ", limit,
      " bytes is spent (--memory_budget_bytes): ", what, " needed ", needed,
      " bytes, ", std::max<int64_t>(0, free), " were free"));
}

}  // namespace

bool Engine::Loop::AdmitMemory(const FetchSpec& spec,
                               memory::Reservation& out) {
  memory::Budget* budget = options_.memory_budget;
  if (budget == nullptr) return true;
  // Paused bodies resume first if they can; if not, new transfers may
  // still start in the headroom that bodies cannot grow into.
  ResumePaused();
  const int64_t first = std::min<int64_t>(spec.max_body_bytes, kFirstBytes);
  std::optional<memory::Reservation> r = budget->TryReserve(first);
  if (!r.has_value()) {
    // Armed before the second look: a release in between wakes the loop.
    budget->WakeOnRelease();
    r = budget->TryReserve(first);
    if (!r.has_value()) return false;
  }
  out = *std::move(r);
  memory_blocked_since_ = absl::InfiniteFuture();
  return true;
}

bool Engine::Loop::ShedForMemory(Batch& batch, size_t pos) {
  const absl::Time now = absl::Now();
  if (memory_blocked_since_ == absl::InfiniteFuture()) {
    memory_blocked_since_ = now;
    return false;
  }
  const size_t index = batch.waiting[pos];
  const FetchSpec& spec = batch.spec(index);
  const absl::Duration waited = now - memory_blocked_since_;
  if (waited < spec.timeout) return false;
  batch.waiting.erase(batch.waiting.begin() + static_cast<ptrdiff_t>(pos));
  --waiting_;
  FetchResult result;
  result.status = absl::ResourceExhaustedError(absl::StrCat(
      "memory budget of ", options_.memory_budget->limit(),
      " bytes is spent (--memory_budget_bytes): no transfer could start for ",
      absl::FormatDuration(waited), ", the item's timeout"));
  result.final_url = spec.url;
  result.attempts = batch.item(index)->attempts;
  const uint64_t id = batch.id;
  Report(batch, index, std::move(result));
  if (auto it = batches_.find(id); it != batches_.end()) {
    MakeRunnable(*it->second);
    EraseIfDone(id);
  }
  return true;
}

bool Engine::Loop::ResumePaused() {
  memory::Budget* budget = options_.memory_budget;
  while (!memory_paused_.empty()) {
    const auto [id, index] = memory_paused_.front();
    Transfer* t = nullptr;
    if (auto it = batches_.find(id); it != batches_.end()) {
      Item* item = it->second->item(index);
      if (item != nullptr && item->state == ItemState::kRunning) {
        t = item->transfer.get();
      }
    }
    if (t == nullptr || t->paused_need == 0) {  // ended meanwhile
      memory_paused_.pop_front();
      continue;
    }
    if (!t->memory.TryGrowTo(t->paused_need, Headroom(budget))) {
      budget->WakeOnRelease();
      if (!t->memory.TryGrowTo(t->paused_need, Headroom(budget))) return false;
    }
    memory_paused_.pop_front();
    t->body.reserve(static_cast<size_t>(
        (t->paused_need - t->kept_header_bytes) / kBodyMemoryFactor));
    t->paused_need = 0;
    // NOTE: may deliver the held bytes to OnBody at once (which may pause
    // it again, queueing it anew).
    curl_easy_pause(t->easy.get(), CURLPAUSE_CONT);
    // NOTE: curl 7.88's next poll does not see an unpaused transfer (it
    // slept the full poll timeout in tests): the next perform must run it.
    curl_multi_wakeup(multi_.get());
  }
  return true;
}

bool Engine::Loop::MakeRoom(Transfer& t, size_t len) {
  const int64_t need = static_cast<int64_t>(t.body.size() + len);
  const int64_t max_body = t.spec->max_body_bytes;
  int64_t capacity = need;
  bool whole = false;  // the whole body's length is known: all or nothing
  if (t.body.empty()) {
    // The whole body at once when its length is known (and allowed).
    curl_off_t length = -1;
    curl_easy_getinfo(t.easy.get(), CURLINFO_CONTENT_LENGTH_DOWNLOAD_T,
                      &length);
    if (length > need) {
      capacity = std::min<int64_t>(length, max_body);
      whole = true;
    }
  } else {
    capacity = std::min<int64_t>(
        max_body,
        std::max<int64_t>(need, 2 * static_cast<int64_t>(t.body.capacity())));
  }
  capacity = std::max(capacity, need);
  const int64_t headers = t.kept_header_bytes;
  memory::Budget* budget = t.memory.budget();
  // Growth leaves the headroom free (what is already reserved, such as the
  // first bytes taken at admission, is used as it is).
  const int64_t keep_free = Headroom(budget);
  if (!t.memory.TryGrowTo(headers + BodyCost(capacity), keep_free) && !whole &&
      capacity > need &&
      t.memory.TryGrowTo(headers + BodyCost(need), keep_free)) {
    capacity = need;  // no room to run ahead: just what arrived
  }
  if (t.memory.bytes() >= headers + BodyCost(capacity)) {
    t.body.reserve(static_cast<size_t>(capacity));
    return true;
  }
  const bool fits_alone =
      budget != nullptr &&
      headers + BodyCost(capacity) <= budget->limit() - Headroom(budget);
  if (t.body.empty() && fits_alone && t.paused != nullptr) {
    // Nothing of the body held yet: wait for room, holding only the kept
    // headers, so that paused bodies never hold up each other.
    t.memory.ShrinkTo(headers +
                      BodyCost(static_cast<int64_t>(t.body.capacity())));
    t.paused_need = headers + BodyCost(capacity);
    t.paused->emplace_back(t.batch_id, t.index);
    return false;
  }
  t.memory_short = headers + BodyCost(capacity);
  return false;
}

bool Engine::Loop::HoldHeader(Transfer& t, int64_t bytes) {
  if (t.memory.TryGrowTo(t.kept_header_bytes + bytes +
                         BodyCost(static_cast<int64_t>(t.body.capacity())))) {
    t.kept_header_bytes += bytes;
    return true;
  }
  t.memory_short = t.kept_header_bytes + bytes;
  return false;
}

absl::Status Engine::Loop::MemoryStatus(const Transfer& t, CURLcode rc) const {
  if (t.memory_short > 0) {
    return Spent(options_.memory_budget, t.memory_short,
                 "the response's body and kept headers");
  }
  if (t.paused_need > 0 && rc == CURLE_OPERATION_TIMEDOUT) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "memory budget of ",
        options_.memory_budget != nullptr ? options_.memory_budget->limit() : 0,
        " bytes is spent (--memory_budget_bytes): the response body of ",
        t.paused_need, " bytes waited for room until the item's timeout"));
  }
  return absl::OkStatus();
}

void Engine::Loop::KeepMemory(Transfer& t, FetchResult& result) {
  result.memory = std::move(t.memory);
  result.memory.ShrinkTo(t.kept_header_bytes + BodyCost(static_cast<int64_t>(
                                                   result.body.capacity())));
}

absl::Status Engine::Loop::HoldPageItems(Page& page) {
  if (page.items.empty()) return absl::OkStatus();
  int64_t bytes = 0;
  for (const std::string& item : page.items) {
    bytes += static_cast<int64_t>(item.capacity());
  }
  if (page.result.memory.budget() == nullptr && options_.memory_budget) {
    page.result.memory = options_.memory_budget->Empty();
  }
  if (page.result.memory.TryGrow(bytes)) return absl::OkStatus();
  const size_t count = page.items.size();
  page.items.clear();
  page.items.shrink_to_fit();
  return Spent(options_.memory_budget, bytes,
               absl::StrCat("the ", count, " items of page ", page.index));
}

}  // namespace fetchd::fetch
