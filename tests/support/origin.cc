#include "tests/support/origin.h"

#include <httplib.h>

#include <atomic>
#include <chrono>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace fetchd::testing {

struct Origin::Tracker {
  absl::Mutex mu;
  int requests ABSL_GUARDED_BY(mu) = 0;
  int in_progress ABSL_GUARDED_BY(mu) = 0;
  int peak ABSL_GUARDED_BY(mu) = 0;
  absl::flat_hash_set<int> client_ports ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, std::vector<absl::Time>> arrivals
      ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;

  // Sleeps for `d`, or less if the origin stops first.
  void Delay(absl::Duration d) {
    absl::MutexLock lock(&mu);
    mu.AwaitWithTimeout(absl::Condition(&stopping), d);
  }

  // Records the request; returns how many earlier requests `key` had.
  size_t Arrive(const std::string& key) {
    absl::MutexLock lock(&mu);
    auto& times = arrivals[key];
    times.push_back(absl::Now());
    return times.size() - 1;
  }
};

namespace {

int64_t Int(const httplib::Request& req, size_t i) {
  int64_t v = 0;
  return absl::SimpleAtoi(req.matches[i].str(), &v) ? v : 0;
}

}  // namespace

Origin::Origin() : Origin("127.0.0.1") {}

Origin::Origin(const std::string& address)
    : address_(address),
      server_(std::make_unique<httplib::Server>()),
      tracker_(std::make_unique<Tracker>()) {
  httplib::Server& s = *server_;
  Tracker* t = tracker_.get();
  // Enough handler threads for the concurrency tests (default is ~8).
  s.new_task_queue = [] { return new httplib::ThreadPool(64); };
  s.set_keep_alive_max_count(100000);
  s.set_tcp_nodelay(true);      // no delayed-ACK stalls between writes
  s.set_keep_alive_timeout(1);  // stop() waits for idle keep-alive reads
  s.set_pre_routing_handler(
      [t](const httplib::Request& req, httplib::Response&) {
        absl::MutexLock lock(&t->mu);
        ++t->requests;
        t->peak = std::max(t->peak, ++t->in_progress);
        t->client_ports.insert(req.remote_port);
        return httplib::Server::HandlerResponse::Unhandled;
      });
  s.set_post_routing_handler([t](const httplib::Request&, httplib::Response&) {
    absl::MutexLock lock(&t->mu);
    --t->in_progress;
  });

  s.Get(R"(/status/(\d+))",
        [](const httplib::Request& req, httplib::Response& res) {
          res.status = static_cast<int>(Int(req, 1));
          res.set_content(absl::StrCat("status ", res.status), "text/plain");
        });
  s.Get(R"(/delay/(\d+))",
        [t](const httplib::Request& req, httplib::Response& res) {
          t->Delay(absl::Milliseconds(Int(req, 1)));
          res.set_content("delayed", "text/plain");
        });
  s.Get(R"(/bytes/(\d+))", [](const httplib::Request& req,
                              httplib::Response& res) {
    res.set_content(std::string(Int(req, 1), 'x'), "application/octet-stream");
  });
  s.Get(R"(/drip/(\d+)/(\d+))",
        [t](const httplib::Request& req, httplib::Response& res) {
          const int64_t n = Int(req, 1), ms = Int(req, 2);
          auto sent = std::make_shared<int64_t>(0);
          res.set_chunked_content_provider(
              "application/octet-stream",
              [t, n, ms, sent](size_t, httplib::DataSink& sink) {
                if (*sent >= n) {
                  sink.done();
                  return true;
                }
                t->Delay(absl::Milliseconds(ms));
                ++*sent;
                return sink.write("d", 1);
              });
        });
  s.Get(R"(/headers/(\d+)/(\d+))",
        [](const httplib::Request& req, httplib::Response& res) {
          const std::string value(Int(req, 2), 'h');
          for (int64_t i = 0; i < Int(req, 1); ++i) {
            res.set_header(absl::StrCat("X-H-", i), value);
          }
          res.set_content("headers", "text/plain");
        });
  s.Get(R"(/reset/(\d+))",
        [](const httplib::Request& req, httplib::Response& res) {
          const int64_t n = Int(req, 1);
          res.set_content_provider(
              static_cast<size_t>(n), "application/octet-stream",
              [n](size_t offset, size_t, httplib::DataSink& sink) {
                if (static_cast<int64_t>(offset) >= n / 2)
                  return false;  // close
                const std::string half(n / 2, 'r');
                return sink.write(half.data(), half.size());
              });
        });
  s.Get(R"(/flaky/([^/]+)/(\d+))",
        [t](const httplib::Request& req, httplib::Response& res) {
          const size_t seen = t->Arrive(req.matches[1].str());
          if (static_cast<int64_t>(seen) < Int(req, 2)) {
            res.status = 503;
            res.set_content("try again", "text/plain");
          } else {
            res.set_content("finally", "text/plain");
          }
        });
  auto retry_after = [t](bool as_date) {
    return [t, as_date](const httplib::Request& req, httplib::Response& res) {
      const size_t seen = t->Arrive(req.matches[1].str());
      if (static_cast<int64_t>(seen) < Int(req, 2)) {
        res.status = 503;
        const int64_t s = Int(req, 3);
        res.set_header(
            "Retry-After",
            as_date ? absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT",
                                       absl::Now() + absl::Seconds(s + 1),
                                       absl::UTCTimeZone())
                    : absl::StrCat(s));
        res.set_content("later", "text/plain");
      } else {
        res.set_content("now", "text/plain");
      }
    };
  };
  s.Get(R"(/retry-after/([^/]+)/(\d+)/(\d+))", retry_after(false));
  s.Get(R"(/retry-after-date/([^/]+)/(\d+)/(\d+))", retry_after(true));
  s.Get(R"(/redirect/(\d+))",
        [](const httplib::Request& req, httplib::Response& res) {
          const int64_t n = Int(req, 1);
          if (n == 0) {
            res.set_content("arrived", "text/plain");
          } else {
            res.set_redirect(absl::StrCat("/redirect/", n - 1), 302);
          }
        });
  s.Get("/redirect-to",
        [](const httplib::Request& req, httplib::Response& res) {
          res.set_redirect(req.get_param_value("url"), 302);
        });
  s.Get("/html/title", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(
        "<!doctype html><html><head><meta charset=utf-8>"
        "<title> Hello &amp; welcome </title></head>"
        "<body><h1>Hi</h1><p>text</p></body></html>",
        "text/html");
  });
  s.Get("/json", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"a":{"b":[1,2,{"c":"x"}]},"n":null})",
                    "application/json");
  });
  auto echo = [](const httplib::Request& req, httplib::Response& res) {
    std::string headers;
    for (const auto& [name, value] : req.headers) {
      if (name.size() > 2 && (name[0] == 'X' || name[0] == 'x') &&
          name[1] == '-') {
        absl::StrAppend(&headers, headers.empty() ? "" : ",", "\"", name,
                        "\":\"", value, "\"");
      }
    }
    res.set_content(
        absl::StrCat("{\"method\":\"", req.method, "\",\"headers\":{", headers,
                     "},\"body\":\"", req.body, "\"}"),
        "application/json");
  };
  s.Get("/echo", echo);
  s.Post("/echo", echo);

  // Paginated APIs. Each records its arrivals under its key.
  auto param = [](const httplib::Request& req, const char* name,
                  int64_t fallback) {
    int64_t v = fallback;
    if (req.has_param(name))
      (void)absl::SimpleAtoi(req.get_param_value(name), &v);
    return v;
  };
  auto items_of = [](int64_t page) {
    return absl::StrCat("[\"", page, ".1\",\"", page, ".2\",\"", page, ".3\"]");
  };
  s.Get(R"(/pn/([^/]+))", [t, param, items_of](const httplib::Request& req,
                                               httplib::Response& res) {
    const std::string key = req.matches[1].str();
    t->Arrive(key);
    const int64_t page = param(req, "page", 0);
    if (const int64_t ms = param(req, "delay", 0); ms > 0) {
      t->Delay(absl::Milliseconds(ms));
    }
    if (page == param(req, "flaky", -1) &&
        t->Arrive(absl::StrCat(key, "/flaky")) < 2) {
      res.status = 503;
      res.set_content("try again", "text/plain");
      return;
    }
    if (page > param(req, "last", 5)) {
      if (req.get_param_value("end") == "404") {
        res.status = 404;
        res.set_content("no such page", "text/plain");
      } else {
        res.set_content(absl::StrCat("{\"page\":", page, ",\"items\":[]}"),
                        "application/json");
      }
      return;
    }
    res.set_content(absl::StrCat("{\"page\":", page,
                                 ",\"items\":", items_of(page), ",\"pad\":\"",
                                 std::string(param(req, "pad", 0), 'p'), "\"}"),
                    "application/json");
  });
  s.Get("/next-to", [](const httplib::Request& req, httplib::Response& res) {
    res.set_content(
        absl::StrCat("{\"next\":\"", req.get_param_value("url"), "\"}"),
        "application/json");
  });
  s.Get(R"(/cursor/([^/]+))", [t, param, items_of](const httplib::Request& req,
                                                   httplib::Response& res) {
    const std::string key = req.matches[1].str();
    t->Arrive(key);
    int64_t page = 1;
    if (req.has_param("cursor")) {
      (void)absl::SimpleAtoi(
          absl::string_view(req.get_param_value("cursor")).substr(1), &page);
    }
    const int64_t last = param(req, "last", 5);
    int64_t next = page + 1;
    if (page == param(req, "loop", -1)) next = 1;  // back to the start
    std::string next_json = "null";
    if (page < last) {
      next_json =
          req.get_param_value("mode") == "url"
              ? absl::StrCat("\"/cursor/", key, "?cursor=c", next,
                             "&last=", last, "&mode=url",
                             req.has_param("loop")
                                 ? "&loop=" + req.get_param_value("loop")
                                 : "",
                             "\"")
              : absl::StrCat("\"c", next, "\"");
    }
    res.set_content(absl::StrCat("{\"data\":{\"items\":", items_of(page),
                                 "},\"next\":", next_json, "}"),
                    "application/json");
  });
  s.Get(R"(/link/([^/]+)/(\d+))", [t, param](const httplib::Request& req,
                                             httplib::Response& res) {
    t->Arrive(req.matches[1].str());
    const int64_t n = Int(req, 2);
    const int64_t last = param(req, "last", 5);
    // Relative targets, quoting with commas and semicolons, rel lists.
    std::string link = absl::StrCat("</link/", req.matches[1].str(),
                                    "/1?last=", last, ">; rel=\"first\"");
    if (n < last) {
      absl::StrAppend(&link, ", <", n + 1, "?last=", last,
                      ">; title=\"a, b; \\\"c\\\"\"; rel=\"next last-seen\"");
    }
    res.set_header("Link", link);
    res.set_content(absl::StrCat("page ", n), "text/plain");
  });

  port_ = s.bind_to_any_port(address_);
  // bind_to_any_port already listens: connections queue until accepted.
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  // httplib's stop() does nothing until the accept loop runs, so a test that
  // ended before the thread got there hung in the destructor's join (seen
  // under load): wait for the loop first.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!server_->is_running() && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));
  }
}

