// ValidateFetchSpec: every field of an item checked against its bound,
// with a message that names the field (as the API spells it) and the limit.
#include <curl/curl.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch {
namespace {

struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
struct CurlStringDeleter {
  void operator()(char* s) const { curl_free(s); }
};
using CurlString = std::unique_ptr<char, CurlStringDeleter>;

absl::Status Invalid(absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat(field, " ", problem));
}

bool IsAscii(absl::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

std::unique_ptr<CURLU, UrlDeleter> ParseUrl(const std::string& url) {
  std::unique_ptr<CURLU, UrlDeleter> parsed(curl_url());
  if (parsed == nullptr ||
      curl_url_set(parsed.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
    return nullptr;
  }
  return parsed;
}

absl::StatusOr<std::string> RawHost(CURLU* parsed) {
  char* raw = nullptr;
  if (curl_url_get(parsed, CURLUPART_HOST, &raw, 0) != CURLUE_OK) {
    return absl::InvalidArgumentError("url has no host");
  }
  CurlString host(raw);
  return std::string(host.get());
}

}  // namespace

absl::StatusOr<std::string> UrlHost(const std::string& url) {
  std::unique_ptr<CURLU, UrlDeleter> parsed = ParseUrl(url);
  if (parsed == nullptr) {
    return absl::InvalidArgumentError("url is not a valid absolute URL");
  }
  absl::StatusOr<std::string> host = RawHost(parsed.get());
  if (!host.ok()) return host.status();
  absl::StatusOr<std::string> normal = NormalizeHost(*host);
  if (!normal.ok()) return Invalid("url", normal.status().message());
  return normal;
}

absl::StatusOr<std::string> AsciiUrl(const std::string& url) {
  if (IsAscii(url)) return url;
  std::unique_ptr<CURLU, UrlDeleter> parsed = ParseUrl(url);
  if (parsed == nullptr) {
    return absl::InvalidArgumentError("url is not a valid absolute URL");
  }
  absl::StatusOr<std::string> host = RawHost(parsed.get());
  if (!host.ok()) return host.status();
  if (IsAscii(*host)) return url;  // non-ASCII elsewhere: curl's business
  absl::StatusOr<std::string> ascii = NormalizeHost(*host);
  if (!ascii.ok()) return Invalid("url", ascii.status().message());
  char* raw = nullptr;
  if (curl_url_set(parsed.get(), CURLUPART_HOST, ascii->c_str(), 0) !=
          CURLUE_OK ||
      curl_url_get(parsed.get(), CURLUPART_URL, &raw, 0) != CURLUE_OK) {
    return Invalid("url", "has a host curl does not accept in ASCII form");
  }
  CurlString out(raw);
  return std::string(out.get());
}

absl::Status ValidateUrl(const std::string& url, const FetchLimits& limits) {
  if (url.empty()) return Invalid("url", "is empty");
  if (static_cast<int64_t>(url.size()) > limits.max_url_bytes) {
    return Invalid("url",
                   absl::StrCat("is ", url.size(), " bytes; the limit is ",
                                limits.max_url_bytes));
  }
  // curl reads the URL up to its first NUL: the rest would be checked by
  // no one and echoed back as if it had been fetched.
  if (url.find('\0') != std::string::npos) {
    return Invalid("url", "contains a NUL byte");
  }
  std::unique_ptr<CURLU, UrlDeleter> parsed(curl_url());
  if (parsed == nullptr) return absl::InternalError("curl_url failed");
  if (CURLUcode rc = curl_url_set(parsed.get(), CURLUPART_URL, url.c_str(), 0);
      rc != CURLUE_OK) {
    return Invalid("url", absl::StrCat("is not a valid absolute URL (",
                                       curl_url_strerror(rc), ")"));
  }
  char* raw = nullptr;
  curl_url_get(parsed.get(), CURLUPART_SCHEME, &raw, 0);
  CurlString scheme(raw);
  const std::string lower = absl::AsciiStrToLower(scheme ? scheme.get() : "");
  if (lower != "http" && lower != "https") {
    return Invalid("url", absl::StrCat("has scheme \"", lower,
                                       "\"; only http and https are allowed"));
  }
  raw = nullptr;
  curl_url_get(parsed.get(), CURLUPART_HOST, &raw, 0);
  CurlString host(raw);
  // Dots alone ("http://../") are no name either: with the trailing dots
  // gone, the host rules would see an empty host (url_policy_fuzzer).
  if (host == nullptr || absl::string_view(host.get()).find_first_not_of('.') ==
                             absl::string_view::npos) {
    return Invalid("url", "has no host");
  }
  // An international name is fetched in its IDNA ASCII form (AsciiUrl);
  // one that has none is refused here, not at connect time.
  if (!IsAscii(host.get())) {
    if (absl::StatusOr<std::string> ascii = NormalizeHost(host.get());
        !ascii.ok()) {
      return Invalid("url", ascii.status().message());
    }
  }
  raw = nullptr;
  // Credentials in a URL end up in logs and results; send a header.
  if (curl_url_get(parsed.get(), CURLUPART_USER, &raw, 0) == CURLUE_OK) {
    CurlString user(raw);
    return Invalid("url",
                   "carries credentials (user:password@); send an "
                   "Authorization header instead");
  }
  return absl::OkStatus();
}

namespace {

bool IsToken(absl::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) &&
        absl::string_view("!#$%&'*+-.^_`|~").find(c) ==
            absl::string_view::npos) {
      return false;
    }
  }
  return true;
}

