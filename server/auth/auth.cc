// TokenSet, IdentityLabels, Authenticator and the TLS file checks.
#include "server/auth/auth.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/auth/line_file.h"

namespace fetchd::auth {
namespace {

std::array<uint8_t, 32> Sha256(absl::string_view bytes) {
  std::array<uint8_t, 32> digest;
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         digest.data());
  return digest;
}

bool IsTokenChar(char c) { return c > ' ' && c < 0x7f; }

bool IsIdentityChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::StrContains("._:@/+-", c);
}

}  // namespace

absl::StatusOr<TokenSet> TokenSet::Parse(absl::string_view text,
                                         absl::string_view source) {
  TokenSet set;
  for (const FileLine& line : SplitLineFile(text, Comments::kWholeLine)) {
    auto bad = [&](absl::string_view why) {
      // NOTE: never the line itself: it may hold a token.
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", line.number, ": ", why));
    };
    const std::vector<absl::string_view>& fields = line.fields;
    if (fields.size() > 2) {
      return bad(
          absl::StrCat("expected \"IDENTITY TOKEN\" or \"TOKEN\", found ",
                       fields.size(), " fields"));
    }
    const absl::string_view token = fields.back();
    std::string identity = fields.size() == 2
                               ? std::string(fields[0])
                               : absl::StrCat("token-", set.entries_.size());
    if (token.size() < kMinTokenLength) {
      return bad(absl::StrCat("the token is shorter than ", kMinTokenLength,
                              " characters"));
    }
    for (char c : token) {
      if (!IsTokenChar(c)) {
        return bad("the token has a character that is not printable ASCII");
      }
    }
    if (identity.size() > 64) {
      return bad("the identity is longer than 64 characters");
    }
    for (char c : identity) {
      if (!IsIdentityChar(c)) {
        return bad(
            "the identity may only have letters, digits and ._:@/+- in it");
      }
    }
    if (identity == kAnonymous || identity == kOther) {
      return bad(absl::StrCat("the identity \"", identity, "\" is reserved"));
    }
    Entry entry{std::move(identity), Sha256(token)};
    for (const Entry& other : set.entries_) {
      if (other.digest == entry.digest) {
        return bad("the same token is on an earlier line");
      }
    }
    set.entries_.push_back(std::move(entry));
  }
  return set;
}

absl::StatusOr<TokenSet> TokenSet::Load(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileText(path, "--auth_tokens_file");
  if (!text.ok()) return text.status();
  return Parse(*text, path);
}

const std::string* TokenSet::Find(absl::string_view token) const {
  const std::array<uint8_t, 32> digest = Sha256(token);
  const std::string* found = nullptr;
  // Every entry is compared, and with no early exit, so the time does not
  // say which entry (or how much of one) matched.
  for (const Entry& entry : entries_) {
    const bool match =
        CRYPTO_memcmp(entry.digest.data(), digest.data(), digest.size()) == 0;
    found = match ? &entry.identity : found;
  }
  return found;
}

std::vector<std::string> TokenSet::identities() const {
  std::vector<std::string> names;
  for (const Entry& entry : entries_) {
    if (std::find(names.begin(), names.end(), entry.identity) == names.end()) {
      names.push_back(entry.identity);
    }
  }
  return names;
}

absl::StatusOr<absl::string_view> ParseBearer(absl::string_view authorization) {
  constexpr absl::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !absl::StartsWithIgnoreCase(authorization, kScheme)) {
    return absl::UnauthenticatedError(
        "the authorization header is not \"Bearer TOKEN\"");
  }
  absl::string_view token =
      absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  if (token.empty()) {
    return absl::UnauthenticatedError("the bearer token is empty");
  }
  return token;
}

IdentityLabels::IdentityLabels() {
  names_ = {std::string(kAnonymous), std::string(kOther)};
  slots_[kAnonymous] = kAnonymousSlot;
  slots_[kOther] = kOtherSlot;
}

int IdentityLabels::Slot(absl::string_view identity) {
  {
    absl::ReaderMutexLock lock(&mu_);
    if (auto it = slots_.find(identity); it != slots_.end()) return it->second;
    if (static_cast<int>(names_.size()) >= kMaxLabels) return kOtherSlot;
  }
  absl::MutexLock lock(&mu_);
  if (auto it = slots_.find(identity); it != slots_.end()) return it->second;
  if (static_cast<int>(names_.size()) >= kMaxLabels) return kOtherSlot;
  const int slot = static_cast<int>(names_.size());
  names_.emplace_back(identity);
  slots_.emplace(std::string(identity), slot);
  return slot;
}

std::string IdentityLabels::Name(int slot) const {
  absl::ReaderMutexLock lock(&mu_);
  if (slot < 0 || slot >= static_cast<int>(names_.size())) {
    return std::string(kOther);
  }
  return names_[slot];
}

int IdentityLabels::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return static_cast<int>(names_.size());
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Start(
    AuthOptions options) {
  std::unique_ptr<Authenticator> auth(new Authenticator(std::move(options)));
  if (!auth->tokens_required()) return auth;
  const std::string& path = auth->options_.tokens_file;
  const FileStamp stamp = Stamp(path);
  absl::StatusOr<TokenSet> tokens = TokenSet::Load(path);
  if (!tokens.ok()) return tokens.status();
  if (tokens->size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_tokens_file ", path, " has no tokens"));
  }
  // The operator's identities get their metrics labels first.
  for (const std::string& identity : tokens->identities()) {
    auth->labels_.Slot(identity);
  }
  {
    absl::MutexLock lock(&auth->mu_);
    auth->tokens_ = std::make_shared<const TokenSet>(*std::move(tokens));
    auth->stamp_ = stamp;
  }
  auth->watcher_ = std::thread([a = auth.get()] { a->Watch(); });
  return auth;
}

