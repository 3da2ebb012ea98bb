#include "server/request/resume_token.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fetchd::request {
namespace {

constexpr size_t kMacBytes = 32;  // SHA-256
// Tokens before signing were base64url("p1:<fingerprint>:<index>:<url>").
constexpr absl::string_view kUnsignedPrefix = "p1:";
constexpr int64_t kMaxIndex = int64_t{1} << 62;

using Kind = fetch::PageStrategy::Kind;

// HMAC-SHA256. The one-shot HMAC() of OpenSSL 3 looks the MAC and digest
// algorithms up in the provider tables on every call, a cost paid per page
// of every walk; they are looked up once here instead.
std::string Mac(absl::string_view key, absl::string_view data) {
  static EVP_MAC* const hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  char digest_name[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end()};
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(
      hmac != nullptr ? EVP_MAC_CTX_new(hmac) : nullptr, &EVP_MAC_CTX_free);
  unsigned char out[EVP_MAX_MD_SIZE];
  size_t size = 0;
  if (ctx == nullptr ||
      EVP_MAC_init(ctx.get(),
                   reinterpret_cast<const unsigned char*>(key.data()),
                   key.size(), params) != 1 ||
      EVP_MAC_update(ctx.get(),
                     reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1 ||
      EVP_MAC_final(ctx.get(), out, &size, sizeof(out)) != 1) {
    // Never expected; an empty MAC matches no token, so a failure here
    // refuses tokens rather than accepting them.
    return std::string();
  }
  return std::string(reinterpret_cast<const char*>(out), size);
}

bool KindFromName(absl::string_view name, Kind* kind) {
  for (Kind k : {Kind::kPageNumber, Kind::kCursor, Kind::kLinkHeader}) {
    if (name == PageStrategyName(k)) {
      *kind = k;
      return true;
    }
  }
  return false;
}

}  // namespace

absl::StatusOr<std::string> ReadResumeTokenKey(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--token_key_file=", path, " cannot be read: ", std::strerror(errno)));
  }
  std::string key((std::istreambuf_iterator<char>(in)),
                  std::istreambuf_iterator<char>());
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_key_file=", path, " cannot be read"));
  }
  absl::StripTrailingAsciiWhitespace(&key);
  if (key.size() < kMinResumeTokenKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--token_key_file=", path, " holds ", key.size(),
        " bytes of key; at least ", kMinResumeTokenKeyBytes,
        " are needed (make one with: openssl rand -base64 48 > ", path, ")"));
  }
  return key;
}

absl::StatusOr<std::string> RandomResumeTokenKey() {
  std::string key(kMinResumeTokenKeyBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()),
                 static_cast<int>(key.size())) != 1) {
    return absl::InternalError(
        "OpenSSL could not make a random resume-token key");
  }
  return key;
}

absl::string_view PageStrategyName(Kind kind) {
  switch (kind) {
    case Kind::kPageNumber:
      return "page_number";
    case Kind::kCursor:
      return "cursor";
    case Kind::kLinkHeader:
      return "link_header";
  }
  return "unknown";
}

// Version 2: one version byte, then
//   fingerprint "\n" strategy name "\n" next index "\n" left_origin ("0"
//   or "1") "\n" next URL
// (the URL last, so it may hold any byte), then the MAC over all of it.
std::string SignResumeToken(absl::string_view key,
                            const ResumeTokenContents& contents) {
  std::string data = absl::StrCat(
      std::string(1, static_cast<char>(kResumeTokenVersion)),
      contents.fingerprint, "\n", PageStrategyName(contents.strategy), "\n",
      contents.next.next_index, "\n", contents.next.left_origin ? "1" : "0",
      "\n", contents.next.next_url);
  data += Mac(key, data);
  return absl::WebSafeBase64Escape(data);
}

absl::StatusOr<ResumeTokenContents> OpenResumeToken(absl::string_view key,
                                                    absl::string_view token) {
  const absl::Status not_a_token = absl::InvalidArgumentError(
      "resume_token is not a token from a FetchPages Page (pass it back "
      "unchanged)");
  std::string data;
  if (token.empty() || !absl::WebSafeBase64Unescape(token, &data) ||
      data.empty()) {
    return not_a_token;
  }
  if (absl::StartsWith(data, kUnsignedPrefix)) {
    return absl::InvalidArgumentError(
        "resume_token is in the unsigned format of fetchd versions before "
        "signed tokens; restart the walk without resume_token, or resume it "
        "on the fetchd version that made it");
  }
  const int version = static_cast<unsigned char>(data[0]);
  if (version != kResumeTokenVersion) {
    return absl::InvalidArgumentError(
        absl::StrCat("resume_token: format version ", version,
                     " is not supported by this fetchd (it reads version ",
                     kResumeTokenVersion, ")"));
  }
  if (data.size() < 1 + kMacBytes) {
    return absl::InvalidArgumentError(
        "resume_token: signature does not match (signed with another "
        "--token_key_file?)");
  }
  const absl::string_view signed_part(data.data(), data.size() - kMacBytes);
  const std::string expected = Mac(key, signed_part);
  if (expected.size() != kMacBytes ||
      CRYPTO_memcmp(expected.data(), data.data() + signed_part.size(),
                    kMacBytes) != 0) {
    return absl::InvalidArgumentError(
        "resume_token: signature does not match (signed with another "
        "--token_key_file?)");
  }
  // Signed by a fetchd holding the key: malformed contents mean a bug or a
  // leaked key, still an INVALID_ARGUMENT rather than a crash.
  std::vector<std::string> fields =
      absl::StrSplit(signed_part.substr(1), absl::MaxSplits('\n', 4));
  ResumeTokenContents contents;
  if (fields.size() != 5 || !KindFromName(fields[1], &contents.strategy) ||
      (fields[3] != "0" && fields[3] != "1") ||
      !absl::SimpleAtoi(fields[2], &contents.next.next_index) ||
      contents.next.next_index < 0 || contents.next.next_index > kMaxIndex) {
    return not_a_token;
  }
  contents.fingerprint = std::move(fields[0]);
  contents.next.left_origin = fields[3] == "1";
  contents.next.next_url = std::move(fields[4]);
  return contents;
}

}  // namespace fetchd::request
