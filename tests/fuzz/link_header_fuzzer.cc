// The RFC 8288 Link header parser (NextLink, server/fetch/pages.cc) and
// what a walk does with its answer: resolve it against the page's URL,
// validate it, and decide (Paginator::OnPage, no I/O).
//
// Input: each line is one Link header value of the page.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/fetch/fetch.h"
#include "tests/fuzz/fuzz_input.h"

namespace fetchd::fetch {
namespace {

constexpr char kPageUrl[] = "https://api.example.com/v1/items?page=3";

void CheckLinks(const std::vector<std::string>& values) {
  const std::string next = NextLink(values);
  if (!next.empty()) {
    // The target is the text between one link's angle brackets.
    bool found = false;
    for (const std::string& v : values) {
      if (absl::StrContains(v, absl::StrCat("<", next, ">"))) found = true;
    }
    FUZZ_CHECK(found);
    (void)ResolveUrl(kPageUrl, next);
  }
  PageStrategy strategy;
  strategy.kind = PageStrategy::Kind::kLinkHeader;
  strategy.param.clear();
  FUZZ_CHECK(ValidatePageStrategy(strategy).ok());
  Paginator paginator(strategy, kPageUrl);
  Page page;
  page.index = 0;
  page.url = kPageUrl;
  page.result.http_status = 200;
  page.result.final_url = kPageUrl;
  for (const std::string& v : values)
    page.result.headers.emplace_back("link", v);
  const Paginator::Decision decision = paginator.OnPage(page);
  if (!decision.deliver) {
    // A next link that is no URL at all ends the walk on this page, with
    // an error that names it.
    FUZZ_CHECK(decision.end.has_value() && !decision.end->ok());
    return;
  }
  // A walk only ever continues to a URL every item would be allowed.
  if (!page.next.done()) {
    FUZZ_CHECK(ValidateUrl(page.next.next_url, FetchLimits{}).ok());
    FUZZ_CHECK(page.next.next_index == 1);
    FUZZ_CHECK(paginator.UrlOf(1).value_or("") == page.next.next_url);
  }
  if (decision.end.has_value() && !decision.end->ok()) {
    FUZZ_CHECK(page.next.done());
  }
}

}  // namespace
}  // namespace fetchd::fetch

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fetchd::fuzz::FuzzInput in(data, size);
  std::vector<std::string> values;
  while (!in.empty()) values.push_back(in.Line());
  fetchd::fetch::CheckLinks(values);
  return 0;
}
