#include "tests/support/certs.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fetchd::testing {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
using Key = std::unique_ptr<EVP_PKEY, Free>;
using Cert = std::unique_ptr<X509, Free>;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "certs: OpenSSL failed: %s\n", what);
    std::abort();
  }
}

Key NewKey() {
  Key key(EVP_EC_gen("P-256"));
  Check(key != nullptr, "EVP_EC_gen");
  return key;
}

std::string Pem(int (*write)(BIO*, void*), void* object) {
  std::unique_ptr<BIO, Free> bio(BIO_new(BIO_s_mem()));
  Check(write(bio.get(), object) == 1, "PEM write");
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string CertPem(X509* cert) {
  return Pem([](BIO* b, void* c) { return PEM_write_bio_X509(b, (X509*)c); },
             cert);
}

std::string KeyPem(EVP_PKEY* key) {
  return Pem(
      [](BIO* b, void* k) {
        return PEM_write_bio_PrivateKey(b, (EVP_PKEY*)k, nullptr, nullptr, 0,
                                        nullptr, nullptr);
      },
      key);
}

void AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  std::unique_ptr<X509_EXTENSION, Free> ext(
      X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  Check(ext != nullptr, "X509V3_EXT_conf_nid");
  Check(X509_add_ext(cert, ext.get(), -1) == 1, "X509_add_ext");
}

// A certificate for `key` named `common_name`, not yet signed; `issuer`
// null makes it self-issued.
Cert NewCert(EVP_PKEY* key, const std::string& common_name,
             absl::Duration not_before, absl::Duration not_after,
             X509* issuer) {
  Cert cert(X509_new());
  Check(cert != nullptr, "X509_new");
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  Check(RAND_bytes(serial, sizeof(serial)) == 1, "RAND_bytes");
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof(serial), nullptr);
  Check(BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get())) != nullptr,
        "serial");
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()),
                  absl::ToInt64Seconds(not_before));
  X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                  absl::ToInt64Seconds(not_after));
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(
      name, "CN", MBSTRING_UTF8,
      reinterpret_cast<const unsigned char*>(common_name.c_str()), -1, -1, 0);
  X509_set_issuer_name(
      cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name);
  Check(X509_set_pubkey(cert.get(), key) == 1, "X509_set_pubkey");
  return cert;
}

}  // namespace

TestCa::TestCa(std::string name) {
  Key key = NewKey();
  Cert cert =
      NewCert(key.get(), name, -absl::Hours(1), absl::Hours(24 * 30), nullptr);
  AddExtension(cert.get(), cert.get(), NID_basic_constraints,
               "critical,CA:TRUE");
  AddExtension(cert.get(), cert.get(), NID_key_usage,
               "critical,keyCertSign,cRLSign");
  AddExtension(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
  Check(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0, "X509_sign (CA)");
  ca_.cert_pem = CertPem(cert.get());
  ca_.key_pem = KeyPem(key.get());
}

CertAndKey TestCa::Issue(const CertOptions& options) const {
  std::unique_ptr<BIO, Free> cert_bio(
      BIO_new_mem_buf(ca_.cert_pem.data(), ca_.cert_pem.size()));
  Cert ca_cert(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  std::unique_ptr<BIO, Free> key_bio(
      BIO_new_mem_buf(ca_.key_pem.data(), ca_.key_pem.size()));
  Key ca_key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  Check(ca_cert != nullptr && ca_key != nullptr, "reading the CA back");

  Key key = NewKey();
  Cert cert = NewCert(key.get(), options.common_name, options.not_before,
                      options.not_after, ca_cert.get());
  AddExtension(cert.get(), ca_cert.get(), NID_basic_constraints,
               "critical,CA:FALSE");
  AddExtension(cert.get(), ca_cert.get(), NID_key_usage,
               "critical,digitalSignature");
  AddExtension(cert.get(), ca_cert.get(), NID_ext_key_usage,
               options.client ? "clientAuth" : "serverAuth");
  AddExtension(cert.get(), ca_cert.get(), NID_authority_key_identifier,
               "keyid");
  std::vector<std::string> names;
  for (const std::string& dns : options.dns_names) {
    names.push_back(absl::StrCat("DNS:", dns));
  }
  for (const std::string& ip : options.ip_addresses) {
    names.push_back(absl::StrCat("IP:", ip));
  }
  if (!names.empty()) {
    AddExtension(cert.get(), ca_cert.get(), NID_subject_alt_name,
                 absl::StrJoin(names, ","));
  }
  Check(X509_sign(cert.get(), ca_key.get(), EVP_sha256()) > 0, "X509_sign");
  return {CertPem(cert.get()), KeyPem(key.get())};
}

absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents) {
  const std::string temp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << contents;
    out.close();
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", temp));
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename to ", path));
  }
  return absl::OkStatus();
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = absl::StrCat(
      base != nullptr && *base != '\0' ? base : "/tmp", "/fetchd-test-XXXXXX");
  Check(mkdtemp(pattern.data()) != nullptr, "mkdtemp");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string TempDir::File(const std::string& name) const {
  return absl::StrCat(path_, "/", name);
}

}  // namespace fetchd::testing
