#include "server/rpc/fetch_plan.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/rpc/convert.h"

namespace fetchd::rpc {
namespace {

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::StatusOr<fetch::RetryPolicy> RetryFromProto(
    const v1::BatchFetchRequest& request, const fetch::FetchLimits& limits) {
  fetch::RetryPolicy retry;
  if (!request.has_retry()) return retry;  // one attempt
  const v1::RetryPolicy& r = request.retry();
  retry.max_attempts = r.max_attempts() == 0 ? 1 : r.max_attempts();
  if (r.has_initial_backoff())
    retry.initial_backoff = FromProto(r.initial_backoff());
  if (r.has_max_backoff()) retry.max_backoff = FromProto(r.max_backoff());
  if (r.multiplier() != 0) retry.multiplier = r.multiplier();
  retry.jitter = !r.no_jitter();
  retry.honor_retry_after = !r.ignore_retry_after();
  if (r.retry_on_size() > 0) {
    retry.on_connect_error = retry.on_timeout = retry.on_5xx = retry.on_429 =
        false;
    for (int on : r.retry_on()) {
      switch (on) {
        case v1::CONNECT_ERROR:
          retry.on_connect_error = true;
          break;
        case v1::TIMEOUT:
          retry.on_timeout = true;
          break;
        case v1::HTTP_5XX:
          retry.on_5xx = true;
          break;
        case v1::HTTP_429:
          retry.on_429 = true;
          break;
        default:
          return absl::InvalidArgumentError(
              absl::StrCat("retry.retry_on has unknown value ", on));
      }
    }
  }
  retry.on_curl_codes.assign(r.curl_codes().begin(), r.curl_codes().end());
  if (absl::Status s = fetch::ValidateRetryPolicy(retry, limits); !s.ok()) {
    return s;
  }
  return retry;
}

absl::StatusOr<process::Processor> ProcessorFromProto(const v1::Process& p) {
  using Kind = process::Processor::Kind;
  process::Processor out;
  switch (p.kind_case()) {
    case v1::Process::kHtmlTitle:
      out.kind = Kind::kHtmlTitle;
      break;
    case v1::Process::kSha256:
      out.kind = Kind::kSha256;
      break;
    case v1::Process::kJsonPointer:
      out.kind = Kind::kJsonPointer;
      out.pointer = p.json_pointer().pointer();
      break;
    case v1::Process::kJsonValidate:
      out.kind = Kind::kJsonValidate;
      break;
    case v1::Process::KIND_NOT_SET:
      break;
  }
  if (absl::Status s = process::ValidateProcessor(out); !s.ok()) return s;
  return out;
}

fetch::Method MethodFromProto(v1::Method m) {
  switch (m) {
    case v1::HEAD:
      return fetch::Method::kHead;
    case v1::POST:
      return fetch::Method::kPost;
    default:
      return fetch::Method::kGet;
  }
}

}  // namespace

absl::StatusOr<BatchPlan> PlanBatch(const v1::BatchFetchRequest& request,
                                    const FetchConfig& config,
                                    absl::Time rpc_deadline) {
  const fetch::FetchLimits& limits = config.engine.limits;
  const int n = request.items_size();
  if (n == 0) return absl::InvalidArgumentError("items is empty");
  if (n > config.max_batch_items) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "items has ", n, " entries; the limit is ", config.max_batch_items,
        " (--max_batch_items): split the batch"));
  }
  BatchPlan plan;
  plan.item_count = n;
  plan.drop_body = request.drop_body();
  const int concurrency = request.max_concurrency() == 0
                              ? config.default_concurrency
                              : request.max_concurrency();
  if (concurrency < 1 || concurrency > config.max_concurrency) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_concurrency must be between 1 and ", config.max_concurrency,
        " (--max_concurrency), got ", request.max_concurrency()));
  }
  plan.options.max_concurrency = concurrency;
  plan.options.fail_fast = request.fail_fast();
  if (rpc_deadline != absl::InfiniteFuture()) {
    plan.options.deadline = rpc_deadline - config.deadline_reserve;
  }
  const int64_t max_body = request.max_body_bytes() == 0
                               ? config.default_max_body_bytes
                               : request.max_body_bytes();
  if (max_body < 1 || max_body > limits.max_body_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_body_bytes must be between 1 and ", limits.max_body_bytes,
        " (--max_body_bytes), got ", request.max_body_bytes()));
  }
  const int redirects = request.has_max_redirects()
                            ? request.max_redirects()
                            : config.default_max_redirects;
  if (redirects < 0 || redirects > limits.max_redirects) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_redirects must be between 0 and ", limits.max_redirects,
        " (--max_redirects), got ", redirects));
  }
  absl::StatusOr<fetch::RetryPolicy> retry = RetryFromProto(request, limits);
  if (!retry.ok()) return retry.status();
  std::vector<std::string> keep_headers;
  for (const std::string& name : request.response_headers()) {
    keep_headers.push_back(absl::AsciiStrToLower(name));
  }
  plan.specs.reserve(n);
  plan.request_index.reserve(n);
  plan.processors.reserve(n);
  for (int i = 0; i < n; ++i) {
    const v1::FetchItem& item = request.items(i);
    absl::StatusOr<process::Processor> processor =
        ProcessorFromProto(item.process());
    if (!processor.ok()) {
      plan.rejected.push_back(
          {static_cast<uint32_t>(i), item.url(), processor.status()});
      continue;
    }
    fetch::FetchSpec spec;
    if (item.has_timeout()) {
      spec.timeout = FromProto(item.timeout());
      if (spec.timeout <= absl::ZeroDuration()) {
        plan.rejected.push_back(
            {static_cast<uint32_t>(i), item.url(),
             absl::InvalidArgumentError("timeout must be above 0")});
        continue;
      }
    } else {
      spec.timeout = config.default_item_timeout;
    }
    spec.url = item.url();
    spec.method = MethodFromProto(item.method());
    for (const v1::Header& h : item.headers()) {
      spec.headers.emplace_back(h.name(), h.value());
    }
    spec.body = item.body();
    spec.max_body_bytes = max_body;
    spec.max_redirects = redirects;
    spec.retry = *retry;
    spec.keep_headers = keep_headers;
    plan.specs.push_back(std::move(spec));
    plan.request_index.push_back(i);
    plan.processors.push_back(*std::move(processor));
  }
  return plan;
}

