// Cursor and items extraction of a walk (server/fetch/pages.cc,
// Paginator::OnPage with simdjson): what the next request is, decided from
// a JSON body an origin chose. No I/O.
//
// Input: line 1 the cursor pointer; line 2 the cursor's query parameter
// (empty: the cursor is the next URL); line 3 items_pointer (empty: none);
// one flags byte (bit 0: emit ITEMS); the rest the page's body.
#include <string>

#include "absl/strings/match.h"
#include "server/fetch/fetch.h"
#include "tests/fuzz/fuzz_input.h"

namespace fetchd::fetch {
namespace {

constexpr char kFirstUrl[] = "https://api.example.com/v1/items?limit=10";

void CheckPage(PageStrategy strategy, absl::string_view body) {
  if (!ValidatePageStrategy(strategy).ok()) {
    // The pointers are still read the way a valid strategy's would be.
    strategy.cursor_pointer = "/next";
    strategy.items_pointer.clear();
    strategy.split_items = false;
    strategy.param.clear();
    FUZZ_CHECK(ValidatePageStrategy(strategy).ok());
  }
  Paginator paginator(strategy, kFirstUrl);
  // Two pages with the same body: the second resolves its cursor against
  // the first's next URL (or finds the walk loops).
  for (int64_t index = 0; index < 2; ++index) {
    Page page;
    page.index = index;
    page.url = paginator.UrlOf(index).value_or(kFirstUrl);
    page.result.http_status = 200;
    page.result.body = std::string(body);
    const Paginator::Decision decision = paginator.OnPage(page);
    if (!strategy.split_items) FUZZ_CHECK(page.items.empty());
    if (!decision.deliver) {
      FUZZ_CHECK(decision.end.has_value());
      return;
    }
    if (!page.next.done()) {
      FUZZ_CHECK(ValidateUrl(page.next.next_url, FetchLimits{}).ok());
      FUZZ_CHECK(absl::StartsWithIgnoreCase(page.next.next_url, "http"));
    }
    if (decision.end.has_value()) return;
  }
}

}  // namespace
}  // namespace fetchd::fetch

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using fetchd::fetch::PageStrategy;
  fetchd::fuzz::FuzzInput in(data, size);
  PageStrategy strategy;
  strategy.kind = PageStrategy::Kind::kCursor;
  strategy.cursor_pointer = in.Line();
  strategy.param = in.Line();
  strategy.items_pointer = in.Line();
  strategy.split_items =
      (in.Byte() & 1) != 0 && !strategy.items_pointer.empty();
  fetchd::fetch::CheckPage(strategy, in.Rest());
  return 0;
}
