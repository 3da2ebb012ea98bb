// FetchPages resume tokens: signed, versioned, opaque to callers.
//
// A token is base64url(version byte, contents, HMAC-SHA256(key, version byte
// + contents)). Jobs persist tokens, so the version says how to read the
// contents, and a token whose version this fetchd does not know is refused
// with a message that says so. The key is shared by every replica
// (--token_key_file), so any replica resumes any replica's walk; without it
// each process makes a random key and its tokens work only on itself.
#ifndef FETCHD_SERVER_REQUEST_RESUME_TOKEN_H_
#define FETCHD_SERVER_REQUEST_RESUME_TOKEN_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/fetch/fetch.h"

namespace fetchd::request {

// Shorter keys are refused: HMAC-SHA256 wants at least its output size.
inline constexpr size_t kMinResumeTokenKeyBytes = 32;

// The format this fetchd writes; the only one it reads.
inline constexpr int kResumeTokenVersion = 2;

// The key in `path` (--token_key_file): the file's bytes without trailing
// whitespace, so `openssl rand -base64 48 > F` and a Secret made from it
// give the same key. INVALID_ARGUMENT naming the flag when the file cannot
// be read or holds fewer than kMinResumeTokenKeyBytes.
absl::StatusOr<std::string> ReadResumeTokenKey(const std::string& path);

// kMinResumeTokenKeyBytes from the OpenSSL CSPRNG (the per-process key
// without --token_key_file); INTERNAL if OpenSSL cannot provide them.
absl::StatusOr<std::string> RandomResumeTokenKey();

// The name written into tokens and fingerprints: the API's oneof field name
// ("page_number", "cursor", "link_header"), stable across builds, unlike
// the C++ enum's integer.
absl::string_view PageStrategyName(fetch::PageStrategy::Kind kind);

// What a token carries.
struct ResumeTokenContents {
  // The walk it belongs to: SHA-256, hex, over its URL and strategy fields
  // (PlanWalk).
  std::string fingerprint;
  fetch::PageStrategy::Kind strategy = fetch::PageStrategy::Kind::kPageNumber;
  fetch::WalkPosition next;  // where the walk continues
};

// The signed token for `contents`. `key` must not be empty.
std::string SignResumeToken(absl::string_view key,
                            const ResumeTokenContents& contents);

// The contents of a token SignResumeToken made with `key`, or
// INVALID_ARGUMENT starting with "resume_token" for anything else: not
// base64url, the old unsigned format, an unknown version, a signature that
// does not match (forged, altered, truncated, another key), or contents out
// of range. The signature is checked in constant time before any content is
// read.
absl::StatusOr<ResumeTokenContents> OpenResumeToken(absl::string_view key,
                                                    absl::string_view token);

}  // namespace fetchd::request

#endif  // FETCHD_SERVER_REQUEST_RESUME_TOKEN_H_