Origin::~Origin() {
  {
    absl::MutexLock lock(&tracker_->mu);
    tracker_->stopping = true;  // wakes every /delay handler
  }
  server_->stop();
  thread_.join();
}

std::string Origin::base() const {
  return absl::StrCat("http://", address_, ":", port_);
}

int Origin::requests() const {
  absl::MutexLock lock(&tracker_->mu);
  return tracker_->requests;
}

std::vector<absl::Time> Origin::arrivals(const std::string& key) const {
  absl::MutexLock lock(&tracker_->mu);
  auto it = tracker_->arrivals.find(key);
  return it == tracker_->arrivals.end() ? std::vector<absl::Time>()
                                        : it->second;
}

int Origin::peak_concurrency() const {
  absl::MutexLock lock(&tracker_->mu);
  return tracker_->peak;
}

int Origin::connections() const {
  absl::MutexLock lock(&tracker_->mu);
  return static_cast<int>(tracker_->client_ports.size());
}

int Origin::in_progress() const {
  absl::MutexLock lock(&tracker_->mu);
  return tracker_->in_progress;
}

void Origin::ResetCounters() {
  absl::MutexLock lock(&tracker_->mu);
  tracker_->requests = 0;
  tracker_->peak = tracker_->in_progress;
  tracker_->client_ports.clear();
  tracker_->arrivals.clear();
}

}  // namespace fetchd::testing
