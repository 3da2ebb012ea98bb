// Pagination: URL helpers, the Link header parser and the Paginator's
// page-by-page decisions. Pure logic; the engine drives it on its I/O thread.
#include <curl/curl.h>
#include <simdjson.h>

#include <algorithm>
#include <memory>

#include "absl/hash/hash.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch {
namespace {

struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
using UrlHandle = std::unique_ptr<CURLU, UrlDeleter>;

// A curl-allocated string, freed on scope exit.
struct CurlString {
  char* text = nullptr;
  ~CurlString() { curl_free(text); }
};

absl::StatusOr<UrlHandle> ParseUrl(const std::string& url) {
  UrlHandle handle(curl_url());
  if (handle == nullptr) return absl::InternalError("curl_url failed");
  const CURLUcode rc = curl_url_set(handle.get(), CURLUPART_URL, url.c_str(),
                                    CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", url, "\" is not a URL: ", curl_url_strerror(rc)));
  }
  return handle;
}

absl::StatusOr<std::string> UrlText(CURLU* handle) {
  CurlString out;
  const CURLUcode rc = curl_url_get(handle, CURLUPART_URL, &out.text, 0);
  if (rc != CURLUE_OK) {
    return absl::InvalidArgumentError(curl_url_strerror(rc));
  }
  return std::string(out.text);
}

std::string PercentEncode(absl::string_view value) {
  CurlString out{
      curl_easy_escape(nullptr, value.data(), static_cast<int>(value.size()))};
  return out.text != nullptr ? out.text : "";
}

// %XX sequences decoded (so "page%5Bn%5D" matches "page[n]").
std::string PercentDecode(absl::string_view text) {
  int length = 0;
  CurlString out{curl_easy_unescape(nullptr, text.data(),
                                    static_cast<int>(text.size()), &length)};
  return out.text != nullptr ? std::string(out.text, length)
                             : std::string(text);
}

bool IsHttpUrl(absl::string_view url) {
  return absl::StartsWithIgnoreCase(url, "http://") ||
         absl::StartsWithIgnoreCase(url, "https://");
}

absl::Status PageError(const Page& page, absl::StatusCode code,
                       absl::string_view what) {
  return absl::Status(
      code, absl::StrCat("page ", page.index, " (", page.url, "): ", what));
}

// One DOM parser per thread (the engine's I/O thread): its buffers are
// reused page after page. simdjson: a page's JSON costs ~1 µs per KB on the
// path that decides the next request.
// Pages come from origins: nesting deeper than this is refused (#16), as
// the JSON processors do (process::kMaxJsonDepth). simdjson parses
// iteratively and its serializer recurses once per 16 levels.
constexpr size_t kMaxJsonDepth = 512;

simdjson::dom::parser NewParser() {
  simdjson::dom::parser parser;
  // Sets the depth limit for later parses; should this fail (no memory),
  // parse() retries with simdjson's default limit, 1024.
  const simdjson::error_code allocated =
      parser.allocate(64 << 10, kMaxJsonDepth);
  (void)allocated;
  return parser;
}

simdjson::dom::parser& Parser() {
  thread_local simdjson::dom::parser parser = NewParser();
  return parser;
}

