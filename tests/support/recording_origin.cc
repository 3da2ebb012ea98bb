#include "tests/support/recording_origin.h"

#include <httplib.h>
#include <openssl/pem.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace fetchd::testing {

std::string QueryEscape(const std::string& text) {
  return httplib::detail::encode_query_param(text);
}

RecordingOrigin::RecordingOrigin() {
  Start(std::make_unique<httplib::Server>(), /*tls=*/false);
}

RecordingOrigin::RecordingOrigin(const CertAndKey& tls) {
  // cpp-httplib takes the certificate and key as OpenSSL objects (it adds
  // its own references).
  BIO* cert_bio = BIO_new_mem_buf(tls.cert_pem.data(),
                                  static_cast<int>(tls.cert_pem.size()));
  BIO* key_bio =
      BIO_new_mem_buf(tls.key_pem.data(), static_cast<int>(tls.key_pem.size()));
  X509* cert = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
  EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
  BIO_free(cert_bio);
  BIO_free(key_bio);
  if (cert != nullptr && key != nullptr) {
    auto server = std::make_unique<httplib::SSLServer>(cert, key);
    if (server->is_valid()) Start(std::move(server), /*tls=*/true);
  }
  X509_free(cert);
  EVP_PKEY_free(key);
}

void RecordingOrigin::Start(std::unique_ptr<httplib::Server> server, bool tls) {
  server_ = std::move(server);
  tls_ = tls;
  httplib::Server& s = *server_;
  s.set_keep_alive_timeout(1);  // stop() waits for idle keep-alive reads
  s.set_pre_routing_handler(
      [this](const httplib::Request& req, httplib::Response&) {
        Seen seen;
        seen.method = req.method;
        seen.path = req.path;
        for (const auto& [name, value] : req.headers) {
          // A repeated header is joined as HTTP folds it ("a, b"), so a
          // test can tell one from two.
          std::string& kept = seen.headers[absl::AsciiStrToLower(name)];
          kept = kept.empty() ? value : absl::StrCat(kept, ", ", value);
        }
        absl::MutexLock lock(&mu_);
        seen_.push_back(std::move(seen));
        return httplib::Server::HandlerResponse::Unhandled;
      });
  s.Get("/ok", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("ok", "text/plain");
  });
  s.Get("/unavailable", [](const httplib::Request&, httplib::Response& res) {
    res.status = 503;
    res.set_content("unavailable", "text/plain");
  });
  auto redirect = [](const httplib::Request& req, httplib::Response& res) {
    int code = 302;
    if (req.has_param("code")) {
      (void)absl::SimpleAtoi(req.get_param_value("code"), &code);
    }
    res.set_redirect(req.get_param_value("url"), code);
  };
  s.Get("/redirect-to", redirect);
  s.Post("/redirect-to", redirect);
  s.Get("/next-to", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(absl::StrCat("{\"next\":\"", req.get_param_value("url"),
                                 "\",\"items\":[1]}"),
                    "application/json");
  });
  s.Get("/link-to", [](const httplib::Request& req, httplib::Response& res) {
    res.set_header("Link", absl::StrCat("<", req.get_param_value("url"),
                                        ">; rel=\"next\""));
    res.set_content("link", "text/plain");
  });
  s.Get("/last", [](const httplib::Request&, httplib::Response& res) {
    res.set_content("{\"next\":null,\"items\":[1]}", "application/json");
  });
  port_ = s.bind_to_any_port("127.0.0.1");
  if (port_ <= 0) return;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // stop() does nothing until the accept loop runs: wait for it.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!server_->is_running() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
}

RecordingOrigin::~RecordingOrigin() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string RecordingOrigin::base() const {
  return absl::StrCat(tls_ ? "https" : "http", "://127.0.0.1:", port_);
}

std::vector<RecordingOrigin::Seen> RecordingOrigin::seen() const {
  absl::MutexLock lock(&mu_);
  return seen_;
}

bool RecordingOrigin::SawHeader(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  for (const Seen& seen : seen_) {
    if (seen.headers.contains(name)) return true;
  }
  return false;
}

}  // namespace fetchd::testing
