// fetchctl job: the Jobs service (fetchd --job_store) from the command line.
//
//   job submit fetch URL... | --urls_file=F   a batch (fetch's flags)
//   job submit pages URL                      a walk (pages' flags)
//   job submit compute KERNEL ARGS            a compute task
//       [--key=K] [--ttl=D] [--webhook=URL [--webhook_secret=S |
//       --webhook_secret_id=ID] [--webhook_progress]] [--drop_body]
//   job get ID | job watch ID [--from_seq=N] | job cancel ID | job delete ID
//   job list [--state=S] [--limit=N] | job results ID [--out_dir=DIR]
//
// Usage errors are one line on stderr and exit 2; RPC errors print
// "fetchctl: CODE: message" and exit 1.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/fetchctl.h"

ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::optional<absl::Duration>, timeout);
ABSL_DECLARE_FLAG(std::string, out_dir);
ABSL_DECLARE_FLAG(std::optional<int64_t>, limit);

ABSL_FLAG(std::string, key, "",
          "job submit: idempotency key (at most 256 bytes): submitting the "
          "same work under the same key gives back the same job");
ABSL_FLAG(std::optional<absl::Duration>, ttl, std::nullopt,
          "job submit: keep the job and its results this long after it ends "
          "(default: the server's --default_job_ttl)");
ABSL_FLAG(std::string, webhook, "",
          "job submit: POST job.completed / job.failed (signed JSON) here");
ABSL_FLAG(std::string, webhook_secret, "",
          "job submit: the webhook's signing secret (at least 16 bytes)");
ABSL_FLAG(std::string, webhook_secret_id, "",
          "job submit: the webhook's secret by its name in the server's "
          "--webhook_secrets_file (instead of --webhook_secret)");
ABSL_FLAG(bool, webhook_progress, false,
          "job submit: also POST job.progress events");
ABSL_FLAG(bool, drop_body, false,
          "job submit fetch|pages: store no bodies, only status, sizes and "
          "--process output (job results --out_dir then has nothing to write)");
ABSL_FLAG(int64_t, from_seq, 0,
          "job watch: the events after this sequence number (0: the current "
          "state first)");
ABSL_FLAG(std::string, state, "",
          "job list: only jobs in this state: queued, running, succeeded, "
          "failed or cancelled");

namespace fetchd::client {
namespace {

// One line, no usage text: a job command's usage error.
int JobUsage(const std::string& message) {
  std::fprintf(stderr, "fetchctl: job %s\n", message.c_str());
  return 2;
}

void PrintLine(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
}

// The work of `job submit KIND ARGS`, from the same flags as the live
// commands; INVALID_ARGUMENT (or NOT_FOUND for a --urls_file) otherwise.
absl::Status SetWork(const std::string& kind,
                     const std::vector<std::string>& args,
                     v1::SubmitRequest* request) {
  if (kind == "fetch") {
    absl::StatusOr<std::vector<std::string>> urls = CollectUrls(args);
    if (!urls.ok()) return urls.status();
    absl::StatusOr<v1::BatchFetchRequest> batch =
        BuildBatchRequest<v1::BatchFetchRequest>(*urls);
    if (!batch.ok()) return batch.status();
    *request->mutable_batch_fetch() = *std::move(batch);
    request->mutable_batch_fetch()->set_drop_body(
        absl::GetFlag(FLAGS_drop_body));
  } else if (kind == "pages") {
    if (args.size() != 1) {
      return absl::InvalidArgumentError("submit pages needs exactly one URL");
    }
    absl::StatusOr<v1::FetchPagesRequest> walk = BuildPagesRequest(args[0]);
    if (!walk.ok()) return walk.status();
    *request->mutable_fetch_pages() = *std::move(walk);
    // Results are read later, bodies and all: keep them unless told not to.
    request->mutable_fetch_pages()->set_drop_body(
        absl::GetFlag(FLAGS_drop_body));
  } else if (kind == "compute") {
    if (args.empty()) {
      return absl::InvalidArgumentError(
          "submit compute needs a KERNEL (sqrt_sum, count_primes, "
          "sha256_chain)");
    }
    absl::StatusOr<v1::RunRequest> compute = BuildComputeRequest(
        args[0], std::vector<std::string>(args.begin() + 1, args.end()));
    if (!compute.ok()) return compute.status();
    *request->mutable_compute() = *std::move(compute);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "submit: unknown kind \"", kind, "\" (fetch, pages, compute)"));
  }
  return absl::OkStatus();
}