// The JSON value at `pointer`, or none when there is none.
std::optional<simdjson::dom::element> At(const simdjson::dom::element& doc,
                                         const std::string& pointer) {
  simdjson::dom::element value;
  if (doc.at_pointer(pointer).get(value) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  return value;
}

// The cursor at `pointer`: a string, or a number as text; none for a
// missing or null value.
absl::StatusOr<std::optional<std::string>> CursorAt(
    const simdjson::dom::element* doc, const std::string& pointer,
    const Page& page) {
  if (doc == nullptr) {
    return PageError(page, absl::StatusCode::kFailedPrecondition,
                     absl::StrCat("the body is not JSON, so cursor.pointer \"",
                                  pointer, "\" cannot be read"));
  }
  std::optional<simdjson::dom::element> value = At(*doc, pointer);
  if (!value.has_value() || value->is_null()) return std::nullopt;
  if (value->is_string()) {
    return std::optional<std::string>(std::string(value->get_string().value()));
  }
  if (value->is_number()) {
    return std::optional<std::string>(simdjson::to_string(*value));
  }
  return PageError(page, absl::StatusCode::kFailedPrecondition,
                   absl::StrCat("cursor.pointer \"", pointer,
                                "\" is not a string or number"));
}

// RFC 6901: empty, or '/'-separated tokens where '~' is followed by 0 or 1.
bool IsJsonPointer(const std::string& pointer) {
  if (pointer.empty()) return true;
  if (pointer[0] != '/') return false;
  for (size_t i = 0; i < pointer.size(); ++i) {
    if (pointer[i] == '~' &&
        (i + 1 == pointer.size() ||
         (pointer[i + 1] != '0' && pointer[i + 1] != '1'))) {
      return false;
    }
  }
  return true;
}

constexpr size_t kRecentUrls = 64;

}  // namespace

