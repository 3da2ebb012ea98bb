// PlanBatch, PlanWalk, ResumeToken and ToProtoResult (request.h).
#include <openssl/evp.h>

#include <algorithm>
#include <initializer_list>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/request/request.h"
#include "server/request/resume_token.h"

namespace fetchd::request {
namespace {

// Caps on the request's list fields (#16), after de-duplication: each is
// copied into every item, so an unbounded list multiplies by the batch.
constexpr int kMaxResponseHeaders = 64;  // response_headers
constexpr int kMaxCurlCodes = 32;        // retry.curl_codes
constexpr int kMaxStopStatuses = 32;     // stop_statuses (walks)
// All response_headers names together: the list is copied into every item
// of a batch (up to --max_batch_items), so its bytes are multiplied too.
constexpr size_t kMaxResponseHeaderNameBytes = 2048;

// `values` without repeats, in first-seen order; RESOURCE_EXHAUSTED naming
// `field` and `limit` when more than `limit` distinct ones remain.
template <typename T>
absl::Status DedupAndCap(std::vector<T>& values, absl::string_view field,
                         int limit) {
  std::vector<T> distinct;
  for (T& v : values) {
    if (std::find(distinct.begin(), distinct.end(), v) != distinct.end()) {
      continue;
    }
    if (static_cast<int>(distinct.size()) == limit) {
      return absl::ResourceExhaustedError(
          absl::StrCat(field, " has more than ", limit,
                       " distinct entries; the limit is ", limit));
    }
    distinct.push_back(std::move(v));
  }
  values = std::move(distinct);
  return absl::OkStatus();
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::StatusOr<fetch::RetryPolicy> RetryFromProto(
    bool has_retry, const v1::RetryPolicy& r,
    const fetch::FetchLimits& limits) {
  fetch::RetryPolicy retry;
  if (!has_retry) return retry;  // one attempt
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
        case v1::RETRY_ON_CONNECT_ERROR:
          retry.on_connect_error = true;
          break;
        case v1::RETRY_ON_TIMEOUT:
          retry.on_timeout = true;
          break;
        case v1::RETRY_ON_HTTP_5XX:
          retry.on_5xx = true;
          break;
        case v1::RETRY_ON_HTTP_429:
          retry.on_429 = true;
          break;
        default:
          return absl::InvalidArgumentError(
              absl::StrCat("retry.retry_on has unknown value ", on));
      }
    }
  }
  retry.on_curl_codes.assign(r.curl_codes().begin(), r.curl_codes().end());
  if (absl::Status s =
          DedupAndCap(retry.on_curl_codes, "retry.curl_codes", kMaxCurlCodes);
      !s.ok()) {
    return s;
  }
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
    case v1::METHOD_HEAD:
      return fetch::Method::kHead;
    case v1::METHOD_POST:
      return fetch::Method::kPost;
    default:
      return fetch::Method::kGet;
  }
}

// What every item of a request shares: body cap, redirects, retries and the
// headers to keep.
struct Shared {
  int64_t max_body = 0;
  int redirects = 0;
  fetch::RetryPolicy retry;
  std::vector<std::string> keep_headers;
  bool allow_cross_origin = false;
};

