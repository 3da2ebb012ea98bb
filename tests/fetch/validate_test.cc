#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch {
namespace {

using ::testing::HasSubstr;

FetchSpec Valid() {
  FetchSpec spec;
  spec.url = "http://example.test/a?b=c";
  return spec;
}

void ExpectInvalid(const FetchSpec& spec, const std::string& field,
                   const FetchLimits& limits = {}) {
  absl::Status s = ValidateFetchSpec(spec, limits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_THAT(s.message(), HasSubstr(field));
}

TEST(ValidateFetchSpecTest, AcceptsAPlainItem) {
  EXPECT_TRUE(ValidateFetchSpec(Valid(), {}).ok());
  FetchSpec https = Valid();
  https.url = "https://[::1]:8443/x";
  EXPECT_TRUE(ValidateFetchSpec(https, {}).ok());
}

TEST(ValidateFetchSpecTest, RejectsBadUrls) {
  for (const char* url :
       {"", "example.test/x", "ftp://example.test/x", "file:///etc/passwd",
        "http://", "gopher://x/", "http://exa mple.test/"}) {
    FetchSpec spec = Valid();
    spec.url = url;
    ExpectInvalid(spec, "url");
  }
  FetchSpec spec = Valid();
  spec.url = "http://example.test/" + std::string(100, 'a');
  ExpectInvalid(spec, "the limit is 50", {.max_url_bytes = 50});
  spec.url = "http://user:pw@example.test/";
  ExpectInvalid(spec, "carries credentials");
  // Found by tests/fuzz/url_policy_fuzzer: a host of dots alone normalizes
  // to no host at all, and curl would read only up to a NUL.
  for (const char* url : {"http://../", "http:/..?f//[:", "http://./x"}) {
    spec.url = url;
    ExpectInvalid(spec, "url has no host");
  }
  spec.url = std::string("http://example.test/\0@evil.example/", 35);
  ExpectInvalid(spec, "url contains a NUL byte");
}

// International names are valid and fetched in their IDNA ASCII form;
// a name with no such form is INVALID_ARGUMENT naming url.
TEST(ValidateFetchSpecTest, InternationalHostsAndTheirAsciiForm) {
  FetchSpec spec = Valid();
  spec.url =
      "http://b\xc3\xbc"
      "cher.example/s\xc3\xa4tze?q=1";  // bücher
  EXPECT_TRUE(ValidateFetchSpec(spec, {}).ok());
  EXPECT_EQ(*AsciiUrl(spec.url),
            "http://xn--bcher-kva.example/s\xc3\xa4tze?q=1");
  EXPECT_EQ(*AsciiUrl("https://B\xc3\x9c"
                      "CHER.example:8443/"),
            "https://xn--bcher-kva.example:8443/");
  EXPECT_EQ(*AsciiUrl("http://example.test/x"), "http://example.test/x");
  for (const char* url : {"http://\xe2\x98\x83.example/",  // a snowman
                          "http://a\xc3\xbc.-x.example/"}) {
    spec.url = url;
    ExpectInvalid(spec, "url host is not a valid international domain name");
    EXPECT_EQ(AsciiUrl(url).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

// The host the address guard sees: numeric IPv4 spellings come back
// dotted, names lower case without a trailing dot, IPv6 without brackets.
TEST(ValidateFetchSpecTest, UrlHostIsNormalized) {
  EXPECT_EQ(*UrlHost("http://2130706433:8080/"), "127.0.0.1");
  EXPECT_EQ(*UrlHost("http://0177.0.0.1/"), "127.0.0.1");
  EXPECT_EQ(*UrlHost("http://0x7f.0.0.1/"), "127.0.0.1");
  EXPECT_EQ(*UrlHost("http://127.1/"), "127.0.0.1");
  EXPECT_EQ(*UrlHost("http://[::FFFF:127.0.0.1]:80/"), "::ffff:127.0.0.1");
  EXPECT_EQ(*UrlHost("http://API.Example.COM./x"), "api.example.com");
  EXPECT_EQ(*UrlHost("http://b\xc3\xbc"
                     "cher.example/"),
            "xn--bcher-kva.example");
  EXPECT_FALSE(UrlHost("not a url").ok());
}

TEST(ValidateFetchSpecTest, RejectsBadHeadersAndBodies) {
  FetchSpec spec = Valid();
  spec.headers = {{"Bad Name", "v"}};
  ExpectInvalid(spec, "headers[0]");
  spec.headers = {{"X-Ok", "v"}, {"X-Inject", "a\r\nHost: evil"}};
  ExpectInvalid(spec, "headers[1]");
  // Framing and routing headers (smuggling on pooled connections; Host
  // would route past the host rules, which check the URL's host).
  for (const char* name :
       {"Host", "host", "HOST", "Content-Length", "content-length",
        "Transfer-Encoding", "TRANSFER-ENCODING", "Connection", "Keep-Alive",
        "Upgrade", "TE", "te", "Trailer", "Expect", "Proxy-Authorization",
        "Proxy-Connection", "proxy-anything", "Proxy-"}) {
    spec.headers = {{"X-Ok", "v"}, {name, "1"}};
    absl::Status s = ValidateFetchSpec(spec, {});
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_THAT(s.message(),
                HasSubstr(absl::StrCat("headers[1] is \"", name, "\"")));
    EXPECT_THAT(s.message(), HasSubstr("not allowed"));
  }
  // Names that only contain or resemble one pass.
  spec.headers = {{"X-Host", "v"}, {"Hostname", "v"}, {"X-Content-Length", "1"},
                  {"Tea", "v"},    {"Trailers", "v"}, {"X-Proxy-Id", "v"},
                  {"Proxy", "v"},  {"Expect-CT", "v"}};
  EXPECT_TRUE(ValidateFetchSpec(spec, {}).ok());
  spec.headers =
      std::vector<std::pair<std::string, std::string>>(3, {"X", "y"});
  ExpectInvalid(spec, "the limit is 2", {.max_headers = 2});
  spec = Valid();
  spec.body = "x";
  ExpectInvalid(spec, "body");  // GET with a body
  spec.method = Method::kPost;
  EXPECT_TRUE(ValidateFetchSpec(spec, {}).ok());
  spec.body = std::string(11, 'x');
  ExpectInvalid(spec, "body", {.max_request_body_bytes = 10});
}

TEST(ValidateFetchSpecTest, RejectsOutOfRangeKnobs) {
  FetchSpec spec = Valid();
  spec.timeout = absl::ZeroDuration();
  ExpectInvalid(spec, "timeout");
  spec = Valid();
  spec.timeout = -absl::Seconds(1);
  ExpectInvalid(spec, "timeout");
  spec = Valid();
  spec.max_body_bytes = 0;
  ExpectInvalid(spec, "max_body_bytes");
  spec.max_body_bytes = 101;
  ExpectInvalid(spec, "--max_body_bytes", {.max_body_bytes = 100});
  spec = Valid();
  spec.max_redirects = 11;
  ExpectInvalid(spec, "max_redirects");
  spec = Valid();
  spec.retry.max_attempts = 0;
  ExpectInvalid(spec, "retry.max_attempts");
  spec.retry.max_attempts = 6;
  ExpectInvalid(spec, "--max_attempts");
  spec = Valid();
  spec.retry.max_backoff = absl::Hours(1);
  ExpectInvalid(spec, "retry.max_backoff");
  spec = Valid();
  spec.retry.multiplier = 0.5;
  ExpectInvalid(spec, "retry.multiplier");
  spec = Valid();
  spec.retry.on_curl_codes = {-1};
  ExpectInvalid(spec, "retry.on_curl_codes");
}

}  // namespace
}  // namespace fetchd::fetch