absl::Status ValidatePageStrategy(const PageStrategy& s) {
  auto invalid = [](absl::string_view field, absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
  };
  auto bad_param = [](absl::string_view param) {
    return param.find_first_of("&=#? ") != absl::string_view::npos;
  };
  switch (s.kind) {
    case PageStrategy::Kind::kPageNumber:
      if (s.param.empty()) {
        return invalid("page_number.param", "must name a query parameter");
      }
      if (bad_param(s.param)) {
        return invalid("page_number.param",
                       "must not contain '&', '=', '#', '?' or spaces");
      }
      if (s.step == 0) return invalid("page_number.step", "must not be 0");
      break;
    case PageStrategy::Kind::kCursor:
      if (s.cursor_pointer.empty() || !IsJsonPointer(s.cursor_pointer)) {
        return invalid("cursor.pointer",
                       absl::StrCat("\"", s.cursor_pointer,
                                    "\" is not an RFC 6901 pointer to a "
                                    "value (it must start with '/')"));
      }
      if (bad_param(s.param)) {
        return invalid("cursor.param",
                       "must not contain '&', '=', '#', '?' or spaces");
      }
      break;
    case PageStrategy::Kind::kLinkHeader:
      break;
  }
  if (!s.items_pointer.empty() && !IsJsonPointer(s.items_pointer)) {
    return invalid("items_pointer",
                   absl::StrCat("\"", s.items_pointer,
                                "\" is not an RFC 6901 pointer (it must "
                                "start with '/')"));
  }
  if (s.split_items && s.items_pointer.empty()) {
    return invalid("emit", "EMIT_ITEMS needs items_pointer");
  }
  if (s.max_pages < 0) return invalid("max_pages", "must not be negative");
  for (int status : s.stop_statuses) {
    if (status < 100 || status > 599) {
      return invalid("stop_statuses",
                     absl::StrCat(status, " is not an HTTP status (100..599)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> WithQueryParam(const std::string& url,
                                           absl::string_view name,
                                           absl::string_view value) {
  absl::StatusOr<UrlHandle> handle = ParseUrl(url);
  if (!handle.ok()) return handle.status();
  CurlString query;
  const CURLUcode rc =
      curl_url_get(handle->get(), CURLUPART_QUERY, &query.text, 0);
  std::vector<std::string> parts;
  if (rc == CURLUE_OK && query.text != nullptr) {
    parts = absl::StrSplit(query.text, '&', absl::SkipEmpty());
  }
  const std::string assignment = absl::StrCat(name, "=", PercentEncode(value));
  bool replaced = false;
  for (std::string& part : parts) {
    const absl::string_view key = absl::string_view(part).substr(
        0, std::min(part.find('='), part.size()));
    if (PercentDecode(key) == name) {
      part = replaced ? "" : assignment;
      replaced = true;
    }
  }
  if (!replaced) parts.push_back(assignment);
  parts.erase(std::remove(parts.begin(), parts.end(), ""), parts.end());
  const std::string joined = absl::StrJoin(parts, "&");
  curl_url_set(handle->get(), CURLUPART_QUERY, joined.c_str(), 0);
  return UrlText(handle->get());
}

namespace {

// curl refuses a URL this long or longer (CURL_MAX_INPUT_LENGTH).
constexpr size_t kCurlMaxUrl = 8000000;

// Four decimal numbers 0..255, dot-separated, no leading zeros.
bool IsDottedQuad(absl::string_view host) {
  const std::vector<absl::string_view> parts = absl::StrSplit(host, '.');
  if (parts.size() != 4) return false;
  for (absl::string_view part : parts) {
    int value = 0;
    if (part.empty() || part.size() > 3 ||
        (part.size() > 1 && part[0] == '0') ||
        !absl::SimpleAtoi(part, &value) || value > 255) {
      return false;
    }
  }
  return true;
}

// "scheme://host[:port]" of `url` when curl would write that part back as
// it is (http or https, lower-case host name or IPv4 address, a plain
// port, no user info); empty otherwise.
absl::string_view PlainOrigin(absl::string_view url) {
  size_t start = 0;
  if (absl::StartsWith(url, "http://")) {
    start = 7;
  } else if (absl::StartsWith(url, "https://")) {
    start = 8;
  } else {
    return {};
  }
  const size_t end = std::min(url.find_first_of("/?#", start), url.size());
  const absl::string_view authority = url.substr(start, end - start);
  const size_t colon = authority.find(':');
  const absl::string_view host = authority.substr(0, colon);
  if (host.empty() || host.front() == '.' || host.front() == '-' ||
      host.back() == '.') {
    return {};
  }
  for (char c : host) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '.' &&
        c != '-') {
      return {};
    }
  }
  // A last label that starts with a digit makes curl read the host as an
  // IPv4 address, which it rewrites ("127.1", "0x7f.1") unless it is
  // already four plain decimal parts.
  const absl::string_view last = host.substr(host.rfind('.') + 1);
  if (absl::ascii_isdigit(last.front()) && !IsDottedQuad(host)) return {};
  if (colon != absl::string_view::npos) {
    const absl::string_view port = authority.substr(colon + 1);
    int number = 0;
    if (port.empty() || port.front() == '0' ||
        !std::all_of(port.begin(), port.end(), absl::ascii_isdigit) ||
        !absl::SimpleAtoi(port, &number) || number > 65535) {
      return {};
    }
  }
  // The rest must be what curl accepts too (it would refuse the whole base).
  for (char c : url.substr(end)) {
    if (c <= ' ' || c >= 0x7f) return {};
  }
  return url.substr(0, end);
}

// Whether `reference` is a path-absolute reference ("/p/2?c=x") that curl
// would append to the base's origin unchanged: no dot segment to remove,
// no fragment, only characters it neither rejects nor encodes.
bool IsPlainAbsolutePath(absl::string_view reference) {
  if (reference.empty() || reference.front() != '/' ||
      absl::StartsWith(reference, "//")) {
    return false;
  }
  for (size_t i = 0; i < reference.size(); ++i) {
    const char c = reference[i];
    if (absl::ascii_isalnum(c)) continue;
    if (c == '%') {
      if (i + 2 >= reference.size() ||
          !absl::ascii_isxdigit(reference[i + 1]) ||
          !absl::ascii_isxdigit(reference[i + 2])) {
        return false;
      }
      continue;
    }
    if (absl::string_view("-._~!$&'()*+,;=:@/?").find(c) ==
        absl::string_view::npos) {
      return false;
    }
  }
  // curl drops an empty query ("/p?").
  if (reference.back() == '?') return false;
  const absl::string_view path = reference.substr(0, reference.find('?'));
  for (absl::string_view segment : absl::StrSplit(path, '/')) {
    if (segment == "." || segment == "..") return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ResolveUrl(const std::string& base,
                                       const std::string& reference) {
  // The common next link, "/items?cursor=…" on a plain origin, without
  // curl's parse of both and print of the result: this runs between a page
  // and the next request of every cursor and Link walk.
  if (IsPlainAbsolutePath(reference)) {
    if (absl::string_view origin = PlainOrigin(base);
        !origin.empty() && origin.size() + reference.size() < kCurlMaxUrl) {
      return absl::StrCat(origin, reference);
    }
  }
  absl::StatusOr<UrlHandle> handle = ParseUrl(base);
  if (!handle.ok()) return handle.status();
  // With a URL already set, curl resolves a relative one against it.
  const CURLUcode rc =
      curl_url_set(handle->get(), CURLUPART_URL, reference.c_str(),
                   CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK) {
    return absl::InvalidArgumentError(absl::StrCat(
        "\"", reference, "\" is not a URL: ", curl_url_strerror(rc)));
  }
  return UrlText(handle->get());
}

std::string NextLink(const std::vector<std::string>& link_values) {
  for (const std::string& header : link_values) {
    const absl::string_view v = header;
    size_t i = 0;
    auto skip = [&](absl::string_view chars) {
      while (i < v.size() && chars.find(v[i]) != absl::string_view::npos) ++i;
    };
    while (i < v.size()) {
      skip(" \t,");
      if (i >= v.size()) break;
      if (v[i] != '<') {  // malformed: skip to the next link
        const size_t comma = v.find(',', i);
        if (comma == absl::string_view::npos) break;
        i = comma + 1;
        continue;
      }
      const size_t close = v.find('>', i);
      if (close == absl::string_view::npos) break;
      const absl::string_view target = v.substr(i + 1, close - i - 1);
      i = close + 1;
      bool is_next = false;
      for (;;) {  // parameters: ; name [= token | quoted-string]
        skip(" \t");
        if (i >= v.size() || v[i] != ';') break;
        ++i;
        skip(" \t");
        const size_t name_start = i;
        while (i < v.size() && v[i] != '=' && v[i] != ';' && v[i] != ',' &&
               v[i] != ' ' && v[i] != '\t') {
          ++i;
        }
        const absl::string_view name = v.substr(name_start, i - name_start);
        skip(" \t");
        std::string value;
        if (i < v.size() && v[i] == '=') {
          ++i;
          skip(" \t");
          if (i < v.size() && v[i] == '"') {
            for (++i; i < v.size() && v[i] != '"'; ++i) {
              if (v[i] == '\\' && i + 1 < v.size()) ++i;
              value.push_back(v[i]);
            }
            if (i < v.size()) ++i;  // the closing quote
          } else {
            const size_t value_start = i;
            while (i < v.size() && v[i] != ';' && v[i] != ',' && v[i] != ' ' &&
                   v[i] != '\t') {
              ++i;
            }
            value = std::string(v.substr(value_start, i - value_start));
          }
        }
        if (absl::EqualsIgnoreCase(name, "rel")) {
          for (absl::string_view rel : absl::StrSplit(
                   value, absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
            if (absl::EqualsIgnoreCase(rel, "next")) is_next = true;
          }
        }
      }
      if (is_next) return std::string(target);
      // Anything else up to the next link is not ours to read.
      while (i < v.size() && v[i] != ',') ++i;
    }
  }
  return "";
}

// --- Paginator
// -------------------------------------------------------------------

Paginator::Paginator(const PageStrategy& strategy, std::string first_url,
                     const FetchLimits& limits)
    : strategy_(strategy), limits_(limits), first_url_(std::move(first_url)) {
  Restart(StartPosition());
}

WalkPosition Paginator::StartPosition() const {
  WalkPosition start;
  start.next_index = 0;
  if (strategy_.kind == PageStrategy::Kind::kPageNumber) {
    start.next_url = WithQueryParam(first_url_, strategy_.param,
                                    absl::StrCat(strategy_.first_page))
                         .value_or(first_url_);
  } else {
    start.next_url = first_url_;
  }
  return start;
}

void Paginator::Restart(const WalkPosition& from) {
  position_ = from;
  start_index_ = from.next_index;
  delivered_ = 0;
  recent_.assign(kRecentUrls, 0);
  recent_next_ = 0;
  checkpoint_ = 0;
  checkpoint_power_ = 1;
  checkpoint_steps_ = 0;
  if (!from.done()) SeenBefore(from.next_url);
}

std::optional<std::string> Paginator::UrlOf(int64_t index) const {
  if (position_.done() || index < position_.next_index) return std::nullopt;
  int64_t cap = 0;
  if (strategy_.max_pages > 0 &&
      (__builtin_add_overflow(start_index_, strategy_.max_pages, &cap) ||
       index >= cap)) {
    return std::nullopt;
  }
  if (index == position_.next_index) return position_.next_url;
  if (strategy_.kind != PageStrategy::Kind::kPageNumber) return std::nullopt;
  return PageNumberUrl(index);
}

std::optional<std::string> Paginator::PageNumberUrl(int64_t index) const {
  int64_t offset = 0, number = 0;
  // A page number past int64 (a huge step, or a forged token) ends the walk.
  if (__builtin_mul_overflow(index, strategy_.step, &offset) ||
      __builtin_add_overflow(strategy_.first_page, offset, &number)) {
    return std::nullopt;
  }
  absl::StatusOr<std::string> url =
      WithQueryParam(first_url_, strategy_.param, absl::StrCat(number));
  if (!url.ok()) return std::nullopt;
  return *std::move(url);
}

bool Paginator::SeenBefore(const std::string& url) {
  const uint64_t h = absl::HashOf(url);
  const bool seen =
      std::find(recent_.begin(), recent_.end(), h) != recent_.end() ||
      h == checkpoint_;
  recent_[recent_next_] = h;
  recent_next_ = (recent_next_ + 1) % recent_.size();
  // Brent: move the checkpoint at powers of two; any loop longer than the
  // recent window eventually comes round to it.
  if (++checkpoint_steps_ == checkpoint_power_) {
    checkpoint_ = h;
    checkpoint_power_ *= 2;
    checkpoint_steps_ = 0;
  }
  return seen;
}

absl::StatusOr<std::optional<std::string>> Paginator::NextUrl(
    const Page& page, const std::optional<std::string>& cursor) const {
  const std::string& base =
      page.result.final_url.empty() ? page.url : page.result.final_url;
  std::string reference;
  switch (strategy_.kind) {
    case PageStrategy::Kind::kPageNumber:
      // Not UrlOf: past max_pages the walk ends, but the token must still
      // point at the next page.
      return PageNumberUrl(page.index + 1);
    case PageStrategy::Kind::kCursor: {
      if (!cursor.has_value() || cursor->empty()) return std::nullopt;
      if (!strategy_.param.empty()) {
        absl::StatusOr<std::string> url =
            WithQueryParam(first_url_, strategy_.param, *cursor);
        if (!url.ok()) return url.status();
        return std::optional<std::string>(*std::move(url));
      }
      reference = *cursor;
      break;
    }
    case PageStrategy::Kind::kLinkHeader: {
      std::vector<std::string> links;
      for (const auto& [name, value] : page.result.headers) {
        if (name == "link") links.push_back(value);
      }
      reference = NextLink(links);
      if (reference.empty()) return std::nullopt;
      break;
    }
  }
  absl::StatusOr<std::string> url = ResolveUrl(base, reference);
  if (!url.ok()) {
    return PageError(page, absl::StatusCode::kFailedPrecondition,
                     absl::StrCat("its next link: ", url.status().message()));
  }
  return std::optional<std::string>(*std::move(url));
}

Paginator::Decision Paginator::OnPage(Page& page) {
  Decision decision;
  auto end = [&](absl::Status status) {
    position_.next_url.clear();
    decision.end = std::move(status);
    return decision;
  };
  if (!page.result.status.ok()) {
    const bool stop =
        std::find(strategy_.stop_statuses.begin(),
                  strategy_.stop_statuses.end(),
                  page.result.http_status) != strategy_.stop_statuses.end();
    if (stop) return end(absl::OkStatus());
    return end(absl::Status(page.result.status.code(),
                            absl::StrCat("page ", page.index, " (", page.url,
                                         "): ", page.result.status.message())));
  }
  // One parse serves both the items and the cursor.
  const bool wants_json = !strategy_.items_pointer.empty() ||
                          strategy_.kind == PageStrategy::Kind::kCursor;
  // A huge page leaves the parser's buffers huge: let them go after it.
  struct ShrinkAfter {
    size_t bytes;
    ~ShrinkAfter() {
      if (bytes > (size_t{1} << 20)) Parser() = NewParser();
    }
  } shrink{wants_json ? page.result.body.size() : 0};
  simdjson::dom::element root;
  const simdjson::error_code parsed =
      wants_json ? Parser().parse(page.result.body).get(root)
                 : simdjson::UNINITIALIZED;
  if (parsed == simdjson::DEPTH_ERROR) {
    return end(PageError(
        page, absl::StatusCode::kFailedPrecondition,
        absl::StrCat("the body nests JSON arrays and objects deeper than ",
                     kMaxJsonDepth, " levels, the limit")));
  }
  const bool is_json = wants_json && parsed == simdjson::SUCCESS;
  const simdjson::dom::element* doc = is_json ? &root : nullptr;
  if (!strategy_.items_pointer.empty()) {
    std::optional<simdjson::dom::element> items =
        doc != nullptr ? At(*doc, strategy_.items_pointer) : std::nullopt;
    if (!items.has_value() || !items->is_array()) {
      return end(
          PageError(page, absl::StatusCode::kFailedPrecondition,
                    absl::StrCat("items_pointer \"", strategy_.items_pointer,
                                 "\" is not an array in this page")));
    }
    const simdjson::dom::array array = items->get_array().value();
    if (array.begin() == array.end()) {
      return end(absl::OkStatus());  // past the last page
    }
    if (strategy_.split_items) {
      for (simdjson::dom::element item : array) {
        page.items.push_back(simdjson::to_string(item));
      }
    }
  }
  std::optional<std::string> cursor;
  if (strategy_.kind == PageStrategy::Kind::kCursor) {
    absl::StatusOr<std::optional<std::string>> found =
        CursorAt(doc, strategy_.cursor_pointer, page);
    if (!found.ok()) return end(found.status());
    cursor = *std::move(found);
  }
  absl::StatusOr<std::optional<std::string>> next = NextUrl(page, cursor);
  if (!next.ok()) return end(next.status());
  decision.deliver = true;
  ++delivered_;
  position_.next_index = page.index + 1;
  position_.next_url = next->value_or("");
  page.next = position_;
  if (position_.done()) {
    decision.end = absl::OkStatus();
  } else if (!IsHttpUrl(position_.next_url)) {
    decision.end =
        PageError(page, absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("its next link \"", position_.next_url,
                               "\" is not http or https"));
  } else if (absl::Status problem = ValidateUrl(position_.next_url, limits_);
             !problem.ok()) {
    // The checks every item's URL gets (credentials, length), here naming
    // the page whose link it is.
    decision.end =
        PageError(page, absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("its next link: ", problem.message()));
  } else if (strategy_.kind != PageStrategy::Kind::kPageNumber &&
             SeenBefore(position_.next_url)) {
    decision.end =
        PageError(page, absl::StatusCode::kFailedPrecondition,
                  absl::StrCat("its next page ", position_.next_url,
                               " was already walked: the pagination loops"));
  } else if (strategy_.max_pages > 0 && delivered_ >= strategy_.max_pages) {
    decision.end = absl::OkStatus();  // page.next still resumes from here
  }
  if (decision.end.has_value() && !decision.end->ok()) {
    position_.next_url.clear();
    page.next = position_;  // nothing to resume after a loop or a bad link
  }
  return decision;
}

}  // namespace fetchd::fetch
