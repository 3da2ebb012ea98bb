// fetchctl fetch: StreamBatchFetch with a progress bar, one line per result,
// bodies written atomically to --out_dir, and a summary.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "client/fetchctl.h"

ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::optional<absl::Duration>, timeout);

ABSL_FLAG(std::string, urls_file, "",
          "fetch: read URLs from this file, one per line ('-' = stdin; "
          "blank lines and # comments are skipped)");
ABSL_FLAG(int, concurrency, 0,
          "fetch, job submit fetch: requests in flight per RPC (0 = the "
          "server's default)");
ABSL_FLAG(int, retries, 0, "fetch: retries per item after the first attempt");
ABSL_FLAG(std::optional<absl::Duration>, item_timeout, std::nullopt,
          "fetch: per-attempt timeout of each item (default: the server's)");
ABSL_FLAG(std::string, process, "",
          "fetch: html_title | sha256 | json_validate | json_pointer:/a/b");
ABSL_FLAG(std::string, out_dir, "",
          "fetch, job results: write each body to DIR/<index> (written to a "
          "temp name, then renamed: no torn files)");
ABSL_FLAG(int, batch_size, 5000,
          "fetch: URLs per RPC; longer lists are split into several RPCs "
          "(keep it at or under the server's --max_batch_items)");

