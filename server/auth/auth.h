// auth/: who is calling fetchd.
//
//   TokenSet        the bearer tokens of --auth_tokens_file and the identity
//                   each one stands for; looked up in constant time
//   IdentityLabels  a bounded table of identity names for metrics labels
//   Authenticator   the tokens file kept current (SIGHUP, or a change seen
//                   by a polling thread) and the rule that names a caller
//   CheckTlsFiles   start-up checks of the PEM files of --tls_cert,
//                   --tls_key and --tls_client_ca
//
// No gRPC types here: server/rpc/ hands in the `authorization` header and
// the verified mTLS subject, and builds the gRPC credentials itself.
#ifndef FETCHD_SERVER_AUTH_AUTH_H_
#define FETCHD_SERVER_AUTH_AUTH_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/log/log.h"

namespace fetchd::auth {

// The identity of a caller that presented no credential (no tokens file,
// no client certificate).
inline constexpr absl::string_view kAnonymous = "anonymous";
// The metrics label of identities past IdentityLabels::kMaxLabels.
inline constexpr absl::string_view kOther = "other";

// The tokens of a tokens file. The file has one token per line:
//
//   IDENTITY TOKEN   the token stands for IDENTITY
//   TOKEN            the token stands for "token-N", N its index among the
//                    file's tokens (0 for the first token line)
//
// Fields are separated by spaces or tabs; blank lines and lines whose first
// non-blank character is '#' are skipped. A token is at least
// kMinTokenLength printable ASCII characters without spaces; an identity is
// 1 to 64 characters of [A-Za-z0-9._:@/+-] and not "anonymous" or "other".
// Two lines with the same token are an error; several tokens may share one
// identity (rotation).
class TokenSet {
 public:
  static constexpr size_t kMinTokenLength = 16;

  // INVALID_ARGUMENT "SOURCE:LINE: why" for the first bad line.
  static absl::StatusOr<TokenSet> Parse(absl::string_view text,
                                        absl::string_view source);
  // Reads and parses the file at `path` (NOT_FOUND etc. if unreadable).
  static absl::StatusOr<TokenSet> Load(const std::string& path);

  // The identity `token` stands for, or null. Compares SHA-256 digests with
  // CRYPTO_memcmp against every entry, so the time taken depends on neither
  // the token's contents nor its length (beyond hashing it).
  const std::string* Find(absl::string_view token) const;

  size_t size() const { return entries_.size(); }
  // Every identity once, in file order.
  std::vector<std::string> identities() const;

 private:
  struct Entry {
    std::string identity;
    std::array<uint8_t, 32> digest;  // SHA-256 of the token
  };
  std::vector<Entry> entries_;
};

// The token of an `authorization` header value "Bearer TOKEN" (the scheme
// is case-insensitive); UNAUTHENTICATED saying what is wrong otherwise.
absl::StatusOr<absl::string_view> ParseBearer(absl::string_view authorization);

// Identity names as metrics labels, bounded: slot 0 is "anonymous", slot 1
// "other"; every other identity gets the next free slot the first time it
// is seen, until kMaxLabels, and "other" after that. Thread-safe.
class IdentityLabels {
 public:
  static constexpr int kMaxLabels = 32;
  static constexpr int kAnonymousSlot = 0;
  static constexpr int kOtherSlot = 1;

  IdentityLabels();
  // The slot of `identity` (added if there is room).
  int Slot(absl::string_view identity) ABSL_LOCKS_EXCLUDED(mu_);
  // The label of a slot returned by Slot().
  std::string Name(int slot) const ABSL_LOCKS_EXCLUDED(mu_);
  // Slots in use (2 or more).
  int size() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, int> slots_ ABSL_GUARDED_BY(mu_);
};

// Who a call is from.
struct Caller {
  std::string identity{kAnonymous};  // or a tokens-file identity, a subject
  int label = IdentityLabels::kAnonymousSlot;  // its IdentityLabels slot
};

struct AuthOptions {
  // --auth_tokens_file; empty: no token is asked for.
  std::string tokens_file;
  // How often the tokens file is checked for a change (its path is stat'ed,
  // following symlinks, so a Kubernetes Secret's symlink swap is seen).
  absl::Duration poll_interval = absl::Seconds(1);
  // Reloads are logged here (not owned; may be null).
  log::Logger* logger = nullptr;
};

// Names callers. The rule:
//   - with a tokens file, a call needs a token from it; its identity is the
//     token's;
//   - without one, the identity is the verified mTLS subject, if any, else
//     "anonymous".
class Authenticator {
 public:
  // Loads the tokens file (an error names the file and line) and starts
  // the thread that watches it.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Start(
      AuthOptions options);
  ~Authenticator();  // stops the watcher
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  bool tokens_required() const { return !options_.tokens_file.empty(); }

  // The caller, from the `authorization` header's value (nullopt if the
  // call has none) and the verified mTLS subject ("" without one); or
  // UNAUTHENTICATED. Thread-safe; cheap (one SHA-256 and a scan).
  absl::StatusOr<Caller> Authenticate(
      std::optional<absl::string_view> authorization,
      absl::string_view mtls_subject) const ABSL_LOCKS_EXCLUDED(mu_);

  // Reads the tokens file again now. On an error the tokens in force stay
  // and the error is returned. Either way it is logged, with `trigger`
  // (e.g. "SIGHUP"; the watcher says "file_change"). OK without a tokens
  // file.
  absl::Status Reload(absl::string_view trigger = "reload")
      ABSL_LOCKS_EXCLUDED(reload_mu_, mu_);

  // How many tokens are in force.
  size_t token_count() const ABSL_LOCKS_EXCLUDED(mu_);

  IdentityLabels& labels() const { return labels_; }

 private:
  explicit Authenticator(AuthOptions options) : options_(std::move(options)) {}
  void Watch();

  // The file's identity as stat(2) sees it through symlinks.
  struct FileStamp {
    uint64_t dev = 0, ino = 0;
    int64_t size = -1, mtime_ns = 0, ctime_ns = 0;
    bool operator==(const FileStamp&) const = default;
  };
  static FileStamp Stamp(const std::string& path);

  const AuthOptions options_;
  mutable IdentityLabels labels_;
  // One reload at a time (SIGHUP and the watcher may race), held across
  // stat, load and publish: an older load never publishes after a newer.
  absl::Mutex reload_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  std::shared_ptr<const TokenSet> tokens_ ABSL_GUARDED_BY(mu_);
  FileStamp stamp_ ABSL_GUARDED_BY(mu_);  // of the last load attempted
  absl::Notification stop_;
  std::thread watcher_;
};

// The PEM files of the gRPC port's TLS.
struct TlsFiles {
  std::string cert;       // --tls_cert: certificate chain, leaf first
  std::string key;        // --tls_key: its private key
  std::string client_ca;  // --tls_client_ca: roots for client certificates
};

// INVALID_ARGUMENT naming the flag and file unless: cert and key are both
// set or both empty; client_ca only with them; every file reads, parses as
// PEM, and the key matches the certificate.
absl::Status CheckTlsFiles(const TlsFiles& files);

}  // namespace fetchd::auth

#endif  // FETCHD_SERVER_AUTH_AUTH_H_
