#include <gmock/gmock.h>
#include <gtest/gtest.h>

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
}

TEST(ValidateFetchSpecTest, RejectsBadHeadersAndBodies) {
  FetchSpec spec = Valid();
  spec.headers = {{"Bad Name", "v"}};
  ExpectInvalid(spec, "headers[0]");
  spec.headers = {{"X-Ok", "v"}, {"X-Inject", "a\r\nHost: evil"}};
  ExpectInvalid(spec, "headers[1]");
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
