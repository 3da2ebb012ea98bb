// Test support: X.509 certificates made with OpenSSL at test time (a CA and
// the certificates it signs, EC P-256), so no key material is committed, and
// a temporary directory to put them in.
#ifndef FETCHD_TESTS_SUPPORT_CERTS_H_
#define FETCHD_TESTS_SUPPORT_CERTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fetchd::testing {

struct CertOptions {
  std::string common_name = "localhost";
  std::vector<std::string> dns_names;     // subjectAltName DNS entries
  std::vector<std::string> ip_addresses;  // subjectAltName IPs ("127.0.0.1")
  absl::Duration not_before = -absl::Hours(1);  // relative to now
  absl::Duration not_after = absl::Hours(24);   // negative: already expired
  bool client = false;  // extendedKeyUsage clientAuth instead of serverAuth
};

struct CertAndKey {
  std::string cert_pem;
  std::string key_pem;
};

// A certificate authority made in memory. Each instance has its own key, so
// two TestCa objects do not trust each other's certificates.
class TestCa {
 public:
  explicit TestCa(std::string name = "fetchd test CA");

  const std::string& cert_pem() const { return ca_.cert_pem; }
  // A leaf certificate signed by this CA. Aborts the test binary on an
  // OpenSSL failure (a broken test setup, not a condition under test).
  CertAndKey Issue(const CertOptions& options) const;

 private:
  CertAndKey ca_;
};

// Writes `contents` to `path` atomically: a temp file beside it, then a
// rename, so a watcher never sees half a file.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents);

// A fresh directory under $TMPDIR (or /tmp), removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string File(const std::string& name) const;

 private:
  std::string path_;
};

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_CERTS_H_