Authenticator::~Authenticator() {
  stop_.Notify();
  if (watcher_.joinable()) watcher_.join();
}

Authenticator::FileStamp Authenticator::Stamp(const std::string& path) {
  struct stat st;
  FileStamp stamp;
  if (stat(path.c_str(), &st) != 0) return stamp;
  stamp.dev = st.st_dev;
  stamp.ino = st.st_ino;
  stamp.size = st.st_size;
  stamp.mtime_ns =
      int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  stamp.ctime_ns =
      int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec;
  return stamp;
}

void Authenticator::Watch() {
  while (!stop_.WaitForNotificationWithTimeout(options_.poll_interval)) {
    const FileStamp now = Stamp(options_.tokens_file);
    bool changed;
    {
      absl::ReaderMutexLock lock(&mu_);
      changed = !(now == stamp_);
    }
    // Reload logs the outcome; a bad file is reported once per change.
    if (changed) Reload("file_change").IgnoreError();
  }
}

absl::Status Authenticator::Reload(absl::string_view trigger) {
  if (!tokens_required()) return absl::OkStatus();
  absl::MutexLock reload(&reload_mu_);
  const std::string& path = options_.tokens_file;
  const FileStamp stamp = Stamp(path);
  absl::StatusOr<TokenSet> tokens = TokenSet::Load(path);
  if (tokens.ok() && tokens->size() == 0) {
    tokens = absl::InvalidArgumentError(
        absl::StrCat("--auth_tokens_file ", path, " has no tokens"));
  }
  if (tokens.ok()) {
    for (const std::string& identity : tokens->identities()) {
      labels_.Slot(identity);
    }
  }
  size_t in_force;
  {
    absl::MutexLock lock(&mu_);
    stamp_ = stamp;
    if (tokens.ok()) {
      tokens_ = std::make_shared<const TokenSet>(*std::move(tokens));
    }
    in_force = tokens_->size();
  }
  if (options_.logger != nullptr) {
    if (tokens.ok()) {
      options_.logger->LogAlways(
          log::Level::kInfo,
          absl::StrFormat(
              R"("event":"auth_tokens_loaded","trigger":"%s","file":"%s","tokens":%d)",
              log::JsonEscape(trigger), log::JsonEscape(path), in_force));
    } else {
      options_.logger->LogAlways(
          log::Level::kError,
          absl::StrFormat(
              R"("event":"auth_tokens_reload_failed","trigger":"%s","error":"%s","tokens_kept":%d)",
              log::JsonEscape(trigger),
              log::JsonEscape(tokens.status().ToString()), in_force));
    }
  }
  return tokens.status();
}

size_t Authenticator::token_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return tokens_ != nullptr ? tokens_->size() : 0;
}

absl::StatusOr<Caller> Authenticator::Authenticate(
    std::optional<absl::string_view> authorization,
    absl::string_view mtls_subject) const {
  Caller caller;
  if (!tokens_required()) {
    if (mtls_subject.empty()) {
      caller.identity = std::string(kAnonymous);
      return caller;
    }
    caller.identity = std::string(mtls_subject);
    caller.label = labels_.Slot(mtls_subject);
    return caller;
  }
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        "this server needs an authorization: Bearer TOKEN header");
  }
  absl::StatusOr<absl::string_view> token = ParseBearer(*authorization);
  if (!token.ok()) return token.status();
  std::shared_ptr<const TokenSet> tokens;
  {
    absl::ReaderMutexLock lock(&mu_);
    tokens = tokens_;
  }
  const std::string* identity = tokens->Find(*token);
  if (identity == nullptr) {
    return absl::UnauthenticatedError("the bearer token is not valid");
  }
  caller.identity = *identity;
  caller.label = labels_.Slot(*identity);
  return caller;
}

namespace {

using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;

BioPtr MemBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())),
                &BIO_free);
}

}  // namespace

absl::Status CheckTlsFiles(const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both or neither");
  }
  if (files.cert.empty()) {
    if (!files.client_ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls_client_ca needs --tls_cert and --tls_key (mTLS is TLS with "
          "client certificates)");
    }
    return absl::OkStatus();
  }
  auto read = [](const std::string& path, absl::string_view flag) {
    absl::StatusOr<std::string> text = ReadFileText(path, flag);
    if (!text.ok())
      return absl::StatusOr<std::string>(
          absl::InvalidArgumentError(text.status().message()));
    return text;
  };
  absl::StatusOr<std::string> cert_pem = read(files.cert, "--tls_cert");
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = read(files.key, "--tls_key");
  if (!key_pem.ok()) return key_pem.status();

  BioPtr cert_bio = MemBio(*cert_pem);
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr), &X509_free);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_cert ", files.cert, " holds no PEM certificate"));
  }
  BioPtr key_bio = MemBio(*key_pem);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr),
      &EVP_PKEY_free);
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_key ", files.key,
                     " holds no PEM private key (or it is "
                     "encrypted)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key ", files.key,
        " is not the key of the certificate in --tls_cert ", files.cert));
  }
  if (!files.client_ca.empty()) {
    absl::StatusOr<std::string> ca_pem =
        read(files.client_ca, "--tls_client_ca");
    if (!ca_pem.ok()) return ca_pem.status();
    BioPtr ca_bio = MemBio(*ca_pem);
    std::unique_ptr<X509, decltype(&X509_free)> ca(
        PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr), &X509_free);
    if (ca == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--tls_client_ca ", files.client_ca, " holds no PEM certificate"));
    }
  }
  return absl::OkStatus();
}

}  // namespace fetchd::auth
