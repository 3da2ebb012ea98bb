// The output formats of fetchctl: human lines and JSON lines.
#include <charconv>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "client/client.h"
#include "google/protobuf/util/json_util.h"

namespace fetchd::client {
namespace {

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

double Micros(const google::protobuf::Duration& d) {
  return absl::ToDoubleMicroseconds(FromProto(d));
}

// The kernel's name and its arguments, for both formats.
struct KernelCall {
  std::string name;
  nlohmann::json args;
  std::string args_text;
};

KernelCall DescribeKernel(const v1::RunRequest& request) {
  switch (request.kernel_case()) {
    case v1::RunRequest::kSqrtSum: {
      const int64_t n = request.sqrt_sum().n();
      return {"sqrt_sum", {{"n", n}}, absl::StrFormat("n=%d", n)};
    }
    case v1::RunRequest::kSha256Chain: {
      const auto& k = request.sha256_chain();
      return {"sha256_chain",
              {{"data_bytes", k.data().size()}, {"rounds", k.rounds()}},
              absl::StrFormat("data=%d bytes, rounds=%d", k.data().size(),
                              k.rounds())};
    }
    case v1::RunRequest::kCountPrimes: {
      const int64_t limit = request.count_primes().limit();
      return {"count_primes",
              {{"limit", limit}},
              absl::StrFormat("limit=%d", limit)};
    }
    case v1::RunRequest::KERNEL_NOT_SET:
      break;
  }
  return {"unset", nlohmann::json::object(), ""};
}

// The shortest text that reads back as the same double.
std::string ShortestDouble(double value) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, end);
}

}  // namespace

std::string FormatComputeHuman(const v1::RunRequest& request,
                               const v1::RunResponse& response) {
  const KernelCall call = DescribeKernel(request);
  std::string value;
  switch (response.value_case()) {
    case v1::RunResponse::kSqrtSum:
      value = ShortestDouble(response.sqrt_sum());
      break;
    case v1::RunResponse::kSha256Chain:
      value = absl::BytesToHexString(response.sha256_chain());
      break;
    case v1::RunResponse::kCountPrimes:
      value = absl::StrFormat("%d", response.count_primes());
      break;
    case v1::RunResponse::VALUE_NOT_SET:
      value = "(no value)";
      break;
  }
  return absl::StrFormat("%s(%s) = %s  (queue %s, run %s)", call.name,
                         call.args_text, value,
                         absl::FormatDuration(FromProto(response.queue_wait())),
                         absl::FormatDuration(FromProto(response.run_time())));
}

std::string FormatComputeJson(const v1::RunRequest& request,
                              const v1::RunResponse& response) {
  const KernelCall call = DescribeKernel(request);
  nlohmann::json out = {{"kernel", call.name}};
  out.update(call.args);
  switch (response.value_case()) {
    case v1::RunResponse::kSqrtSum:
      out["value"] = response.sqrt_sum();
      break;
    case v1::RunResponse::kSha256Chain:
      out["value"] = absl::BytesToHexString(response.sha256_chain());
      break;
    case v1::RunResponse::kCountPrimes:
      out["value"] = response.count_primes();
      break;
    case v1::RunResponse::VALUE_NOT_SET:
      out["value"] = nullptr;
      break;
  }
  out["queue_wait_us"] = Micros(response.queue_wait());
  out["run_time_us"] = Micros(response.run_time());
  return out.dump();
}

