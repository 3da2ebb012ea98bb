// The engine's walks (see engine_walk.h): pages started within the
// prefetch window, results put back in order, handed to the paginator and
// on to the reader. I/O thread only, but SubmitWalk (the caller's thread).
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/fetch/engine_loop.h"

namespace fetchd::fetch {

using internal::HostKey;

uint64_t Engine::Loop::SubmitWalk(FetchSpec first, const PageStrategy& strategy,
                                  WalkPosition from, WalkOptions options,
                                  std::shared_ptr<WalkWindow> window,
                                  PageCallback on_page,
                                  WalkDoneCallback on_done) {
  // The caller validated it; only the host's IDNA form is ours to make
  // (next pages' URLs are checked at connect time like any other).
  if (absl::StatusOr<std::string> ascii = AsciiUrl(first.url); ascii.ok()) {
    first.url = *std::move(ascii);
  }
  // The link_header strategy reads Link whether or not the caller asked
  // for it; pages carry it only if asked.
  const bool borrow_link =
      strategy.kind == PageStrategy::Kind::kLinkHeader &&
      std::find(first.keep_headers.begin(), first.keep_headers.end(), "link") ==
          first.keep_headers.end();
  if (borrow_link) first.keep_headers.push_back("link");
  const bool credentials = CarriesCredentials(first);
  std::string origin;
  if (credentials) origin = OriginOf(first.url).value_or(first.url);
  auto batch = std::make_unique<Batch>();
  batch->walk =
      std::make_unique<WalkState>(strategy, std::move(first), options_.limits);
  WalkState& walk = *batch->walk;
  walk.paginator.Restart(from);
  walk.start = walk.started = walk.processed = from.next_index;
  walk.window = std::move(window);
  walk.strip_link = borrow_link;
  walk.credentials = credentials;
  walk.origin = std::move(origin);
  walk.left_origin = from.left_origin;  // carried by the resume token
  walk.on_page = std::move(on_page);
  walk.on_done = std::move(on_done);
  batch->options.deadline = options.deadline;
  batch->options.identity = std::move(options.identity);
  batch->options.trace = options.trace;
  // The window is also the walk's concurrency: pages in flight <= prefetch.
  batch->options.max_concurrency = std::max(1, options.prefetch);
  return Enqueue(std::move(batch));
}

void Engine::Loop::FillWalk(Batch& batch) {
  WalkState& walk = *batch.walk;
  for (;;) {
    // First whether the next page is known at all (a cursor is not, until
    // the page before it is in): only a walk held back by the window asks
    // its reader for a wakeup.
    std::optional<std::string> url = walk.paginator.UrlOf(walk.started);
    if (!url.has_value()) break;
    const int64_t consumed = walk.window->consumed.load();
    if (walk.started - walk.start - consumed >= batch.options.max_concurrency) {
      // Full: ask the reader to wake us, then look again in case it
      // consumed in between (it reads `blocked` after counting).
      walk.window->blocked.store(true);
      if (walk.window->consumed.load() == consumed) break;
      walk.window->blocked.store(false);
      continue;
    }
    FetchSpec spec = walk.first;
    spec.url = *std::move(url);
    // A next page on an international host: its IDNA ASCII form, as for
    // the first (the paginator checked that it has one).
    if (absl::StatusOr<std::string> ascii = AsciiUrl(spec.url); ascii.ok()) {
      spec.url = *std::move(ascii);
    }
    if (walk.credentials) {
      // A next link, cursor URL or resume token on another origin.
      absl::StatusOr<std::string> origin = OriginOf(spec.url);
      if (!origin.ok() || *origin != walk.origin) {
        if (!walk.first.allow_cross_origin) {
          return EndWalk(
              batch.id,
              absl::FailedPreconditionError(absl::StrCat(
                  "page ", walk.started, " (", spec.url, ") is on origin ",
                  origin.value_or(spec.url), ", not the first page's origin ",
                  walk.origin, ": the request's credential headers (",
                  CredentialNames(walk.first),
                  ") stay on their origin; set allow_cross_origin to follow "
                  "it without them")));
        }
        walk.left_origin = true;
      }
      // Once the walk has left its origin, every later page goes without
      // them, back on the first origin too.
      if (walk.left_origin) {
        spec.headers.erase(
            std::remove_if(spec.headers.begin(), spec.headers.end(),
                           [this](const auto& h) {
                             return IsCredentialHeader(
                                 h.first, options_.credential_headers);
                           }),
            spec.headers.end());
      }
    }
    batch.hosts.push_back(HostKey(spec.url));
    batch.specs.push_back(std::move(spec));
    batch.items.emplace_back();
    batch.waiting.push_back(static_cast<size_t>(walk.started - walk.start));
    ++batch.remaining;
    ++waiting_;
    ++walk.started;
  }
  MakeRunnable(batch);
}

void Engine::Loop::OnPageResult(Batch& batch, size_t index,
                                FetchResult result) {
  WalkState& walk = *batch.walk;
  walk.arrived.emplace(index, std::move(result));
  const uint64_t id = batch.id;
  for (;;) {
    const auto next = static_cast<size_t>(walk.processed - walk.start);
    auto it = walk.arrived.find(next);
    if (it == walk.arrived.end()) break;
    Page page;
    page.index = walk.processed;
    page.url = batch.spec(next).url;
    page.result = std::move(it->second);
    walk.arrived.erase(it);
    ++walk.processed;
    // The page's item is done and handed on: shed it (flat memory).
    while (!batch.items.empty() && batch.base < next + 1 &&
           batch.items.front().state == ItemState::kDone) {
      batch.items.pop_front();
      batch.specs.pop_front();
      batch.hosts.pop_front();
      ++batch.base;
    }
    // A page redirected to another origin: its links were chosen there.
    if (walk.credentials && !walk.left_origin) {
      absl::StatusOr<std::string> origin = OriginOf(
          page.result.final_url.empty() ? page.url : page.result.final_url);
      if (!origin.ok() || *origin != walk.origin) walk.left_origin = true;
    }
    Paginator::Decision decision = walk.paginator.OnPage(page);
    if (absl::Status held = HoldPageItems(page); !held.ok()) {
      decision.deliver = false;  // the memory budget has no room for it
      decision.end = std::move(held);
    }
    page.next.left_origin = walk.left_origin;
    if (decision.deliver) {
      if (walk.strip_link) {
        auto& headers = page.result.headers;
        headers.erase(
            std::remove_if(headers.begin(), headers.end(),
                           [](const auto& h) { return h.first == "link"; }),
            headers.end());
      }
      if (walk.outbox.empty()) outboxes_.push_back(id);
      walk.outbox.push_back(std::move(page));
    }
    if (decision.end.has_value()) return EndWalk(id, *std::move(decision.end));
  }
  FillWalk(batch);
}

void Engine::Loop::EndWalk(uint64_t id, absl::Status status) {
  auto it = batches_.find(id);
  if (it == batches_.end()) return;
  std::unique_ptr<Batch> batch = std::move(it->second);
  batches_.erase(it);
  // Pages still in flight or waiting are dropped without a result.
  for (Item& item : batch->items) {
    switch (item.state) {
      case ItemState::kRunning:
        curl_multi_remove_handle(multi_.get(), item.transfer->easy.get());
        ReleaseEasy(std::move(item.transfer->easy));
        Ended(*item.transfer);
        item.transfer.reset();
        break;
      case ItemState::kBackingOff:
        --backing_off_;
        break;
      case ItemState::kWaiting:
        --waiting_;
        break;
      case ItemState::kDone:
        break;
    }
  }
  BatchGone(batch->identity);
  PublishStats();
  WalkState& walk = *batch->walk;
  for (Page& page : walk.outbox) walk.on_page(std::move(page));
  walk.on_done(std::move(status));
}

void Engine::Loop::DeliverPages() {
  std::vector<uint64_t> ids;
  ids.swap(outboxes_);
  for (uint64_t id : ids) {
    auto it = batches_.find(id);
    if (it == batches_.end()) continue;  // ended: EndWalk delivered them
    WalkState& walk = *it->second->walk;
    std::vector<Page> pages;
    pages.swap(walk.outbox);
    for (Page& page : pages) walk.on_page(std::move(page));
  }
}

}  // namespace fetchd::fetch
