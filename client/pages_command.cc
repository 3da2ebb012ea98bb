// fetchctl pages: FetchPages with a live count, one line per page (or
// item), and on Ctrl-C or an error the token that resumes the walk.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <optional>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/fetchctl.h"

ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::optional<absl::Duration>, timeout);
ABSL_DECLARE_FLAG(int, retries);

ABSL_FLAG(std::string, strategy, "page_number",
          "pages: page_number | cursor | link_header");
ABSL_FLAG(std::string, param, "",
          "pages: page_number's query parameter (default page); cursor's "
          "query parameter for the cursor (empty: the cursor is the next URL)");
ABSL_FLAG(std::string, cursor_pointer, "/next",
          "pages: cursor: JSON pointer to the next cursor or URL in the body");
ABSL_FLAG(std::string, items_pointer, "",
          "pages: JSON pointer to the page's items array (an empty array "
          "ends the walk)");
ABSL_FLAG(bool, items, false,
          "pages: print each item (needs --items_pointer) instead of pages");
ABSL_FLAG(int64_t, max_pages, 0,
          "pages: stop after N pages (0 = the server's --max_walk_pages); "
          "the resume token printed then continues");
ABSL_FLAG(std::optional<int>, prefetch, std::nullopt,
          "pages: pages fetched ahead of the reader (server default 2)");
ABSL_FLAG(std::string, resume, "",
          "pages: continue a walk from a resume token it printed");
ABSL_FLAG(std::string, stop_status, "",
          "pages: HTTP statuses that mean past the last page, e.g. 404");

namespace fetchd::client {
namespace {

std::atomic<bool> interrupted{false};

void OnInterrupt(int) { interrupted.store(true); }

}  // namespace

absl::StatusOr<v1::FetchPagesRequest> BuildPagesRequest(
    const std::string& url) {
  v1::FetchPagesRequest req;
  req.mutable_first()->set_url(url);
  const std::string strategy = absl::GetFlag(FLAGS_strategy);
  const std::string param = absl::GetFlag(FLAGS_param);
  if (strategy == "page_number") {
    req.mutable_page_number()->set_param(param);
  } else if (strategy == "cursor") {
    req.mutable_cursor()->set_pointer(absl::GetFlag(FLAGS_cursor_pointer));
    req.mutable_cursor()->set_param(param);
  } else if (strategy == "link_header") {
    req.mutable_link_header();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--strategy=", strategy,
                     " is not one of page_number, cursor, link_header"));
  }
  req.set_items_pointer(absl::GetFlag(FLAGS_items_pointer));
  if (absl::GetFlag(FLAGS_items)) req.set_emit(v1::EMIT_ITEMS);
  req.set_max_pages(absl::GetFlag(FLAGS_max_pages));
  if (const auto prefetch = absl::GetFlag(FLAGS_prefetch)) {
    req.set_prefetch(*prefetch);
  }
  req.set_resume_token(absl::GetFlag(FLAGS_resume));
  for (absl::string_view code : absl::StrSplit(absl::GetFlag(FLAGS_stop_status),
                                               ',', absl::SkipEmpty())) {
    int status = 0;
    if (!absl::SimpleAtoi(code, &status)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--stop_status: \"", code, "\" is not a number"));
    }
    req.add_stop_statuses(status);
  }
  if (const int retries = absl::GetFlag(FLAGS_retries); retries > 0) {
    req.mutable_retry()->set_max_attempts(retries + 1);
  } else if (retries < 0) {
    return absl::InvalidArgumentError("--retries must be >= 0");
  }
  if (absl::Status s = ApplyItemFlags(req.mutable_first()); !s.ok()) return s;
  req.set_drop_body(!absl::GetFlag(FLAGS_json) && !absl::GetFlag(FLAGS_items));
  return req;
}

int RunPages(const Client& client, const std::vector<std::string>& args) {
  if (args.size() != 1) return UsageError("pages needs exactly one URL");
  absl::StatusOr<v1::FetchPagesRequest> request = BuildPagesRequest(args[0]);
  if (!request.ok()) return UsageError(std::string(request.status().message()));
  const bool json = absl::GetFlag(FLAGS_json);
  const bool items = absl::GetFlag(FLAGS_items);
  const bool live = isatty(STDERR_FILENO);
  const absl::Duration rpc_timeout =
      absl::GetFlag(FLAGS_timeout).value_or(absl::Hours(1));

  struct sigaction action = {};
  action.sa_handler = &OnInterrupt;
  sigaction(SIGINT, &action, nullptr);

  int64_t pages = 0, item_count = 0;
  std::string last_token;
  const absl::Time start = absl::Now();
  absl::Time last_draw = absl::InfinitePast();
  absl::Status status = client.FetchPages(
      *request, rpc_timeout,
      [&](const v1::Page& page) {
        ++pages;
        item_count += page.items_size();
        last_token = page.resume_token();
        if (items) {
          for (const std::string& item : page.items()) {
            const std::string line =
                json ? FormatPageItemJson(page, item) : item;
            std::fwrite(line.data(), 1, line.size(), stdout);
            std::fputc('\n', stdout);
          }
        } else {
          const std::string line =
              json ? FormatPageJson(page) : FormatPageHuman(page);
          std::fwrite(line.data(), 1, line.size(), stdout);
          std::fputc('\n', stdout);
        }
        const absl::Time now = absl::Now();
        if (live && now - last_draw >= absl::Milliseconds(100)) {
          last_draw = now;
          std::fprintf(stderr, "\r%lld pages, %lld items   ",
                       static_cast<long long>(pages),
                       static_cast<long long>(item_count));
          std::fflush(stderr);
        }
      },
      [] { return interrupted.load(); });
  std::fflush(stdout);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (live) std::fputc('\n', stderr);
  if (!status.ok() && !interrupted.load()) {
    std::fprintf(stderr, "fetchctl: %s: %s\n",
                 absl::StatusCodeToString(status.code()).c_str(),
                 std::string(status.message()).c_str());
  }
  std::fprintf(stderr, "%lld pages, %lld items in %.2f s (%.0f pages/s)\n",
               static_cast<long long>(pages),
               static_cast<long long>(item_count), seconds,
               seconds > 0 ? pages / seconds : 0.0);
  // After a failure, Ctrl-C or a page cap the walk may go on from here.
  const int64_t cap = absl::GetFlag(FLAGS_max_pages);
  if ((!status.ok() || (cap > 0 && pages >= cap)) && !last_token.empty()) {
    std::fprintf(stderr, "resume with: --resume=%s\n", last_token.c_str());
  }
  if (interrupted.load()) return 130;  // as a shell reports SIGINT
  return status.ok() ? 0 : 1;
}

}  // namespace fetchd::client
