// Test support: a real HTTP/1.1 origin (cpp-httplib) on an ephemeral
// loopback port, with a route for every behaviour the fetch engine handles.
//
//   /status/{code}                     that status, body "status {code}"
//   /delay/{ms}                        200 after ms milliseconds
//   /bytes/{n}                         n bytes of 'x' (Content-Length)
//   /drip/{n}/{ms}                     n bytes, one per ms, chunked
//   /reset/{n}                         announces n bytes, sends n/2, closes
//   /headers/{n}/{bytes}               n headers X-H-i of `bytes` chars each
//   /flaky/{key}/{n}                   503 for the first n requests of key,
//   then 200 /retry-after/{key}/{n}/{s}         503 + "Retry-After: s" n times,
//   then 200 /retry-after-date/{key}/{n}/{s}    the same with an HTTP-date
//   /redirect/{n}                      302 to /redirect/{n-1}; /redirect/0 is
//   200 /redirect-to?url=U                 302 to U /html/title an HTML page
//   with a <title> /json {"a":{"b":[1,2,{"c":"x"}]},"n":null} /echo GET/POST:
//   method, X-* headers and body as JSON
//   /pn/{key}?page=N&last=L            page-number API: {"page":N,"items":[3
//     [&end=404|empty&delay=ms&flaky=K]  strings],"pad":".."}; past L an
//     [&pad=bytes]                       empty array (or 404); page K fails
//                                      twice first
//   /next-to?url=U                     {"next":"U"}
//   /cursor/{key}?cursor=cN&last=L     {"data":{"items":[..]},"next":"cN+1"}
//     [&mode=url&loop=K]                 (null on L; a relative URL with
//                                      mode=url; page K points back to 1)
//   /link/{key}/{n}?last=L             Link: rel="next" to the relative
//                                      "n+1?last=L", quoted params
//
// Counters let tests assert on what the origin saw: requests per path
// prefix, arrival times per key, the peak of concurrent requests, and the
// connections used.
#ifndef FETCHD_TESTS_SUPPORT_ORIGIN_H_
#define FETCHD_TESTS_SUPPORT_ORIGIN_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace httplib {
class Server;
}

namespace fetchd::testing {

class Origin {
 public:
  Origin();  // starts listening on 127.0.0.1:<ephemeral>
  // On another loopback address (127.0.0.2, ...): a second origin the
  // address guard can tell apart from the first.
  explicit Origin(const std::string& address);
  ~Origin();  // stops and joins

  std::string base() const;  // "http://127.0.0.1:PORT" (the address)
  std::string Url(const std::string& path) const { return base() + path; }
  int port() const { return port_; }

  int requests() const;  // all requests so far
  std::vector<absl::Time> arrivals(const std::string& key) const;
  int peak_concurrency() const;  // most requests in progress at once
  int connections() const;       // distinct client ports seen
  int in_progress() const;
  void ResetCounters();

 private:
  struct Tracker;
  const std::string address_;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<Tracker> tracker_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_ORIGIN_H_
