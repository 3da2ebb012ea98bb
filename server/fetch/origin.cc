// Origins and credential headers: what "the same origin" means when a walk
// or a redirect decides whether the request's credentials may go along.
#include <curl/curl.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch {
namespace {

struct UrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};

// A curl-allocated string, freed on scope exit.
struct CurlString {
  char* text = nullptr;
  ~CurlString() { curl_free(text); }
};

}  // namespace

bool IsCredentialHeader(absl::string_view name,
                        const std::vector<std::string>& extra) {
  name = absl::StripAsciiWhitespace(name);
  if (absl::EqualsIgnoreCase(name, "authorization") ||
      absl::EqualsIgnoreCase(name, "cookie") ||
      absl::EqualsIgnoreCase(name, "proxy-authorization")) {
    return true;
  }
  for (const std::string& other : extra) {
    if (absl::EqualsIgnoreCase(name, other)) return true;
  }
  return false;
}

absl::StatusOr<std::string> OriginOf(const std::string& url) {
  std::unique_ptr<CURLU, UrlDeleter> handle(curl_url());
  if (handle == nullptr) return absl::InternalError("curl_url failed");
  CURLUcode rc = curl_url_set(handle.get(), CURLUPART_URL, url.c_str(),
                              CURLU_NON_SUPPORT_SCHEME);
  if (rc != CURLUE_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", url, "\" is not a URL: ", curl_url_strerror(rc)));
  }
  CurlString scheme, host, port;
  if (curl_url_get(handle.get(), CURLUPART_SCHEME, &scheme.text, 0) !=
          CURLUE_OK ||
      curl_url_get(handle.get(), CURLUPART_PORT, &port.text,
                   CURLU_DEFAULT_PORT) != CURLUE_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", url, "\" has no scheme or port"));
  }
  // The ASCII (punycode) form, so that both spellings of an IDNA host are
  // one origin; without IDNA support, the host as written.
  rc = curl_url_get(handle.get(), CURLUPART_HOST, &host.text, CURLU_PUNYCODE);
  if (rc != CURLUE_OK) {
    // libcurl 7.88 leaves its copy of the host in `host.text` when the
    // IDNA conversion fails (e.g. "bücher.example."): free it before the
    // second call overwrites the pointer (found by url_policy_fuzzer).
    curl_free(host.text);
    host.text = nullptr;
    rc = curl_url_get(handle.get(), CURLUPART_HOST, &host.text, 0);
  }
  if (rc != CURLUE_OK || host.text == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", url, "\" has no host"));
  }
  std::string host_text = absl::AsciiStrToLower(host.text);
  if (absl::EndsWith(host_text, ".")) host_text.pop_back();
  return absl::StrCat(absl::AsciiStrToLower(scheme.text), "://", host_text, ":",
                      port.text);
}

}  // namespace fetchd::fetch
