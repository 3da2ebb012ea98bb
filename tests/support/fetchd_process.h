// Test support: the fetchd binary as a child process on ephemeral loopback
// ports, and scraping a counter from its /metrics.
#ifndef FETCHD_TESTS_SUPPORT_FETCHD_PROCESS_H_
#define FETCHD_TESTS_SUPPORT_FETCHD_PROCESS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/support/subprocess.h"

namespace fetchd::testing {

// Starts `binary` (fetchd) with --listen and --metrics_listen on port 0 plus
// `flags`, and reads both ports from its "serving" log line. The
// destructor kills a child still running (Subprocess).
class FetchdProcess {
 public:
  FetchdProcess(const std::string& binary, std::vector<std::string> flags);

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const;
  Subprocess& process() { return *process_; }

 private:
  std::unique_ptr<Subprocess> process_;
  int port_ = 0;
  int metrics_port_ = 0;
};

// The /metrics page at 127.0.0.1:`port`; an error unless it answers 200.
absl::StatusOr<std::string> ScrapeMetrics(int port);

// The value of one sample (`name{labels}` exactly as exposed) on that
// page; NOT_FOUND if the page lacks it.
absl::StatusOr<double> ScrapeSample(int port, const std::string& sample);

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_FETCHD_PROCESS_H_
