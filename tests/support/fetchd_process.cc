#include "tests/support/fetchd_process.h"

#include <httplib.h>

#include <algorithm>
#include <regex>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace fetchd::testing {

FetchdProcess::FetchdProcess(const std::string& binary,
                             std::vector<std::string> flags) {
  // Port 0 for both listeners: tests run side by side.
  std::vector<std::string> argv = {binary, "--listen=127.0.0.1:0",
                                   "--metrics_listen=127.0.0.1:0"};
  // No job store unless the test asks for one: the default would be a
  // SQLite file under /var/lib/fetchd, outside the test's temp dir.
  const bool jobs = std::any_of(flags.begin(), flags.end(), [](const auto& f) {
    return absl::StartsWith(f, "--job_store") ||
           absl::StartsWith(f, "--data_dir");
  });
  if (!jobs) argv.push_back("--job_store=none");
  argv.insert(argv.end(), flags.begin(), flags.end());
  auto process = Subprocess::Start(argv);
  EXPECT_TRUE(process.ok()) << process.status();
  if (!process.ok()) return;
  process_ = *std::move(process);
  auto err =
      process_->WaitForStderr("\"event\":\"serving\"", absl::Seconds(30));
  EXPECT_TRUE(err.ok()) << err.status();
  if (!err.ok()) return;
  std::smatch m;
  if (std::regex_search(*err, m, std::regex("\"port\":([0-9]+)"))) {
    port_ = std::stoi(m[1]);
  }
  if (std::regex_search(*err, m, std::regex("\"metrics_port\":([0-9]+)"))) {
    metrics_port_ = std::stoi(m[1]);
  }
}

std::string FetchdProcess::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

absl::StatusOr<std::string> ScrapeMetrics(int port) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(10, 0);
  client.set_read_timeout(10, 0);
  auto res = client.Get("/metrics");
  if (!res) {
    return absl::UnavailableError(
        absl::StrCat("GET /metrics: ", httplib::to_string(res.error())));
  }
  if (res->status != 200) {
    return absl::UnavailableError(
        absl::StrCat("GET /metrics: HTTP ", res->status));
  }
  return std::move(res->body);
}

absl::StatusOr<double> ScrapeSample(int port, const std::string& sample) {
  absl::StatusOr<std::string> page = ScrapeMetrics(port);
  if (!page.ok()) return page.status();
  for (absl::string_view line : absl::StrSplit(*page, '\n')) {
    if (!absl::StartsWith(line, sample) || line.size() <= sample.size() ||
        line[sample.size()] != ' ') {
      continue;
    }
    double value = 0;
    if (absl::SimpleAtod(line.substr(sample.size() + 1), &value)) return value;
  }
  return absl::NotFoundError(absl::StrCat(sample, " not on /metrics"));
}

}  // namespace fetchd::testing
