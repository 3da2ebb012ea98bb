#include "tests/support/webhook_receiver.h"

#include <httplib.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace fetchd::testing {

WebhookReceiver::WebhookReceiver(Handler handler)
    : handler_(std::move(handler)),
      server_(std::make_unique<httplib::Server>()) {
  httplib::Server& s = *server_;
  s.set_keep_alive_timeout(1);  // stop() waits for idle keep-alive reads
  auto handle = [this](const httplib::Request& req, httplib::Response& res) {
    Request seen;
    seen.method = req.method;
    seen.path = req.path;
    for (const auto& [name, value] : req.headers) {
      seen.headers[absl::AsciiStrToLower(name)] = value;
    }
    seen.body = req.body;
    seen.at = absl::Now();
    int index = 0;
    {
      absl::MutexLock lock(&mu_);
      index = static_cast<int>(requests_.size());
      requests_.push_back(seen);
    }
    // The handler runs unlocked (it may take its time); the answer is
    // recorded after.
    const int status = handler_ ? handler_(seen, index) : 200;
    {
      absl::MutexLock lock(&mu_);
      requests_[index].status = status;
    }
    res.status = status;
    res.set_content(absl::StrCat("receiver says ", status), "text/plain");
  };
  s.Post(".*", handle);
  s.Get(".*", handle);
  port_ = s.bind_to_any_port("127.0.0.1");
  if (port_ <= 0) return;
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // stop() does nothing until the accept loop runs: wait for it.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!server_->is_running() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
}

WebhookReceiver::~WebhookReceiver() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

std::string WebhookReceiver::Url(const std::string& path) const {
  return absl::StrCat("http://127.0.0.1:", port_, path);
}

std::vector<WebhookReceiver::Request> WebhookReceiver::requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

int WebhookReceiver::count() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(requests_.size());
}

}  // namespace fetchd::testing
