// The output formats of fetchctl: human lines and JSON lines.
#include <charconv>
#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/client.h"

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

KernelCall DescribeKernel(const v1::ComputeRequest& request) {
  switch (request.kernel_case()) {
    case v1::ComputeRequest::kSqrtSum: {
      const int64_t n = request.sqrt_sum().n();
      return {"sqrt_sum", {{"n", n}}, absl::StrFormat("n=%d", n)};
    }
    case v1::ComputeRequest::kSha256Chain: {
      const auto& k = request.sha256_chain();
      return {"sha256_chain",
              {{"data_bytes", k.data().size()}, {"rounds", k.rounds()}},
              absl::StrFormat("data=%d bytes, rounds=%d", k.data().size(),
                              k.rounds())};
    }
    case v1::ComputeRequest::kCountPrimes: {
      const int64_t limit = request.count_primes().limit();
      return {"count_primes",
              {{"limit", limit}},
              absl::StrFormat("limit=%d", limit)};
    }
    case v1::ComputeRequest::KERNEL_NOT_SET:
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

std::string FormatComputeHuman(const v1::ComputeRequest& request,
                               const v1::ComputeResponse& response) {
  const KernelCall call = DescribeKernel(request);
  std::string value;
  switch (response.value_case()) {
    case v1::ComputeResponse::kSqrtSum:
      value = ShortestDouble(response.sqrt_sum());
      break;
    case v1::ComputeResponse::kSha256Chain:
      value = absl::BytesToHexString(response.sha256_chain());
      break;
    case v1::ComputeResponse::kCountPrimes:
      value = absl::StrFormat("%d", response.count_primes());
      break;
    case v1::ComputeResponse::VALUE_NOT_SET:
      value = "(no value)";
      break;
  }
  return absl::StrFormat("%s(%s) = %s  (queue %s, run %s)", call.name,
                         call.args_text, value,
                         absl::FormatDuration(FromProto(response.queue_wait())),
                         absl::FormatDuration(FromProto(response.run_time())));
}

std::string FormatComputeJson(const v1::ComputeRequest& request,
                              const v1::ComputeResponse& response) {
  const KernelCall call = DescribeKernel(request);
  nlohmann::json out = {{"kernel", call.name}};
  out.update(call.args);
  switch (response.value_case()) {
    case v1::ComputeResponse::kSqrtSum:
      out["value"] = response.sqrt_sum();
      break;
    case v1::ComputeResponse::kSha256Chain:
      out["value"] = absl::BytesToHexString(response.sha256_chain());
      break;
    case v1::ComputeResponse::kCountPrimes:
      out["value"] = response.count_primes();
      break;
    case v1::ComputeResponse::VALUE_NOT_SET:
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

std::string FormatErrorJson(const absl::Status& status) {
  return nlohmann::json{{"code", absl::StatusCodeToString(status.code())},
                        {"message", std::string(status.message())}}
      .dump();
}

}  // namespace fetchd::client
