// Shared by the bench drivers: how long fetchd takes, after a client
// cancels an RPC, to close every transfer of it. The origin is a loopback
// listener that accepts and never answers, so only a cancel ends them.
#ifndef FETCHD_BENCH_CANCEL_PROBE_H_
#define FETCHD_BENCH_CANCEL_PROBE_H_

#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace fetchd::bench {

using Clock = std::chrono::steady_clock;

// A loopback listener that accepts connections and never answers.
class Blackhole {
 public:
  Blackhole() {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    listen(listener_, 1024);
    socklen_t len = sizeof addr;
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~Blackhole() {
    for (int fd : clients_) close(fd);
    close(listener_);
  }
  int port() const { return port_; }

  // Accepts until `n` clients have each sent a request; false on timeout.
  bool AwaitRequests(size_t n, Clock::time_point deadline) {
    std::vector<bool> sent;
    size_t with_request = 0;
    while (with_request < n && Clock::now() < deadline) {
      std::vector<pollfd> fds = {{listener_, POLLIN, 0}};
      for (int fd : clients_) fds.push_back({fd, POLLIN, 0});
      poll(fds.data(), fds.size(), 10);
      if (fds[0].revents & POLLIN) {
        clients_.push_back(accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC));
        sent.push_back(false);
      }
      for (size_t i = 1; i < fds.size(); ++i) {
        if ((fds[i].revents & POLLIN) && !sent[i - 1]) {
          char buf[4096];
          if (read(fds[i].fd, buf, sizeof buf) > 0) {
            sent[i - 1] = true;
            ++with_request;
          }
        }
      }
    }
    return with_request >= n;
  }

  // Waits until every client connection is closed by the peer.
  bool AwaitAllClosed(Clock::time_point deadline) {
    while (!clients_.empty() && Clock::now() < deadline) {
      std::vector<pollfd> fds;
      for (int fd : clients_) fds.push_back({fd, POLLIN, 0});
      poll(fds.data(), fds.size(), 1);
      std::vector<int> open;
      for (const pollfd& p : fds) {
        char buf[4096];
        if ((p.revents & (POLLIN | POLLHUP | POLLERR)) &&
            read(p.fd, buf, sizeof buf) <= 0) {
          close(p.fd);
        } else {
          open.push_back(p.fd);
        }
      }
      clients_.swap(open);
    }
    return clients_.empty();
  }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::vector<int> clients_;
};

// One server-streaming RPC under probe: Cancel() cancels it; the destructor
// drains it.
template <typename Message>
class ProbeCall {
 public:
  using Open = std::function<std::unique_ptr<grpc::ClientReader<Message>>(
      grpc::ClientContext*)>;
  explicit ProbeCall(const Open& open) : reader_(open(&context_)) {}
  ~ProbeCall() {
    Message ignored;
    while (reader_->Read(&ignored)) {
    }
    reader_->Finish();
  }
  void Cancel() { context_.TryCancel(); }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<Message>> reader_;
};

struct ProbeTimes {
  double p50_ms = 0;
  double max_ms = 0;
};

// `probes` times: open(port, context) starts an RPC whose `transfers`
// requests go to a fresh blackhole on `port`; once they have all arrived,
// the RPC is cancelled and the time until every connection is closed is
// recorded. None (after saying why on stderr) if a probe did not complete
// in 10 s.
template <typename Message>
std::optional<ProbeTimes> RunCancelProbes(
    int probes, size_t transfers,
    const std::function<std::unique_ptr<grpc::ClientReader<Message>>(
        int port, grpc::ClientContext*)>& open) {
  std::vector<double> ms;
  for (int p = 0; p < probes; ++p) {
    Blackhole hole;
    auto call =
        std::make_unique<ProbeCall<Message>>([&](grpc::ClientContext* context) {
          return open(hole.port(), context);
        });
    if (!hole.AwaitRequests(transfers,
                            Clock::now() + std::chrono::seconds(10))) {
      std::fprintf(stderr, "probe %d: requests did not all arrive\n", p);
      call->Cancel();
      return std::nullopt;
    }
    const auto cancelled = Clock::now();
    call->Cancel();
    if (!hole.AwaitAllClosed(Clock::now() + std::chrono::seconds(10))) {
      std::fprintf(stderr, "probe %d: connections still open after 10 s\n", p);
      return std::nullopt;
    }
    ms.push_back(
        std::chrono::duration<double, std::milli>(Clock::now() - cancelled)
            .count());
  }
  std::sort(ms.begin(), ms.end());
  return ProbeTimes{ms[ms.size() / 2], ms.back()};
}

}  // namespace fetchd::bench

#endif  // FETCHD_BENCH_CANCEL_PROBE_H_