// --key, --ttl and --webhook*.
absl::Status SetOptions(v1::SubmitRequest* request) {
  request->set_idempotency_key(absl::GetFlag(FLAGS_key));
  if (const auto ttl = absl::GetFlag(FLAGS_ttl); ttl.has_value()) {
    if (*ttl <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("--ttl must be > 0");
    }
    const int64_t nanos = absl::ToInt64Nanoseconds(*ttl);
    request->mutable_ttl()->set_seconds(nanos / 1'000'000'000);
    request->mutable_ttl()->set_nanos(
        static_cast<int32_t>(nanos % 1'000'000'000));
  }
  const std::string url = absl::GetFlag(FLAGS_webhook);
  const std::string secret = absl::GetFlag(FLAGS_webhook_secret);
  const std::string secret_id = absl::GetFlag(FLAGS_webhook_secret_id);
  const bool progress = absl::GetFlag(FLAGS_webhook_progress);
  if (url.empty()) {
    if (!secret.empty() || !secret_id.empty() || progress) {
      return absl::InvalidArgumentError(
          "--webhook_secret, --webhook_secret_id and --webhook_progress need "
          "--webhook=URL");
    }
    return absl::OkStatus();
  }
  if (!secret.empty() && !secret_id.empty()) {
    return absl::InvalidArgumentError(
        "give --webhook_secret or --webhook_secret_id, not both");
  }
  v1::Webhook* webhook = request->mutable_webhook();
  webhook->set_url(url);
  if (!secret.empty()) webhook->set_secret(secret);
  if (!secret_id.empty()) webhook->set_secret_id(secret_id);
  webhook->set_progress(progress);
  return absl::OkStatus();
}

int Submit(const Client& client, const std::vector<std::string>& args) {
  if (args.empty()) {
    return JobUsage("submit needs a kind: fetch, pages or compute");
  }
  v1::SubmitRequest request;
  absl::Status status =
      SetWork(args[0], std::vector<std::string>(args.begin() + 1, args.end()),
              &request);
  if (status.ok()) status = SetOptions(&request);
  if (!status.ok()) return JobUsage(std::string(status.message()));
  absl::StatusOr<v1::SubmitResponse> response = client.SubmitJob(request);
  if (!response.ok()) return RpcError(response.status());
  const v1::Job& job = response->job();
  PrintLine(absl::GetFlag(FLAGS_json) ? FormatJobJson(job) : job.id());
  if (!response->created()) {
    std::fprintf(stderr, "fetchctl: --key=%s: the job it made before (%s)\n",
                 request.idempotency_key().c_str(),
                 JobStateName(job.state()).c_str());
  }
  return 0;
}

int Get(const Client& client, const std::string& id) {
  absl::StatusOr<v1::Job> job = client.GetJob(id);
  if (!job.ok()) return RpcError(job.status());
  PrintLine(absl::GetFlag(FLAGS_json) ? FormatJobJson(*job)
                                      : FormatJobHuman(*job));
  return 0;
}

int Cancel(const Client& client, const std::string& id) {
  absl::StatusOr<v1::Job> job = client.CancelJob(id);
  if (!job.ok()) return RpcError(job.status());
  PrintLine(absl::GetFlag(FLAGS_json) ? FormatJobJson(*job)
                                      : FormatJobLine(*job));
  return 0;
}

int Delete(const Client& client, const std::string& id) {
  if (absl::Status s = client.DeleteJob(id); !s.ok()) return RpcError(s);
  PrintLine(absl::GetFlag(FLAGS_json)
                ? absl::StrCat("{\"id\":\"", id, "\",\"deleted\":true}")
                : absl::StrCat("deleted ", id));
  return 0;
}

int List(const Client& client) {
  v1::ListRequest request;
  if (const std::string state = absl::GetFlag(FLAGS_state); !state.empty()) {
    absl::StatusOr<v1::JobState> parsed = ParseJobState(state);
    if (!parsed.ok())
      return JobUsage(absl::StrCat("list: ", parsed.status().message()));
    request.set_state(*parsed);
  }
  const std::optional<int64_t> limit = absl::GetFlag(FLAGS_limit);
  if (limit.has_value() && *limit < 1) {
    return JobUsage("list: --limit must be >= 1");
  }
  constexpr int64_t kMaxPage = 1000;  // the server's cap on page_size
  if (limit.has_value()) {
    request.set_page_size(static_cast<int32_t>(std::min(*limit, kMaxPage)));
  }
  const bool json = absl::GetFlag(FLAGS_json);
  int64_t printed = 0;
  while (!limit.has_value() || printed < *limit) {
    absl::StatusOr<v1::ListResponse> page = client.ListJobs(request);
    if (!page.ok()) return RpcError(page.status());
    for (const v1::Job& job : page->jobs()) {
      if (limit.has_value() && printed == *limit) break;
      PrintLine(json ? FormatJobJson(job) : FormatJobLine(job));
      ++printed;
    }
    if (page->next_page_token().empty()) break;
    request.set_page_token(page->next_page_token());
  }
  std::fflush(stdout);
  if (!json) {
    std::fprintf(stderr, "%lld job%s\n", static_cast<long long>(printed),
                 printed == 1 ? "" : "s");
  }
  return 0;
}

// The live line of job watch on a terminal:
// "[#########.....] 1200/5000  3 failed  830/s  RUNNING".
class WatchBar {
 public:
  void Draw(const v1::WatchResponse& event) {
    const absl::Time now = absl::Now();
    const v1::JobCounts& c = event.counts();
    if (!started_) {
      started_ = true;
      first_time_ = now;
      first_done_ = c.done();
    }
    // At most 10 redraws a second; the last state always shows.
    if (!IsTerminal(event.state()) &&
        now - last_draw_ < absl::Milliseconds(100)) {
      return;
    }
    last_draw_ = now;
    const double seconds = absl::ToDoubleSeconds(now - first_time_);
    const double rate = seconds > 0 ? (c.done() - first_done_) / seconds : 0;
    constexpr int kWidth = 30;
    const int filled =
        c.total() <= 0
            ? 0
            : static_cast<int>(kWidth * std::min(c.done(), c.total()) /
                               c.total());
    std::printf("\r[%s%s] %lld/%lld  %lld failed  %.0f/s  %s   ",
                std::string(filled, '#').c_str(),
                std::string(kWidth - filled, '.').c_str(),
                static_cast<long long>(c.done()),
                static_cast<long long>(c.total()),
                static_cast<long long>(c.failed()), rate,
                JobStateName(event.state()).c_str());
    std::fflush(stdout);
  }
  void End() {
    if (started_) std::fputc('\n', stdout);
  }

 private:
  bool started_ = false;
  absl::Time first_time_;
  absl::Time last_draw_ = absl::InfinitePast();
  int64_t first_done_ = 0;
};

int Watch(const Client& client, const std::string& id) {
  const int64_t from_seq = absl::GetFlag(FLAGS_from_seq);
  if (from_seq < 0) return JobUsage("watch: --from_seq must be >= 0");
  const bool json = absl::GetFlag(FLAGS_json);
  const bool bar = !json && isatty(STDOUT_FILENO);
  // A job may run for days: the watch lasts as long as it does, unless
  // --timeout says otherwise.
  const absl::Duration timeout =
      absl::GetFlag(FLAGS_timeout).value_or(absl::Hours(24 * 30));
  WatchBar progress;
  v1::WatchResponse last;
  bool seen = false;
  absl::Status status =
      client.WatchJob(id, from_seq, timeout, [&](const v1::WatchResponse& e) {
        last = e;
        seen = true;
        if (bar) {
          progress.Draw(e);
        } else {
          PrintLine(json ? FormatWatchEventJson(e) : FormatWatchEventHuman(e));
          std::fflush(stdout);  // a pipe gets each event as it happens
        }
      });
  if (bar) progress.End();
  if (!status.ok()) {
    const int code = RpcError(status);
    if (seen) {
      std::fprintf(stderr,
                   "resume with: fetchctl job watch %s --from_seq=%lld\n",
                   id.c_str(), static_cast<long long>(last.seq()));
    }
    return code;
  }
  if (!seen || !IsTerminal(last.state())) {
    std::fprintf(stderr, "fetchctl: the watch of %s ended before the job did\n",
                 id.c_str());
    return 1;
  }
  if (bar) PrintLine(FormatWatchEventHuman(last));
  if (last.state() == v1::JOB_STATE_SUCCEEDED) return 0;
  std::fprintf(stderr, "fetchctl: job %s %s: %s: %s\n", id.c_str(),
               JobStateName(last.state()).c_str(),
               absl::StatusCodeToString(
                   static_cast<absl::StatusCode>(last.error().code()))
                   .c_str(),
               last.error().message().c_str());
  return 1;
}

bool Failed(const v1::JobResult& r) {
  if (r.has_fetch()) return r.fetch().error().code() != 0;
  if (r.has_page()) return r.page().result().error().code() != 0;
  return r.has_error();
}

int Results(const Client& client, const std::string& id) {
  const std::string out_dir = absl::GetFlag(FLAGS_out_dir);
  if (!out_dir.empty()) {
    struct stat st;
    if (stat(out_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return JobUsage(
          absl::StrCat("results: --out_dir=", out_dir, " is not a directory"));
    }
  }
  // The job first: NOT_FOUND early, and its size sets the file names'
  // width (as fetch --out_dir: 0..9, 00..99, ...).
  absl::StatusOr<v1::Job> job = client.GetJob(id);
  if (!job.ok()) return RpcError(job.status());
  const int width = static_cast<int>(
      absl::StrCat(std::max<int64_t>(job->counts().total() - 1, 0)).size());
  const bool json = absl::GetFlag(FLAGS_json);
  int64_t count = 0, failed = 0, unsaved = 0, no_body = 0;
  v1::JobState state = job->state();
  absl::Status status = client.ForEachJobResult(
      id,
      [&](const v1::JobResult& stored) {
        const v1::JobResult* result = &stored;
        v1::JobResult copy;
        const v1::FetchResult* fetched = stored.has_fetch() ? &stored.fetch()
                                         : stored.has_page()
                                             ? &stored.page().result()
                                             : nullptr;
        if (!out_dir.empty() && fetched != nullptr &&
            fetched->error().code() == 0) {
          if (fetched->body().empty() && fetched->body_bytes() > 0) {
            ++no_body;  // submitted with --drop_body (or pages --items)
          } else if (absl::Status saved = WriteAtomically(
                         out_dir,
                         absl::StrFormat("%0*d", width, stored.index()),
                         fetched->body());
                     !saved.ok()) {
            // As fetch does: the result shows why its file is missing.
            ++unsaved;
            copy = stored;
            v1::FetchResult* r = copy.has_fetch()
                                     ? copy.mutable_fetch()
                                     : copy.mutable_page()->mutable_result();
            r->mutable_error()->set_code(static_cast<int>(saved.code()));
            r->mutable_error()->set_message(std::string(saved.message()));
            result = &copy;
          }
        }
        ++count;
        failed += Failed(*result);
        PrintLine(json ? FormatJobResultJson(*result)
                       : FormatJobResultHuman(*result));
      },
      &state);
  std::fflush(stdout);
  if (!status.ok()) return RpcError(status);
  std::fprintf(stderr, "%lld results, %lld failed; job %s%s\n",
               static_cast<long long>(count), static_cast<long long>(failed),
               JobStateName(state).c_str(),
               IsTerminal(state) ? "" : " (more results to come)");
  if (no_body > 0) {
    std::fprintf(stderr,
                 "fetchctl: %lld bodies were not stored (the job was "
                 "submitted with --drop_body, or pages --items): no file "
                 "written for them\n",
                 static_cast<long long>(no_body));
  }
  return unsaved == 0 ? 0 : 1;
}

}  // namespace

int RunJob(const Client& client, const std::vector<std::string>& args) {
  if (args.empty()) {
    return JobUsage(
        "needs a subcommand: submit, get, watch, results, list, cancel, "
        "delete");
  }
  const std::string& sub = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "submit") return Submit(client, rest);
  if (sub == "list") {
    if (!rest.empty()) return JobUsage("list takes no arguments");
    return List(client);
  }
  using Command = int (*)(const Client&, const std::string&);
  Command command = nullptr;
  if (sub == "get") command = &Get;
  if (sub == "watch") command = &Watch;
  if (sub == "results") command = &Results;
  if (sub == "cancel") command = &Cancel;
  if (sub == "delete") command = &Delete;
  if (command == nullptr) {
    return JobUsage(absl::StrCat(
        "\"", sub,
        "\": unknown subcommand (submit, get, watch, results, list, cancel, "
        "delete)"));
  }
  if (rest.size() != 1) {
    return JobUsage(absl::StrCat(sub, " needs one job ID, got ", rest.size(),
                                 " arguments"));
  }
  return command(client, rest[0]);
}

}  // namespace fetchd::client
