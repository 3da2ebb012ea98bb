// Internal to server/fetch/: walks (engine_walk.cc: SubmitWalk, FillWalk,
// OnPageResult, EndWalk, DeliverPages). A walk is a Batch (see
// engine_scheduler.h) that gains one item per page within its prefetch
// window, hands pages on in order and sheds their items; the Paginator
// (pages.cc) decides each next page, with no I/O.
//
// Owns: WalkState, a walk's own state beside its Batch.
// Threads: the I/O thread only, but for `window`, whose counters the
// reader moves from any thread (WalkHandle::Consumed).
#ifndef FETCHD_SERVER_FETCH_ENGINE_WALK_H_
#define FETCHD_SERVER_FETCH_ENGINE_WALK_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch::internal {

struct WalkState {
  WalkState(const PageStrategy& strategy, FetchSpec first_page,
            const FetchLimits& limits)
      : paginator(strategy, first_page.url, limits),
        first(std::move(first_page)) {}
  Paginator paginator;
  FetchSpec first;        // every page is fetched with its settings
  int64_t start = 0;      // the first page's index (item 0)
  int64_t started = 0;    // pages started (items so far)
  int64_t processed = 0;  // pages handed to the paginator, in order
  std::shared_ptr<WalkWindow> window;  // the reader's side of the window
  bool strip_link = false;             // Link was kept for the paginator only
  // With credential headers in `first`, pages stay on its origin (or, with
  // allow_cross_origin, go elsewhere without those headers).
  bool credentials = false;
  std::string origin;  // of first.url, when `credentials`
  // A page was on another origin: later pages go without the credential
  // headers (their links were chosen by that origin). Sticky.
  bool left_origin = false;
  absl::flat_hash_map<size_t, FetchResult> arrived;  // ahead of order
  PageCallback on_page;
  WalkDoneCallback on_done;
  std::vector<Page> outbox;  // decided, handed on after the next request
};

}  // namespace fetchd::fetch::internal

#endif  // FETCHD_SERVER_FETCH_ENGINE_WALK_H_
