// The FetchPages resume-token decoder (server/request/resume_token.cc).
//
// A fuzzed token almost never carries a valid signature, so the input is
// used three ways: as a token as it arrives; as the signed contents of a
// token (signed here with the key, as a fetchd holding the key would),
// which reaches the content parser; and as the fields of a token that is
// signed and opened again (a round trip).
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "server/request/resume_token.h"
#include "tests/fuzz/fuzz_input.h"

namespace fetchd::request {
namespace {

constexpr absl::string_view kKey = "fuzz-key-0123456789abcdef0123456789abcdef";

std::string SignRaw(absl::string_view signed_part) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), kKey.data(), static_cast<int>(kKey.size()),
       reinterpret_cast<const unsigned char*>(signed_part.data()),
       signed_part.size(), mac, &length);
  std::string data(signed_part);
  data.append(reinterpret_cast<const char*>(mac), length);
  return absl::WebSafeBase64Escape(data);
}

void ExpectRoundTrip(const ResumeTokenContents& contents) {
  absl::StatusOr<ResumeTokenContents> back =
      OpenResumeToken(kKey, SignResumeToken(kKey, contents));
  FUZZ_CHECK(back.ok());
  FUZZ_CHECK(back->fingerprint == contents.fingerprint);
  FUZZ_CHECK(back->strategy == contents.strategy);
  FUZZ_CHECK(back->next.next_index == contents.next.next_index);
  FUZZ_CHECK(back->next.next_url == contents.next.next_url);
  FUZZ_CHECK(back->next.left_origin == contents.next.left_origin);
  // Another key never opens it.
  FUZZ_CHECK(!OpenResumeToken("another-key-0123456789abcdef0123456789",
                              SignResumeToken(kKey, contents))
                  .ok());
}

void CheckToken(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  // 1. As it arrives: refused unless a real token (the fuzzer cannot
  // forge the MAC).
  absl::StatusOr<ResumeTokenContents> opened = OpenResumeToken(kKey, bytes);
  if (opened.ok()) ExpectRoundTrip(*opened);
  // 2. As signed contents, version byte included.
  const std::string token = SignRaw(bytes);
  absl::StatusOr<ResumeTokenContents> contents = OpenResumeToken(kKey, token);
  if (contents.ok()) {
    FUZZ_CHECK(!bytes.empty() && bytes[0] == kResumeTokenVersion);
    FUZZ_CHECK(contents->next.next_index >= 0);
    ExpectRoundTrip(*contents);
  } else {
    FUZZ_CHECK(absl::StartsWith(contents.status().message(), "resume_token"));
  }
  // 3. As fields: fingerprint, strategy byte, index, URL.
  fuzz::FuzzInput in(data, size);
  ResumeTokenContents fields;
  const uint8_t flags = in.Byte();
  fields.strategy = static_cast<fetch::PageStrategy::Kind>(flags % 3);
  fields.next.left_origin = (flags & 0x80) != 0;
  fields.fingerprint = in.Line();
  int64_t index = 0;
  if (!absl::SimpleAtoi(in.Line(), &index) || index < 0 ||
      index > (int64_t{1} << 62)) {
    index = 0;
  }
  fields.next.next_index = index;
  fields.next.next_url = std::string(in.Rest());
  // The format separates fields with '\n': only the URL, last, may hold one.
  ExpectRoundTrip(fields);
}

}  // namespace
}  // namespace fetchd::request

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fetchd::request::CheckToken(data, size);
  return 0;
}