namespace {

std::string CodeName(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace

std::string FormatFetchHuman(const v1::FetchResult& r) {
  const double ms = r.timings().total_us() / 1000.0;
  std::string line;
  if (r.error().code() == 0) {
    line = absl::StrFormat("%d %s  %d B  %.1f ms", r.http_status(), r.url(),
                           r.body_bytes(), ms);
    if (!r.processed().empty()) absl::StrAppend(&line, "  ", r.processed());
  } else {
    line = absl::StrFormat("%s %s", CodeName(r.error().code()), r.url());
    if (r.http_status() != 0)
      absl::StrAppend(&line, "  HTTP ", r.http_status());
    absl::StrAppend(&line, "  (", r.attempts(),
                    r.attempts() == 1 ? " attempt): " : " attempts): ",
                    r.error().message());
  }
  return line;
}

std::string FormatFetchJson(const v1::FetchResult& r) {
  nlohmann::json out = {
      {"index", r.index()},
      {"url", r.url()},
      {"status", r.http_status()},
      {"code", CodeName(r.error().code())},
      {"attempts", r.attempts()},
      {"bytes", r.body_bytes()},
      {"elapsed_ms", r.timings().total_us() / 1000.0},
      {"processed", r.processed()},
      {"error", r.error().message()},
  };
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string FormatPageHuman(const v1::Page& page) {
  return absl::StrCat("page ", page.index(), "  ",
                      FormatFetchHuman(page.result()));
}

std::string FormatPageJson(const v1::Page& page) {
  nlohmann::json out = nlohmann::json::parse(FormatFetchJson(page.result()));
  out["index"] = page.index();
  out["items"] = page.items_size();
  out["resume_token"] = page.resume_token();
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string FormatPageItemJson(const v1::Page& page, const std::string& item) {
  nlohmann::json value = nlohmann::json::parse(item, nullptr, false);
  if (value.is_discarded()) value = item;  // never expected: keep the text
  return nlohmann::json{{"page", page.index()}, {"item", value}}.dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

namespace {

constexpr nlohmann::json::error_handler_t kReplace =
    nlohmann::json::error_handler_t::replace;

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

// "2026-12-02T04:40:53Z"; "" for an unset timestamp.
std::string TimeText(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", FromProto(t),
                          absl::UTCTimeZone());
}

// "812 B", "4.0 KiB", "1.2 MiB".
std::string BytesText(int64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? absl::StrCat(bytes, " B")
                   : absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string CountsText(const v1::JobCounts& c) {
  return absl::StrFormat("%d/%d done, %d failed, %s", c.done(), c.total(),
                         c.failed(), BytesText(c.bytes()));
}

std::string KindName(v1::JobKind kind) {
  return absl::AsciiStrToLower(
      absl::StripPrefix(v1::JobKind_Name(kind), "JOB_KIND_"));
}

}  // namespace

std::string JobStateName(v1::JobState state) {
  return std::string(absl::StripPrefix(v1::JobState_Name(state), "JOB_STATE_"));
}

absl::StatusOr<v1::JobState> ParseJobState(const std::string& name) {
  v1::JobState state;
  if (v1::JobState_Parse(
          absl::StrCat("JOB_STATE_", absl::AsciiStrToUpper(name)), &state) &&
      state != v1::JOB_STATE_UNSPECIFIED) {
    return state;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--state=", name,
                   " is not one of queued, running, succeeded, failed, "
                   "cancelled"));
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

std::string FormatJobJson(const v1::Job& job) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(job, &out, options).ok()) {
    return nlohmann::json{{"id", job.id()}}.dump();  // never expected
  }
  return out;
}

std::string FormatJobHuman(const v1::Job& job) {
  std::string out;
  auto line = [&](absl::string_view name, absl::string_view value) {
    if (value.empty()) return;
    if (!out.empty()) out += '\n';
    absl::StrAppend(&out, absl::StrFormat("%-10s%s", name, value));
  };
  line("id", job.id());
  line("kind", KindName(job.kind()));
  line("state", JobStateName(job.state()));
  line("counts", CountsText(job.counts()));
  line("created", TimeText(job.created_at()));
  line("started", TimeText(job.started_at()));
  std::string finished = TimeText(job.finished_at());
  if (!finished.empty() && job.has_started_at()) {
    absl::StrAppend(&finished, "  (ran ",
                    absl::FormatDuration(FromProto(job.finished_at()) -
                                         FromProto(job.started_at())),
                    ")");
  }
  line("finished", finished);
  line("expires", TimeText(job.expires_at()));
  line("attempts", job.attempts() > 0 ? absl::StrCat(job.attempts()) : "");
  line("key", job.idempotency_key());
  if (job.error().code() != 0 || !job.error().message().empty()) {
    line("error", absl::StrCat(CodeName(job.error().code()), ": ",
                               job.error().message()));
  }
  if (job.has_webhook() && !job.webhook().url().empty()) {
    const v1::WebhookStatus& w = job.webhook();
    std::string text = w.url();
    if (!w.event().empty()) {
      absl::StrAppend(
          &text, "  ", w.event(), " ",
          absl::StripPrefix(v1::WebhookDeliveryState_Name(w.state()),
                            "WEBHOOK_DELIVERY_STATE_"),
          " (", w.attempts(), w.attempts() == 1 ? " attempt)" : " attempts)");
    }
    if (!w.last_error().empty()) absl::StrAppend(&text, "  ", w.last_error());
    if (const std::string next = TimeText(w.next_attempt_at()); !next.empty()) {
      absl::StrAppend(&text, "  next try ", next);
    }
    line("webhook", text);
  }
  return out;
}

std::string FormatJobLine(const v1::Job& job) {
  return absl::StrFormat("%s  %-9s  %-11s  %s  created %s", job.id(),
                         JobStateName(job.state()), KindName(job.kind()),
                         CountsText(job.counts()), TimeText(job.created_at()));
}

std::string FormatWatchEventHuman(const v1::WatchResponse& event) {
  std::string line =
      absl::StrFormat("seq %d  %s  %s", event.seq(),
                      JobStateName(event.state()), CountsText(event.counts()));
  if (event.error().code() != 0) {
    absl::StrAppend(&line, "  ", CodeName(event.error().code()), ": ",
                    event.error().message());
  }
  return line;
}

std::string FormatWatchEventJson(const v1::WatchResponse& event) {
  nlohmann::json out = {
      {"seq", event.seq()},
      {"state", JobStateName(event.state())},
      {"total", event.counts().total()},
      {"done", event.counts().done()},
      {"failed", event.counts().failed()},
      {"bytes", event.counts().bytes()},
      {"time", TimeText(event.time())},
  };
  if (event.error().code() != 0) {
    out["code"] = CodeName(event.error().code());
    out["error"] = event.error().message();
  }
  return out.dump(-1, ' ', false, kReplace);
}

namespace {

// The kernel a compute value came from, and the value, for both formats.
std::pair<std::string, nlohmann::json> ComputeValue(
    const v1::RunResponse& response) {
  switch (response.value_case()) {
    case v1::RunResponse::kSqrtSum:
      return {"sqrt_sum", response.sqrt_sum()};
    case v1::RunResponse::kSha256Chain:
      return {"sha256_chain", absl::BytesToHexString(response.sha256_chain())};
    case v1::RunResponse::kCountPrimes:
      return {"count_primes", response.count_primes()};
    case v1::RunResponse::VALUE_NOT_SET:
      break;
  }
  return {"unset", nullptr};
}

}  // namespace

std::string FormatJobResultHuman(const v1::JobResult& result) {
  switch (result.value_case()) {
    case v1::JobResult::kFetch:
      return FormatFetchHuman(result.fetch());
    case v1::JobResult::kPage:
      return FormatPageHuman(result.page());
    case v1::JobResult::kCompute: {
      const v1::RunResponse& r = result.compute();
      auto [kernel, value] = ComputeValue(r);
      const std::string text =
          r.value_case() == v1::RunResponse::kSqrtSum
              ? ShortestDouble(r.sqrt_sum())
              : (value.is_string() ? value.get<std::string>() : value.dump());
      return absl::StrFormat("%s = %s  (queue %s, run %s)", kernel, text,
                             absl::FormatDuration(FromProto(r.queue_wait())),
                             absl::FormatDuration(FromProto(r.run_time())));
    }
    case v1::JobResult::kError:
      return absl::StrCat("item ", result.index(), "  ",
                          CodeName(result.error().code()), ": ",
                          result.error().message());
    case v1::JobResult::VALUE_NOT_SET:
      break;
  }
  return absl::StrCat("item ", result.index(), "  (no value)");
}

std::string FormatJobResultJson(const v1::JobResult& result) {
  nlohmann::json out;
  switch (result.value_case()) {
    case v1::JobResult::kFetch:
      return FormatFetchJson(result.fetch());
    case v1::JobResult::kPage:
      return FormatPageJson(result.page());
    case v1::JobResult::kCompute: {
      auto [kernel, value] = ComputeValue(result.compute());
      out = {{"index", result.index()},
             {"kernel", kernel},
             {"value", value},
             {"queue_wait_us", Micros(result.compute().queue_wait())},
             {"run_time_us", Micros(result.compute().run_time())}};
      break;
    }
    case v1::JobResult::kError:
      out = {{"index", result.index()},
             {"code", CodeName(result.error().code())},
             {"error", result.error().message()}};
      break;
    case v1::JobResult::VALUE_NOT_SET:
      out = {{"index", result.index()}};
      break;
  }
  return out.dump(-1, ' ', false, kReplace);
}

std::string FormatErrorJson(const absl::Status& status) {
  return nlohmann::json{{"code", absl::StatusCodeToString(status.code())},
                        {"message", std::string(status.message())}}
      .dump();
}

}  // namespace fetchd::client
