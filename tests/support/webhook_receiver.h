// Test support: a webhook receiver (cpp-httplib) on an ephemeral loopback
// port. It records every POST (headers and body) and answers with the
// status a handler picks, so tests can check signatures (with
// jobs::VerifyWebhookSignature) and script failures before a success.
#ifndef FETCHD_TESTS_SUPPORT_WEBHOOK_RECEIVER_H_
#define FETCHD_TESTS_SUPPORT_WEBHOOK_RECEIVER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace httplib {
class Server;
}

namespace fetchd::testing {

class WebhookReceiver {
 public:
  struct Request {
    std::string method;
    std::string path;
    std::map<std::string, std::string> headers;  // names in lower case
    std::string body;
    absl::Time at;
    int status = 0;  // what the receiver answered
  };
  // The status to answer `request` with; `index` counts the receiver's
  // requests from 0.
  using Handler = std::function<int(const Request& request, int index)>;

  // Plain HTTP on 127.0.0.1:<ephemeral>; every request answered 200 unless
  // `handler` says otherwise.
  explicit WebhookReceiver(Handler handler = nullptr);
  ~WebhookReceiver();  // stops and joins
  WebhookReceiver(const WebhookReceiver&) = delete;
  WebhookReceiver& operator=(const WebhookReceiver&) = delete;

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  // "http://127.0.0.1:PORT" + path.
  std::string Url(const std::string& path) const;

  std::vector<Request> requests() const ABSL_LOCKS_EXCLUDED(mu_);
  int count() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  Handler handler_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  mutable absl::Mutex mu_;
  std::vector<Request> requests_ ABSL_GUARDED_BY(mu_);
};

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_WEBHOOK_RECEIVER_H_