// Headers that frame or route the request on the wire. curl sets them
// itself; one from a caller could desynchronise a pooled connection to a
// shared front end (request smuggling: Content-Length against
// Transfer-Encoding, Connection/Upgrade hijacks, Expect stalls) or, for
// Host, send the request past the host rules, which check the URL's host.
// Matched case-insensitively; every name starting "Proxy-" is refused too.
constexpr absl::string_view kFramingHeaders[] = {
    "Host",       "Content-Length", "Transfer-Encoding",
    "Connection", "Keep-Alive",     "Upgrade",
    "TE",         "Trailer",        "Expect"};

absl::Status CheckNotFraming(absl::string_view field, absl::string_view name) {
  bool framing = absl::StartsWithIgnoreCase(name, "proxy-");
  for (absl::string_view f : kFramingHeaders) {
    framing = framing || absl::EqualsIgnoreCase(name, f);
  }
  if (!framing) return absl::OkStatus();
  return Invalid(field,
                 absl::StrCat("is \"", name,
                              "\", a header that frames or routes the request "
                              "(Host, Content-Length, Transfer-Encoding, "
                              "Connection, Keep-Alive, Upgrade, TE, Trailer, "
                              "Expect, Proxy-*): fetchd sets these itself, so "
                              "they are not allowed"));
}

absl::Status CheckHeaders(const FetchSpec& spec, const FetchLimits& limits) {
  if (static_cast<int>(spec.headers.size()) > limits.max_headers) {
    return Invalid("headers",
                   absl::StrCat("has ", spec.headers.size(),
                                " entries; the limit is ", limits.max_headers));
  }
  int64_t bytes = 0;
  for (size_t i = 0; i < spec.headers.size(); ++i) {
    const auto& [name, value] = spec.headers[i];
    const std::string field = absl::StrCat("headers[", i, "]");
    if (!IsToken(name)) {
      return Invalid(field, absl::StrCat("has an invalid name \"",
                                         absl::CEscape(name), "\""));
    }
    if (absl::Status s = CheckNotFraming(field, name); !s.ok()) return s;
    if (value.find_first_of("\r\n") != std::string::npos ||
        value.find('\0') != std::string::npos) {
      return Invalid(field, "value contains CR, LF or NUL");
    }
    bytes += name.size() + value.size() + 4;
  }
  if (bytes > limits.max_header_bytes) {
    return Invalid("headers",
                   absl::StrCat("total ", bytes, " bytes; the limit is ",
                                limits.max_header_bytes));
  }
  return absl::OkStatus();
}

absl::Status CheckRetry(const RetryPolicy& r, const FetchLimits& limits) {
  if (r.max_attempts < 1 || r.max_attempts > limits.max_attempts) {
    return Invalid("retry.max_attempts",
                   absl::StrCat("must be between 1 and ", limits.max_attempts,
                                " (--max_attempts), got ", r.max_attempts));
  }
  if (r.initial_backoff < absl::ZeroDuration()) {
    return Invalid("retry.initial_backoff", "must not be negative");
  }
  if (r.max_backoff < r.initial_backoff || r.max_backoff > limits.max_backoff) {
    return Invalid("retry.max_backoff",
                   absl::StrCat("must be between initial_backoff and ",
                                absl::FormatDuration(limits.max_backoff),
                                " (--max_backoff), got ",
                                absl::FormatDuration(r.max_backoff)));
  }
  if (!(r.multiplier >= 1.0 && r.multiplier <= 10.0)) {
    return Invalid(
        "retry.multiplier",
        absl::StrCat("must be between 1 and 10, got ", r.multiplier));
  }
  for (int code : r.on_curl_codes) {
    if (code <= 0 || code >= CURL_LAST) {
      return Invalid("retry.on_curl_codes",
                     absl::StrCat("has ", code, ", not a curl error code"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateRetryPolicy(const RetryPolicy& retry,
                                 const FetchLimits& limits) {
  return CheckRetry(retry, limits);
}

absl::Status ValidateFetchSpec(const FetchSpec& spec,
                               const FetchLimits& limits) {
  if (absl::Status s = ValidateUrl(spec.url, limits); !s.ok()) return s;
  if (absl::Status s = CheckHeaders(spec, limits); !s.ok()) return s;
  if (spec.method != Method::kPost && !spec.body.empty()) {
    return Invalid("body", "is only sent with method POST");
  }
  if (static_cast<int64_t>(spec.body.size()) > limits.max_request_body_bytes) {
    return Invalid(
        "body", absl::StrCat("is ", spec.body.size(), " bytes; the limit is ",
                             limits.max_request_body_bytes));
  }
  if (spec.timeout <= absl::ZeroDuration() ||
      spec.timeout > limits.max_timeout) {
    return Invalid("timeout",
                   absl::StrCat("must be above 0 and at most ",
                                absl::FormatDuration(limits.max_timeout),
                                ", got ", absl::FormatDuration(spec.timeout)));
  }
  if (spec.max_body_bytes < 1 || spec.max_body_bytes > limits.max_body_bytes) {
    return Invalid(
        "max_body_bytes",
        absl::StrCat("must be between 1 and ", limits.max_body_bytes,
                     " (--max_body_bytes), got ", spec.max_body_bytes));
  }
  if (spec.max_redirects < 0 || spec.max_redirects > limits.max_redirects) {
    return Invalid(
        "max_redirects",
        absl::StrCat("must be between 0 and ", limits.max_redirects,
                     " (--max_redirects), got ", spec.max_redirects));
  }
  return CheckRetry(spec.retry, limits);
}

}  // namespace fetchd::fetch