template <typename Request>
absl::StatusOr<Shared> SharedFromProto(const Request& request,
                                       const FetchConfig& config) {
  const fetch::FetchLimits& limits = config.engine.limits;
  Shared shared;
  shared.max_body = request.max_body_bytes() == 0
                        ? config.default_max_body_bytes
                        : request.max_body_bytes();
  if (shared.max_body < 1 || shared.max_body > limits.max_body_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_body_bytes must be between 1 and ", limits.max_body_bytes,
        " (--max_body_bytes), got ", request.max_body_bytes()));
  }
  shared.redirects = request.has_max_redirects() ? request.max_redirects()
                                                 : config.default_max_redirects;
  if (shared.redirects < 0 || shared.redirects > limits.max_redirects) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_redirects must be between 0 and ", limits.max_redirects,
        " (--max_redirects), got ", shared.redirects));
  }
  absl::StatusOr<fetch::RetryPolicy> retry =
      RetryFromProto(request.has_retry(), request.retry(), limits);
  if (!retry.ok()) return retry.status();
  shared.retry = *std::move(retry);
  for (const std::string& name : request.response_headers()) {
    shared.keep_headers.push_back(absl::AsciiStrToLower(name));
  }
  if (absl::Status s = DedupAndCap(shared.keep_headers, "response_headers",
                                   kMaxResponseHeaders);
      !s.ok()) {
    return s;
  }
  size_t name_bytes = 0;
  for (const std::string& name : shared.keep_headers) name_bytes += name.size();
  if (name_bytes > kMaxResponseHeaderNameBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("response_headers has ", name_bytes,
                     " bytes of distinct names; the limit is ",
                     kMaxResponseHeaderNameBytes));
  }
  shared.allow_cross_origin = request.allow_cross_origin();
  return shared;
}

// One item's spec, or why it cannot run (INVALID_ARGUMENT naming the
// field).
absl::StatusOr<fetch::FetchSpec> SpecFromItem(const v1::FetchItem& item,
                                              const Shared& shared,
                                              const FetchConfig& config) {
  fetch::FetchSpec spec;
  if (item.has_timeout()) {
    spec.timeout = FromProto(item.timeout());
    if (spec.timeout <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("timeout must be above 0");
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
  spec.max_body_bytes = shared.max_body;
  spec.max_redirects = shared.redirects;
  spec.retry = shared.retry;
  spec.keep_headers = shared.keep_headers;
  spec.allow_cross_origin = shared.allow_cross_origin;
  return spec;
}

absl::Time EngineDeadline(absl::Time deadline, const FetchConfig& config) {
  return deadline == absl::InfiniteFuture()
             ? deadline
             : deadline - config.deadline_reserve;
}

}  // namespace

template <typename BatchRequest>
absl::StatusOr<BatchPlan> PlanBatch(const BatchRequest& request,
                                    const FetchConfig& config, Caller caller,
                                    absl::Time deadline) {
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
  // One request may not ask for more transfers than the whole server runs
  // (#16); the default is cut to fit rather than refused.
  const int inflight = config.engine.max_inflight;
  const int concurrency = request.max_concurrency() == 0
                              ? std::min(config.default_concurrency, inflight)
                              : request.max_concurrency();
  if (concurrency < 1 || concurrency > config.max_concurrency) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_concurrency must be between 1 and ", config.max_concurrency,
        " (--max_concurrency), got ", request.max_concurrency()));
  }
  if (concurrency > inflight) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_concurrency must be at most ", inflight,
        " (--max_inflight_fetches, the transfers the whole server runs at "
        "once), got ",
        concurrency));
  }
  plan.options.max_concurrency = concurrency;
  plan.options.fail_fast = request.fail_fast();
  plan.options.deadline = EngineDeadline(deadline, config);
  plan.options.identity = std::move(caller.identity);
  absl::StatusOr<Shared> shared = SharedFromProto(request, config);
  if (!shared.ok()) return shared.status();
  plan.specs.reserve(n);
  plan.request_index.reserve(n);
  plan.processors.reserve(n);
  for (int i = 0; i < n; ++i) {
    const v1::FetchItem& item = request.items(i);
    absl::StatusOr<process::Processor> processor =
        ProcessorFromProto(item.process());
    absl::StatusOr<fetch::FetchSpec> spec =
        processor.ok() ? SpecFromItem(item, *shared, config)
                       : processor.status();
    if (!spec.ok()) {
      plan.rejected.push_back(
          {static_cast<uint32_t>(i), item.url(), spec.status()});
      continue;
    }
    plan.specs.push_back(*std::move(spec));
    plan.request_index.push_back(i);
    plan.processors.push_back(*std::move(processor));
  }
  return plan;
}

