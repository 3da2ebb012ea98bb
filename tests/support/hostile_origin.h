// Test support: a hostile HTTP/1.1 origin on loopback for the fault suite
// (tests/chaos, bench/chaos.sh). One thread runs a poll loop over every
// connection, so hundreds of hung or trickling connections cost one pollfd
// each, not a thread. Each connection serves one request and closes.
//
//   /hang              accepts, reads the request, never answers
//   /drip[?ms=M]       200 + Content-Length 1 MB, then 1 byte every M ms
//                      (default 1000)
//   /endless           200, chunked, an endless body (64 KB chunks)
//   /big-header        a 1 MB header line
//   /many-headers      100,000 headers
//   /loop/a, /loop/b   302 to each other, forever
//   /reset             Content-Length 1 MiB, 64 KB of it, then a TCP RST
//                      (SO_LINGER 0)
//   /deep-json         400 KB: 200,000 '[' then 200,000 ']'
//   /deep-html         2.2 MB: <html><body> and 440,000 nested <div>
//   /big[?mib=N]       an N MiB body (default 64) with Content-Length
//   anything else      404
//
// Bounded: a connection older than `max_connection_age` is closed, at most
// `max_connections` are open (more are closed on accept), and the
// destructor stops the loop and closes every socket it opened.
#ifndef FETCHD_TESTS_SUPPORT_HOSTILE_ORIGIN_H_
#define FETCHD_TESTS_SUPPORT_HOSTILE_ORIGIN_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fetchd::testing {

class HostileOrigin {
 public:
  struct Options {
    std::string address = "127.0.0.1";  // loopback only
    absl::Duration max_connection_age = absl::Seconds(60);
    int max_connections = 4096;
  };
  HostileOrigin() : HostileOrigin(Options()) {}
  explicit HostileOrigin(Options options);
  ~HostileOrigin();  // stops the loop, closes every socket, joins
  HostileOrigin(const HostileOrigin&) = delete;
  HostileOrigin& operator=(const HostileOrigin&) = delete;

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  std::string base() const;  // "http://ADDRESS:PORT"
  std::string Url(const std::string& path) const { return base() + path; }

  int open_connections() const;  // now
  int peak_connections() const;  // most open at once since ResetCounters
  int accepted() const;          // connections accepted in all
  // Requests whose path starts with `prefix` ("/hang", "/loop", ...).
  int requests(const std::string& prefix) const;
  void ResetCounters();

 private:
  struct Conn;
  void Loop();
  void Accept(std::vector<std::unique_ptr<Conn>>& conns);
  // Reads what arrived; false when the connection should close.
  bool OnReadable(Conn& c);
  // Writes what is due; false when the connection should close.
  bool OnWritable(Conn& c, absl::Time now);
  void Respond(Conn& c, const std::string& target);

  const Options options_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: the destructor wakes the loop
  int port_ = 0;
  std::atomic<bool> stop_{false};
  // Built once: the deep documents are served from shared memory.
  std::shared_ptr<const std::string> deep_json_;
  std::shared_ptr<const std::string> deep_html_;
  std::shared_ptr<const std::string> many_headers_;

  mutable absl::Mutex mu_;
  int open_ ABSL_GUARDED_BY(mu_) = 0;
  int peak_ ABSL_GUARDED_BY(mu_) = 0;
  int accepted_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, int> requests_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;
};

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_HOSTILE_ORIGIN_H_
