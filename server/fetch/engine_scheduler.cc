// The engine's admission and scheduling (see engine_scheduler.h): batches
// in, items onto transfer slots within --max_inflight_fetches, a batch's
// max_concurrency and --max_per_host, round robin over batches; results
// reported, batches ended. I/O thread only.
#include <curl/curl.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/fetch/address_guard.h"
#include "server/fetch/engine_loop.h"

namespace fetchd::fetch {
namespace internal {
namespace {

struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
struct CurlString {
  char* text = nullptr;
  ~CurlString() { curl_free(text); }
};

bool IsLowerAlpha(char c) { return c >= 'a' && c <= 'z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// A DNS name NormalizeHost would return as it is: lower case letters,
// digits, '-' and '.', no empty label, no trailing dot, and a last label
// that starts with a letter (so no IPv4 number in another spelling).
bool IsCanonicalName(absl::string_view host) {
  if (host.empty() || host.front() == '.' || host.back() == '.') return false;
  size_t last_label = 0;
  for (size_t i = 0; i < host.size(); ++i) {
    const char c = host[i];
    if (c == '.') {
      if (host[i - 1] == '.') return false;
      last_label = i + 1;
    } else if (!IsLowerAlpha(c) && !IsDigit(c) && c != '-') {
      return false;
    }
  }
  return IsLowerAlpha(host[last_label]);
}

// "a.b.c.d" in decimal, each 0-255 without leading zeros.
bool IsCanonicalIpv4(absl::string_view host) {
  int labels = 0;
  size_t i = 0;
  while (i <= host.size()) {
    size_t j = i;
    int value = 0;
    while (j < host.size() && IsDigit(host[j]) && j - i < 3) {
      value = value * 10 + (host[j] - '0');
      ++j;
    }
    const size_t len = j - i;
    if (len == 0 || value > 255 || (len > 1 && host[i] == '0')) return false;
    ++labels;
    if (j == host.size()) break;
    if (host[j] != '.') return false;
    i = j + 1;
  }
  return labels == 4;
}

// The slow path: curl parses, NormalizeHost normalizes.
std::string ParsedHostKey(absl::string_view url) {
  std::unique_ptr<CURLU, UrlDeleter> parsed(curl_url());
  const std::string text(url);
  CurlString host, port;
  if (parsed == nullptr ||
      curl_url_set(parsed.get(), CURLUPART_URL, text.c_str(), 0) != CURLUE_OK ||
      curl_url_get(parsed.get(), CURLUPART_HOST, &host.text, 0) != CURLUE_OK ||
      curl_url_get(parsed.get(), CURLUPART_PORT, &port.text,
                   CURLU_DEFAULT_PORT) != CURLUE_OK) {
    return std::string(HostOf(url));
  }
  absl::StatusOr<std::string> normal = NormalizeHost(host.text);
  if (!normal.ok()) return std::string(HostOf(url));
  return absl::StrCat(*normal, ":", port.text);
}

}  // namespace

std::string HostKey(absl::string_view url) {
  absl::string_view port = "80";
  if (absl::StartsWithIgnoreCase(url, "https://")) {
    port = "443";
  } else if (!absl::StartsWithIgnoreCase(url, "http://")) {
    return ParsedHostKey(url);
  }
  absl::string_view host = HostOf(url);
  if (const size_t colon = host.rfind(':'); colon != absl::string_view::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
    if (port.empty() || port.size() > 5 || port.front() == '0' ||
        !std::all_of(port.begin(), port.end(), IsDigit)) {
      return ParsedHostKey(url);
    }
  }
  if (!IsCanonicalName(host) && !IsCanonicalIpv4(host)) {
    return ParsedHostKey(url);  // also "[v6]", user info, upper case
  }
  return absl::StrCat(host, ":", port);
}

}  // namespace internal

internal::Identity* Engine::Loop::IdentityOf(const std::string& name) {
  std::unique_ptr<internal::Identity>& who = identities_[name];
  if (who == nullptr) {
    who = std::make_unique<internal::Identity>();
    who->name = name;
  }
  return who.get();
}

void Engine::Loop::BatchGone(internal::Identity* who) {
  // NOTE: find, then erase: the key lives in the node being erased.
  if (--who->batches == 0 && !who->queued) {
    identities_.erase(identities_.find(who->name));
  }
}

void Engine::Loop::AddBatch(std::unique_ptr<Batch> owned) {
  Batch& batch = *owned;
  const uint64_t id = batch.id;
  batch.identity = IdentityOf(batch.options.identity);
  ++batch.identity->batches;
  batches_[id] = std::move(owned);
  if (batch.walk != nullptr) {
    if (batch.options.deadline != absl::InfiniteFuture()) {
      timers_.push(Timer{batch.options.deadline, id, 0, TimerKind::kDeadline});
    }
    if (batch.walk->paginator.UrlOf(batch.walk->start).has_value()) {
      FillWalk(batch);
    } else {  // resumed from a finished walk: nothing left
      EndWalk(id, absl::OkStatus());
    }
    return;
  }
  batch.items.resize(batch.specs.size());
  batch.remaining = batch.specs.size();
  // Queue the valid items first, so that ending the batch early (an
  // invalid item with fail_fast) finds every item in a known state.
  for (size_t i = 0; i < batch.specs.size(); ++i) {
    if (batch.invalid[i].ok()) {
      batch.waiting.push_back(i);
      ++waiting_;
    }
  }
  for (size_t i = 0; i < batch.specs.size(); ++i) {
    if (batch.invalid[i].ok()) continue;
    FetchResult result;
    result.status = std::move(batch.invalid[i]);
    result.final_url = batch.specs[i].url;
    Report(batch, i, std::move(result));
    if (!batches_.contains(id)) return;  // fail_fast ended it
  }
  if (batch.options.deadline != absl::InfiniteFuture()) {
    timers_.push(Timer{batch.options.deadline, id, 0, TimerKind::kDeadline});
  }
  MakeRunnable(batch);
  EraseIfDone(id);
}

void Engine::Loop::ServeFreedHosts() {
  std::vector<std::string> hosts;
  hosts.swap(freed_hosts_);
  for (const std::string& host : hosts) {
    auto blocked = blocked_on_host_.find(host);
    if (blocked == blocked_on_host_.end()) continue;
    std::deque<uint64_t>& ids = blocked->second;
    // Oldest first, until the host is full again: a batch that no longer
    // has an item for it passes the slot on instead of losing it.
    while (!ids.empty() && running_ < options_.max_inflight) {
      if (HostFull(host)) break;
      const uint64_t id = ids.front();
      ids.pop_front();
      auto it = batches_.find(id);
      if (it == batches_.end()) continue;  // ended meanwhile
      Batch& batch = *it->second;
      batch.host_blocked = false;
      const size_t scan = HostScan(batch);
      size_t pos = 0;
      while (pos < scan && batch.host(batch.waiting[pos]) != host) {
        ++pos;
      }
      // No room in the memory budget: the batch goes back to the round
      // robin, where StartTransfers waits for room.
      memory::Reservation memory;
      if (pos < scan && batch.running < batch.options.max_concurrency &&
          HasRoom(*batch.identity) &&
          AdmitMemory(batch.spec(batch.waiting[pos]), memory)) {
        const size_t index = batch.waiting[pos];
        batch.waiting.erase(batch.waiting.begin() +
                            static_cast<ptrdiff_t>(pos));
        --waiting_;
        StartAttempt(batch, index, std::move(memory));
      }
      auto again = batches_.find(id);
      if (again == batches_.end()) continue;  // a failed start ended it
      Batch& still = *again->second;
      if (!still.one_host.empty() && !still.waiting.empty() &&
          still.running < still.options.max_concurrency && HostFull(host)) {
        // Straight back in line for this host, without a turn in
        // runnable_ that would only find the host full.
        still.host_blocked = true;
        ids.push_back(id);
        break;
      }
      MakeRunnable(still);
    }
    // NOTE: look again: StartAttempt may have changed the map.
    blocked = blocked_on_host_.find(host);
    if (blocked != blocked_on_host_.end() && blocked->second.empty()) {
      blocked_on_host_.erase(blocked);
    }
  }
}

void Engine::Loop::StartTransfers() {
  // Bodies paused for room in the memory budget go before new transfers.
  if (options_.memory_budget != nullptr) ResumePaused();
  ServeFreedHosts();
  // Round robin over identities, then over each identity's batches, one
  // item at a time: a caller with many or big batches cannot starve the
  // others, nor a big batch its caller's other batches, and each batch
  // keeps its own FIFO order (but for items whose host is full, which the
  // next few may pass).
  while (running_ < options_.max_inflight && !runnable_.empty()) {
    // NOTE: the identity stays queued for its turn, so that a batch ending
    // during it (a failed start) cannot free it under us.
    internal::Identity& who = *runnable_.front();
    // At the memory budget the identity keeps its turn (and its place):
    // nothing starts until a release wakes the loop.
    if (HasRoom(who) && !who.runnable.empty() && !StartNextOf(who)) break;
    runnable_.pop_front();
    who.queued = false;
    if (!who.runnable.empty() && HasRoom(who)) {
      who.queued = true;
      runnable_.push_back(&who);
    } else if (who.batches == 0) {
      identities_.erase(identities_.find(who.name));
    }
  }
}

bool Engine::Loop::StartNextOf(internal::Identity& who) {
  const uint64_t id = who.runnable.front();
  who.runnable.pop_front();
  auto it = batches_.find(id);
  if (it == batches_.end()) return true;
  Batch& batch = *it->second;
  batch.runnable = false;
  if (batch.waiting.empty() || batch.running >= batch.options.max_concurrency) {
    return true;
  }
  size_t pos = 0;
  const size_t scan = HostScan(batch);
  while (pos < scan && HostFull(batch.host(batch.waiting[pos]))) {
    ++pos;
  }
  if (pos == scan) {  // wait for a transfer to the first item's host
    if (!batch.host_blocked) {
      batch.host_blocked = true;
      blocked_on_host_[batch.host(batch.waiting.front())].push_back(id);
    }
    return true;
  }
  const size_t index = batch.waiting[pos];
  memory::Reservation memory;
  if (!AdmitMemory(batch.spec(index), memory)) {
    if (ShedForMemory(batch, pos)) return true;  // waited its timeout: failed
    // At the memory budget: first in its identity's line again, woken by a
    // release.
    batch.runnable = true;
    who.runnable.push_front(id);
    return false;
  }
  batch.waiting.erase(batch.waiting.begin() + static_cast<ptrdiff_t>(pos));
  --waiting_;
  StartAttempt(batch, index, std::move(memory));
  // A failed start reports at once, which may end the batch.
  if (auto again = batches_.find(id); again != batches_.end()) {
    MakeRunnable(*again->second);
  }
  return true;
}

void Engine::Loop::Report(Batch& batch, size_t index, FetchResult result) {
  Item& item = *batch.item(index);
  item.state = ItemState::kDone;
  --batch.remaining;
  CountItem(result.status.code());
  if (batch.walk != nullptr)
    return OnPageResult(batch, index, std::move(result));
  const bool failed = !result.status.ok();
  absl::Status cause =
      failed && batch.options.fail_fast
          ? absl::CancelledError(absl::StrCat("cancelled: item ", index, " (",
                                              result.final_url,
                                              ") failed and fail_fast is set"))
          : absl::OkStatus();
  batch.on_item(index, std::move(result));
  if (!cause.ok() && batch.remaining > 0) EndBatch(batch.id, cause);
}

void Engine::Loop::EndBatch(uint64_t id, const absl::Status& status) {
  auto it = batches_.find(id);
  if (it == batches_.end()) return;  // already over
  Batch& batch = *it->second;
  if (batch.walk != nullptr) return EndWalk(id, status);
  for (size_t i = 0; i < batch.items.size() && batch.remaining > 0; ++i) {
    Item& item = batch.items[i];
    switch (item.state) {
      case ItemState::kDone:
        continue;
      case ItemState::kRunning:
        curl_multi_remove_handle(multi_.get(), item.transfer->easy.get());
        ReleaseEasy(std::move(item.transfer->easy));
        Ended(*item.transfer);
        item.transfer.reset();
        --batch.running;
        break;
      case ItemState::kBackingOff:
        --backing_off_;  // its timer finds the item done and does nothing
        break;
      case ItemState::kWaiting:
        --waiting_;
        break;
    }
    FetchResult result;
    result.status = status;
    result.attempts = item.attempts;
    result.final_url = batch.spec(i).url;
    item.state = ItemState::kDone;
    --batch.remaining;
    CountItem(status.code());
    batch.on_item(i, std::move(result));
  }
  batch.waiting.clear();
  EraseIfDone(id);
}

void Engine::Loop::EraseIfDone(uint64_t id) {
  auto it = batches_.find(id);
  if (it == batches_.end() || it->second->remaining > 0 ||
      it->second->walk != nullptr) {
    return;  // a walk ends only through EndWalk
  }
  std::unique_ptr<Batch> batch = std::move(it->second);
  batches_.erase(it);
  BatchGone(batch->identity);
  PublishStats();  // stats() agrees with what on_done tells
  if (batch->on_done) batch->on_done();
}

}  // namespace fetchd::fetch