template absl::StatusOr<BatchPlan> PlanBatch(const v1::BatchFetchRequest&,
                                             const FetchConfig&, Caller,
                                             absl::Time);
template absl::StatusOr<BatchPlan> PlanBatch(const v1::StreamBatchFetchRequest&,
                                             const FetchConfig&, Caller,
                                             absl::Time);

namespace {

// SHA-256 (all 256 bits, hex) over the fields, each length-prefixed so
// that no two different field lists encode alike: a token signed for one
// walk cannot be replayed onto another (a 64-bit FNV could be made to
// collide). Stable across processes and replicas (a token made by one
// fetchd resumes on another).
std::string Fingerprint(std::initializer_list<absl::string_view> fields) {
  std::string text = "fetchd walk v2";
  for (absl::string_view field : fields) {
    absl::StrAppend(&text, "\n", field.size(), ":", field);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(),
                 nullptr) != 1) {
    length = 0;  // no fingerprint matches an empty one but another empty
  }
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(digest), static_cast<size_t>(length)));
}

// The walk a signed token resumes: its fingerprint and strategy must be
// this request's.
absl::StatusOr<fetch::WalkPosition> PositionFromToken(
    const std::string& key, const std::string& token,
    const std::string& fingerprint, fetch::PageStrategy::Kind strategy) {
  absl::StatusOr<ResumeTokenContents> contents = OpenResumeToken(key, token);
  if (!contents.ok()) return contents.status();
  if (contents->strategy != strategy) {
    return absl::InvalidArgumentError(absl::StrCat(
        "resume_token belongs to a ", PageStrategyName(contents->strategy),
        " walk; this call asks for ", PageStrategyName(strategy)));
  }
  if (contents->fingerprint != fingerprint) {
    return absl::InvalidArgumentError(
        "resume_token belongs to another walk: first.url, the strategy and "
        "items_pointer must be the same as in the call that made it");
  }
  return std::move(contents->next);
}

absl::StatusOr<fetch::PageStrategy> StrategyFromProto(
    const v1::FetchPagesRequest& request, const FetchConfig& config) {
  fetch::PageStrategy s;
  switch (request.strategy_case()) {
    case v1::FetchPagesRequest::kPageNumber: {
      const v1::PageNumber& p = request.page_number();
      s.kind = fetch::PageStrategy::Kind::kPageNumber;
      s.param = p.param().empty() ? "page" : p.param();
      s.first_page = p.has_first() ? p.first() : 1;
      s.step = p.has_step() ? p.step() : 1;
      break;
    }
    case v1::FetchPagesRequest::kCursor:
      s.kind = fetch::PageStrategy::Kind::kCursor;
      s.cursor_pointer = request.cursor().pointer();
      s.param = request.cursor().param();
      break;
    case v1::FetchPagesRequest::kLinkHeader:
      s.kind = fetch::PageStrategy::Kind::kLinkHeader;
      s.param.clear();
      break;
    case v1::FetchPagesRequest::STRATEGY_NOT_SET:
      return absl::InvalidArgumentError(
          "strategy is not set: page_number, cursor or link_header");
  }
  s.items_pointer = request.items_pointer();
  switch (request.emit()) {
    case v1::EMIT_UNSPECIFIED:
    case v1::EMIT_PAGES:
      break;
    case v1::EMIT_ITEMS:
      s.split_items = true;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("emit has unknown value ", request.emit()));
  }
  s.stop_statuses.assign(request.stop_statuses().begin(),
                         request.stop_statuses().end());
  if (absl::Status status =
          DedupAndCap(s.stop_statuses, "stop_statuses", kMaxStopStatuses);
      !status.ok()) {
    return status;
  }
  if (request.max_pages() < 0 || request.max_pages() > config.max_walk_pages) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_pages must be between 0 and ", config.max_walk_pages,
                     " (--max_walk_pages), got ", request.max_pages()));
  }
  s.max_pages =
      request.max_pages() == 0 ? config.max_walk_pages : request.max_pages();
  if (absl::Status status = fetch::ValidatePageStrategy(s); !status.ok()) {
    return status;
  }
  return s;
}

}  // namespace

