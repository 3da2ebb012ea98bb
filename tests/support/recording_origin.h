// Test support: an HTTP or HTTPS origin (cpp-httplib) on an ephemeral
// loopback port that records the request headers it saw, for tests of what
// may and may not reach an origin (credential headers, TLS).
//
//   /ok                      200 "ok"
//   /unavailable             503 (retried by default)
//   /redirect-to?url=U[&code=C]  C (default 302) to U
//   /next-to?url=U           {"next":"U","items":[1]} (cursor: the next URL)
//   /link-to?url=U           Link: <U>; rel="next", body "link"
//   /last                    {"next":null,"items":[1]}, no Link
#ifndef FETCHD_TESTS_SUPPORT_RECORDING_ORIGIN_H_
#define FETCHD_TESTS_SUPPORT_RECORDING_ORIGIN_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "tests/support/certs.h"

namespace httplib {
class Server;
}

namespace fetchd::testing {

// `text` percent-encoded for a query parameter value (the `url=U` of the
// routes above).
std::string QueryEscape(const std::string& text);

class RecordingOrigin {
 public:
  // One request as the origin saw it; header names in lower case, a
  // repeated header's values joined with ", ".
  struct Seen {
    std::string method;
    std::string path;  // without the query
    std::map<std::string, std::string> headers;
  };

  // Plain HTTP on 127.0.0.1:<ephemeral>.
  RecordingOrigin();
  // HTTPS with this certificate and key (PEM).
  explicit RecordingOrigin(const CertAndKey& tls);
  ~RecordingOrigin();  // stops and joins
  RecordingOrigin(const RecordingOrigin&) = delete;
  RecordingOrigin& operator=(const RecordingOrigin&) = delete;

  // False when the server could not start (e.g. a bad certificate).
  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  // "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT".
  std::string base() const;
  std::string Url(const std::string& path) const { return base() + path; }

  std::vector<Seen> seen() const;
  // Whether any request carried header `name` (lower case).
  bool SawHeader(const std::string& name) const;

 private:
  void Start(std::unique_ptr<httplib::Server> server, bool tls);

  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  bool tls_ = false;
  mutable absl::Mutex mu_;
  std::vector<Seen> seen_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_RECORDING_ORIGIN_H_