namespace fetchd::client {
namespace {

absl::StatusOr<std::vector<std::string>> ReadUrls(const std::string& path) {
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path != "-") {
    file.open(path);
    if (!file) {
      return absl::NotFoundError(absl::StrCat("cannot read --urls_file=", path,
                                              ": ", std::strerror(errno)));
    }
    in = &file;
  }
  std::vector<std::string> urls;
  std::string line;
  while (std::getline(*in, line)) {
    absl::string_view url = absl::StripAsciiWhitespace(line);
    if (url.empty() || url[0] == '#') continue;
    urls.emplace_back(url);
  }
  return urls;
}

absl::Status SetProcess(const std::string& spec, v1::Process* process) {
  if (spec == "html_title") {
    process->mutable_html_title();
  } else if (spec == "sha256") {
    process->mutable_sha256();
  } else if (spec == "json_validate") {
    process->mutable_json_validate();
  } else if (absl::StartsWith(spec, "json_pointer:")) {
    process->mutable_json_pointer()->set_pointer(
        spec.substr(strlen("json_pointer:")));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--process=", spec,
        " is not one of html_title, sha256, json_validate, json_pointer:/a/b"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyItemFlags(v1::FetchItem* item) {
  if (const std::string p = absl::GetFlag(FLAGS_process); !p.empty()) {
    if (absl::Status s = SetProcess(p, item->mutable_process()); !s.ok()) {
      return s;
    }
  }
  if (const auto t = absl::GetFlag(FLAGS_item_timeout); t.has_value()) {
    const int64_t nanos = absl::ToInt64Nanoseconds(*t);
    item->mutable_timeout()->set_seconds(nanos / 1'000'000'000);
    item->mutable_timeout()->set_nanos(
        static_cast<int32_t>(nanos % 1'000'000'000));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> CollectUrls(
    const std::vector<std::string>& args) {
  std::vector<std::string> urls = args;
  if (const std::string file = absl::GetFlag(FLAGS_urls_file); !file.empty()) {
    absl::StatusOr<std::vector<std::string>> read = ReadUrls(file);
    if (!read.ok()) return read.status();
    urls.insert(urls.end(), read->begin(), read->end());
  }
  if (urls.empty()) {
    return absl::InvalidArgumentError("no URLs: give URLs or --urls_file");
  }
  return urls;
}

template <typename BatchRequest>
absl::StatusOr<BatchRequest> BuildBatchRequest(
    const std::vector<std::string>& urls) {
  const int retries = absl::GetFlag(FLAGS_retries);
  if (retries < 0) return absl::InvalidArgumentError("--retries must be >= 0");
  BatchRequest request;
  request.set_max_concurrency(absl::GetFlag(FLAGS_concurrency));
  if (retries > 0) request.mutable_retry()->set_max_attempts(retries + 1);
  v1::FetchItem item_template;
  if (absl::Status s = ApplyItemFlags(&item_template); !s.ok()) return s;
  request.mutable_items()->Reserve(static_cast<int>(urls.size()));
  for (const std::string& url : urls) {
    v1::FetchItem* item = request.add_items();
    *item = item_template;
    item->set_url(url);
  }
  return request;
}

template absl::StatusOr<v1::BatchFetchRequest> BuildBatchRequest(
    const std::vector<std::string>& urls);
template absl::StatusOr<v1::StreamBatchFetchRequest> BuildBatchRequest(
    const std::vector<std::string>& urls);

absl::Status WriteAtomically(const std::string& dir, const std::string& name,
                             const std::string& body) {
  const std::string path = absl::StrCat(dir, "/", name);
  const std::string temp = absl::StrCat(dir, "/.", name, ".tmp");
  const int fd =
      open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("open ", temp, ": ", std::strerror(errno)));
  }
  size_t written = 0;
  while (written < body.size()) {
    const ssize_t n = write(fd, body.data() + written, body.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      unlink(temp.c_str());
      return absl::UnavailableError(
          absl::StrCat("write ", temp, ": ", std::strerror(err)));
    }
    written += static_cast<size_t>(n);
  }
  if (close(fd) != 0 || rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    unlink(temp.c_str());
    return absl::UnavailableError(
        absl::StrCat("save ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

namespace {

// The tqdm of fetchctl: "[#####.....] 1200/5000  830/s  ETA 5s" on stderr,
// redrawn at most every 100 ms, only when stderr is a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(size_t total)
      : total_(total), start_(absl::Now()), enabled_(isatty(STDERR_FILENO)) {}
  void Update(size_t done) {
    if (!enabled_) return;
    const absl::Time now = absl::Now();
    if (done < total_ && now - last_ < absl::Milliseconds(100)) return;
    last_ = now;
    const double seconds = absl::ToDoubleSeconds(now - start_);
    const double rate = seconds > 0 ? done / seconds : 0;
    constexpr int kWidth = 30;
    const int filled =
        total_ == 0 ? kWidth : static_cast<int>(kWidth * done / total_);
    std::string eta = "?";
    if (rate > 0) {
      eta = absl::FormatDuration(
          absl::Seconds(static_cast<int64_t>((total_ - done) / rate)));
    }
    std::fprintf(stderr, "\r[%s%s] %zu/%zu  %.0f/s  ETA %s   ",
                 std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, '.').c_str(), done, total_, rate,
                 eta.c_str());
    if (done == total_) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  const size_t total_;
  const absl::Time start_;
  const bool enabled_;
  absl::Time last_ = absl::InfinitePast();
};

}  // namespace

int RunFetch(const Client& client, const std::vector<std::string>& args) {
  absl::StatusOr<std::vector<std::string>> collected = CollectUrls(args);
  if (!collected.ok()) {
    return UsageError(collected.status().code() ==
                              absl::StatusCode::kInvalidArgument
                          ? "fetch needs URLs or --urls_file"
                          : std::string(collected.status().message()));
  }
  const std::vector<std::string>& urls = *collected;
  const int batch_size = absl::GetFlag(FLAGS_batch_size);
  if (batch_size < 1) return UsageError("--batch_size must be >= 1");
  const std::string out_dir = absl::GetFlag(FLAGS_out_dir);

  absl::StatusOr<v1::StreamBatchFetchRequest> all =
      BuildBatchRequest<v1::StreamBatchFetchRequest>(urls);
  if (!all.ok()) return UsageError(std::string(all.status().message()));
  v1::StreamBatchFetchRequest base = *all;
  base.clear_items();
  base.set_drop_body(out_dir.empty());  // fetchctl prints no bodies
  // --timeout bounds each RPC; fetching a long list needs more than the
  // 5 s that suits compute, so unless it is given, allow an hour.
  const absl::Duration rpc_timeout =
      absl::GetFlag(FLAGS_timeout).value_or(absl::Hours(1));

  const bool json = absl::GetFlag(FLAGS_json);
  const int width = static_cast<int>(absl::StrCat(urls.size() - 1).size());
  ProgressBar bar(urls.size());
  size_t done = 0, ok = 0;
  absl::Status rpc_status;
  const absl::Time start = absl::Now();
  for (size_t first = 0; first < urls.size() && rpc_status.ok();
       first += batch_size) {
    const size_t count = std::min<size_t>(batch_size, urls.size() - first);
    v1::StreamBatchFetchRequest request = base;
    for (size_t i = 0; i < count; ++i) {
      *request.add_items() = all->items(static_cast<int>(first + i));
    }
    rpc_status = client.StreamBatchFetch(
        request, rpc_timeout, [&](const v1::FetchResult& streamed) {
          v1::FetchResult r = streamed;
          r.set_index(static_cast<uint32_t>(first + r.index()));
          if (!out_dir.empty() && r.error().code() == 0) {
            absl::Status saved = WriteAtomically(
                out_dir, absl::StrFormat("%0*d", width, r.index()), r.body());
            if (!saved.ok()) {
              r.mutable_error()->set_code(static_cast<int>(saved.code()));
              r.mutable_error()->set_message(std::string(saved.message()));
            }
          }
          ok += r.error().code() == 0;
          ++done;
          const std::string line =
              json ? FormatFetchJson(r) : FormatFetchHuman(r);
          std::fwrite(line.data(), 1, line.size(), stdout);
          std::fputc('\n', stdout);
          bar.Update(done);
        });
  }
  std::fflush(stdout);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!rpc_status.ok()) {
    std::fprintf(stderr, "\nfetchctl: %s: %s\n",
                 absl::StatusCodeToString(rpc_status.code()).c_str(),
                 std::string(rpc_status.message()).c_str());
  }
  std::fprintf(stderr, "%zu ok, %zu failed in %.2f s (%.0f/s)\n", ok,
               urls.size() - ok, seconds, seconds > 0 ? done / seconds : 0.0);
  return ok == urls.size() && rpc_status.ok() ? 0 : 1;
}

}  // namespace fetchd::client