void ToProtoResult(uint32_t index, const std::string& url,
                   fetch::FetchResult result,
                   const absl::StatusOr<std::string>* processed, bool drop_body,
                   v1::FetchResult* out) {
  out->set_index(index);
  out->set_url(url);
  out->set_final_url(std::move(result.final_url));
  out->set_http_status(result.http_status);
  for (auto& [name, value] : result.headers) {
    v1::Header* h = out->add_headers();
    h->set_name(std::move(name));
    h->set_value(std::move(value));
  }
  out->set_body_bytes(static_cast<int64_t>(result.body.size()));
  if (!drop_body) out->set_body(std::move(result.body));
  out->set_attempts(result.attempts);
  v1::Timings* t = out->mutable_timings();
  t->set_dns_us(absl::ToInt64Microseconds(result.timings.dns));
  t->set_connect_us(absl::ToInt64Microseconds(result.timings.connect));
  t->set_tls_us(absl::ToInt64Microseconds(result.timings.tls));
  t->set_first_byte_us(absl::ToInt64Microseconds(result.timings.first_byte));
  t->set_total_us(absl::ToInt64Microseconds(result.timings.total));
  absl::Status status = std::move(result.status);
  if (status.ok() && processed != nullptr) {
    if (processed->ok()) {
      out->set_processed(**processed);
    } else {
      status = processed->status();
    }
  }
  if (!status.ok()) {
    out->mutable_error()->set_code(static_cast<int>(status.code()));
    out->mutable_error()->set_message(std::string(status.message()));
  }
}

}  // namespace fetchd::rpc