absl::StatusOr<WalkPlan> PlanWalk(const v1::FetchPagesRequest& request,
                                  const FetchConfig& config, Caller caller,
                                  absl::Time deadline) {
  if (!request.has_first() || request.first().url().empty()) {
    return absl::InvalidArgumentError("first.url is empty");
  }
  WalkPlan plan;
  absl::StatusOr<fetch::PageStrategy> strategy =
      StrategyFromProto(request, config);
  if (!strategy.ok()) return strategy.status();
  plan.strategy = *std::move(strategy);
  absl::StatusOr<process::Processor> processor =
      ProcessorFromProto(request.first().process());
  if (!processor.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("first.", processor.status().message()));
  }
  plan.processor = *std::move(processor);
  if (plan.strategy.split_items &&
      plan.processor.kind != process::Processor::Kind::kNone) {
    return absl::InvalidArgumentError(
        "first.process cannot be combined with emit = EMIT_ITEMS (each page's "
        "body is split into items)");
  }
  absl::StatusOr<Shared> shared = SharedFromProto(request, config);
  if (!shared.ok()) return shared.status();
  absl::StatusOr<fetch::FetchSpec> first =
      SpecFromItem(request.first(), *shared, config);
  if (first.ok()) {
    if (absl::Status s = fetch::ValidateFetchSpec(*first, config.engine.limits);
        !s.ok()) {
      first = s;
    }
  }
  if (!first.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("first.", first.status().message()));
  }
  plan.first = *std::move(first);
  const int prefetch =
      request.has_prefetch() ? request.prefetch() : config.default_prefetch;
  if (prefetch < 1 || prefetch > config.max_prefetch) {
    return absl::InvalidArgumentError(
        absl::StrCat("prefetch must be between 1 and ", config.max_prefetch,
                     " (--max_prefetch), got ", prefetch));
  }
  // What a stalled reader makes the walk hold: bounded like a stream's
  // unsent bodies.
  if (prefetch * plan.first.max_body_bytes > config.max_response_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefetch (", prefetch, ") x max_body_bytes (",
        plan.first.max_body_bytes, ") must be at most ",
        config.max_response_bytes,
        " (--max_response_bytes): a walk may hold that many pages"));
  }
  plan.options.prefetch = prefetch;
  plan.options.deadline = EngineDeadline(deadline, config);
  plan.options.identity = std::move(caller.identity);
  plan.drop_body = request.drop_body();
  const fetch::PageStrategy& s = plan.strategy;
  plan.fingerprint =
      Fingerprint({plan.first.url, PageStrategyName(s.kind), s.param,
                   absl::StrCat(s.first_page), absl::StrCat(s.step),
                   s.cursor_pointer, s.items_pointer});
  if (request.resume_token().empty()) {
    plan.from = fetch::Paginator(s, plan.first.url).StartPosition();
  } else {
    absl::StatusOr<fetch::WalkPosition> from =
        PositionFromToken(config.resume_token_key, request.resume_token(),
                          plan.fingerprint, s.kind);
    if (!from.ok()) return from.status();
    if (!from->done()) {  // signed, but checked like any URL all the same
      fetch::FetchSpec next = plan.first;
      next.url = from->next_url;
      if (absl::Status s = fetch::ValidateFetchSpec(next, config.engine.limits);
          !s.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("resume_token: its next page's ", s.message()));
      }
    }
    plan.from = *std::move(from);
  }
  return plan;
}

std::string ResumeToken(const FetchConfig& config, const WalkPlan& plan,
                        const fetch::WalkPosition& next) {
  return SignResumeToken(config.resume_token_key,
                         {.fingerprint = plan.fingerprint,
                          .strategy = plan.strategy.kind,
                          .next = next});
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

}  // namespace fetchd::request
