// Webhook signatures, the secrets file, event bodies and the sender.
#include "server/jobs/webhook.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "server/auth/line_file.h"

namespace fetchd::jobs {
namespace {

constexpr absl::string_view kSecretsFlag = "--webhook_secrets_file";

// Lower-case hex HMAC-SHA256(secret, "<t>.<body>").
std::string Hmac(absl::string_view secret, int64_t unix_seconds,
                 absl::string_view body) {
  const std::string message = absl::StrCat(unix_seconds, ".", body);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(),
       digest, &length);
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(digest), static_cast<size_t>(length)));
}

bool IsIdChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
         absl::StrContains("._:@/+-", c);
}

bool IsSecretChar(char c) { return c > ' ' && c < 0x7f; }

std::string Rfc3339OrEmpty(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return "";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", t, absl::UTCTimeZone());
}

absl::string_view StateName(State state) {
  switch (state) {
    case State::kQueued:
      return "queued";
    case State::kRunning:
      return "running";
    case State::kSucceeded:
      return "succeeded";
    case State::kFailed:
      return "failed";
    case State::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

absl::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kBatchFetch:
      return "batch_fetch";
    case Kind::kFetchPages:
      return "fetch_pages";
    case Kind::kCompute:
      return "compute";
  }
  return "unknown";
}

// The start of a receiver's answer for last_error: printable, bounded.
std::string BodyPrefix(absl::string_view body) {
  constexpr size_t kMax = 200;
  std::string out;
  for (char c : body.substr(0, kMax)) {
    out.push_back(c >= ' ' && c < 0x7f ? c : ' ');
  }
  out = std::string(absl::StripAsciiWhitespace(out));
  if (body.size() > kMax) absl::StrAppend(&out, "...");
  return out;
}

// The POST of `delivery`, signed at `unix_now`.
fetch::FetchSpec PostSpec(const WebhookSenderOptions& options,
                          const Delivery& delivery, absl::string_view secret,
                          int64_t unix_now) {
  fetch::FetchSpec spec;
  spec.url = delivery.webhook.url;
  spec.method = fetch::Method::kPost;
  spec.body = delivery.body;
  spec.headers = {{"Content-Type", "application/json"},
                  {std::string(kEventHeader), delivery.event},
                  {std::string(kDeliveryHeader), absl::StrCat(delivery.id)},
                  {std::string(kSignatureHeader),
                   SignWebhook(secret, unix_now, delivery.body)}};
  spec.timeout = options.timeout;
  spec.max_body_bytes = options.max_response_bytes;
  spec.max_redirects = 0;
  spec.retry.max_attempts = 1;  // retries are the store's, with backoff
  return spec;
}

}  // namespace

// --- signatures
// ---------------------------------------------------------------

std::string SignWebhook(absl::string_view secret, int64_t unix_seconds,
                        absl::string_view body) {
  return absl::StrCat("t=", unix_seconds,
                      ",v1=", Hmac(secret, unix_seconds, body));
}

absl::Status VerifyWebhookSignature(absl::string_view secret,
                                    absl::string_view header,
                                    absl::string_view body, absl::Time now,
                                    absl::Duration tolerance) {
  if (secret.empty()) {
    return absl::InvalidArgumentError("the webhook secret is empty");
  }
  std::optional<int64_t> t;
  std::vector<absl::string_view> signatures;
  for (absl::string_view part : absl::StrSplit(header, ',')) {
    part = absl::StripAsciiWhitespace(part);
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(part, absl::MaxSplits('=', 1));
    if (kv.first == "t") {
      int64_t value = 0;
      if (t.has_value() || !absl::SimpleAtoi(kv.second, &value)) {
        return absl::InvalidArgumentError(
            absl::StrCat(kSignatureHeader, " needs exactly one t=<unix>"));
      }
      t = value;
    } else if (kv.first == "v1") {
      signatures.push_back(kv.second);
    }
  }
  if (!t.has_value() || signatures.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        kSignatureHeader, " must be t=<unix seconds>,v1=<hex HMAC-SHA256>"));
  }
  const absl::Duration age = now - absl::FromUnixSeconds(*t);
  if (absl::AbsDuration(age) > tolerance) {
    return absl::PermissionDeniedError(absl::StrCat(
        kSignatureHeader, " t=", *t, " is ",
        absl::ToInt64Seconds(absl::AbsDuration(age)),
        " s from now; the tolerance is ", absl::ToInt64Seconds(tolerance),
        " s (an old request replayed?)"));
  }
  const std::string expected = Hmac(secret, *t, body);
  bool match = false;
  for (absl::string_view candidate : signatures) {
    // The length is public (always 64); the contents are compared in
    // constant time, and every candidate is compared.
    const bool same =
        candidate.size() == expected.size() &&
        CRYPTO_memcmp(candidate.data(), expected.data(), expected.size()) == 0;
    match = match || same;
  }
  if (!match) {
    return absl::PermissionDeniedError(absl::StrCat(
        kSignatureHeader, " has no v1 signature that matches the body"));
  }
  return absl::OkStatus();
}

// --- secrets ----------------------------------------------------------------

absl::StatusOr<WebhookSecrets::Map> WebhookSecrets::ParseMap(
    absl::string_view text, const std::string& path) {
  Map secrets;
  absl::flat_hash_map<std::string, int> first_line;
  for (const auth::FileLine& line :
       auth::SplitLineFile(text, auth::Comments::kWholeLine)) {
    auto bad = [&](absl::string_view why) {
      // NOTE: never the line itself: it holds a secret.
      return absl::InvalidArgumentError(absl::StrCat(
          kSecretsFlag, " ", path, " line ", line.number, ": ", why));
    };
    if (line.fields.size() != 2) {
      return bad(absl::StrCat("expected \"ID SECRET\", found ",
                              line.fields.size(), " fields"));
    }
    const absl::string_view id = line.fields[0];
    const absl::string_view secret = line.fields[1];
    if (id.size() > 64) return bad("the id is longer than 64 characters");
    if (!std::all_of(id.begin(), id.end(), IsIdChar)) {
      return bad("the id may only have letters, digits and ._:@/+- in it");
    }
    if (secret.size() < kMinWebhookSecretBytes) {
      return bad(absl::StrCat("the secret of \"", id, "\" is shorter than ",
                              kMinWebhookSecretBytes, " bytes"));
    }
    if (secret.size() > kMaxWebhookSecretBytes) {
      return bad(absl::StrCat("the secret of \"", id, "\" is longer than ",
                              kMaxWebhookSecretBytes, " bytes"));
    }
    if (!std::all_of(secret.begin(), secret.end(), IsSecretChar)) {
      return bad(absl::StrCat("the secret of \"", id,
                              "\" has a character that is not printable "
                              "ASCII"));
    }
    auto [it, inserted] = first_line.emplace(std::string(id), line.number);
    if (!inserted) {
      return bad(absl::StrCat("the id \"", id, "\" again (first on line ",
                              it->second, ")"));
    }
    secrets.emplace(std::string(id), std::string(secret));
  }
  return secrets;
}

absl::StatusOr<std::unique_ptr<WebhookSecrets>> WebhookSecrets::Parse(
    absl::string_view text, const std::string& path) {
  absl::StatusOr<Map> map = ParseMap(text, path);
  if (!map.ok()) return map.status();
  auto secrets = std::make_unique<WebhookSecrets>();
  secrets->path_ = path;
  absl::MutexLock lock(&secrets->mu_);
  secrets->secrets_ = *std::move(map);
  return secrets;
}

absl::StatusOr<std::unique_ptr<WebhookSecrets>> WebhookSecrets::Load(
    const std::string& path) {
  absl::StatusOr<std::string> text = auth::ReadFileText(path, kSecretsFlag);
  if (!text.ok()) return text.status();
  return Parse(*text, path);
}

absl::Status WebhookSecrets::Reload() {
  if (path_.empty()) return absl::OkStatus();
  absl::StatusOr<std::string> text = auth::ReadFileText(path_, kSecretsFlag);
  if (!text.ok()) return text.status();
  absl::StatusOr<Map> map = ParseMap(*text, path_);
  if (!map.ok()) return map.status();
  absl::MutexLock lock(&mu_);
  secrets_ = *std::move(map);
  return absl::OkStatus();
}

std::optional<std::string> WebhookSecrets::Find(absl::string_view id) const {
  absl::MutexLock lock(&mu_);
  auto it = secrets_.find(id);
  if (it == secrets_.end()) return std::nullopt;
  return it->second;
}

size_t WebhookSecrets::size() const {
  absl::MutexLock lock(&mu_);
  return secrets_.size();
}

// --- Submit
// -------------------------------------------------------------------

absl::Status ValidateWebhook(const WebhookConfig& webhook,
                             const WebhookSecrets& secrets,
                             const fetch::FetchLimits& limits) {
  if (webhook.url.empty() && webhook.secret.empty() &&
      webhook.secret_id.empty() && !webhook.progress) {
    return absl::OkStatus();  // no webhook
  }
  if (webhook.url.empty()) {
    return absl::InvalidArgumentError(
        "webhook.url is empty: a webhook needs an http or https URL");
  }
  if (absl::Status url = fetch::ValidateUrl(webhook.url, limits); !url.ok()) {
    // ValidateUrl names the field "url".
    return absl::InvalidArgumentError(absl::StrCat("webhook.", url.message()));
  }
  if (!webhook.secret.empty() && !webhook.secret_id.empty()) {
    return absl::InvalidArgumentError(
        "webhook.secret and webhook.secret_id are both set: give one");
  }
  if (webhook.secret.empty() && webhook.secret_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "webhook.secret (at least ", kMinWebhookSecretBytes,
        " bytes) or webhook.secret_id (a name in --webhook_secrets_file) is "
        "required: receivers check the signature with it"));
  }
  if (!webhook.secret.empty()) {
    if (webhook.secret.size() < kMinWebhookSecretBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("webhook.secret is ", webhook.secret.size(),
                       " bytes; the minimum is ", kMinWebhookSecretBytes));
    }
    if (webhook.secret.size() > kMaxWebhookSecretBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("webhook.secret is ", webhook.secret.size(),
                       " bytes; the limit is ", kMaxWebhookSecretBytes));
    }
    return absl::OkStatus();
  }
  if (secrets.path().empty()) {
    return absl::InvalidArgumentError(
        "webhook.secret_id needs a --webhook_secrets_file, and this server "
        "has none: give webhook.secret instead");
  }
  if (!secrets.Find(webhook.secret_id).has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "webhook.secret_id \"", absl::CHexEscape(webhook.secret_id),
        "\" is not in --webhook_secrets_file"));
  }
  return absl::OkStatus();
}

// --- events
// -------------------------------------------------------------------

absl::string_view TerminalWebhookEvent(State state) {
  return state == State::kSucceeded ? kJobCompleted : kJobFailed;
}

std::string WebhookEventBody(absl::string_view event, const Job& job,
                             absl::Time created) {
  using Json = nlohmann::ordered_json;
  auto time = [](absl::Time t) -> Json {
    std::string text = Rfc3339OrEmpty(t);
    return text.empty() ? Json(nullptr) : Json(std::move(text));
  };
  Json error = nullptr;
  if (job.error_code != 0) {
    error = Json{{"code", job.error_code},
                 {"status", absl::StatusCodeToString(
                                static_cast<absl::StatusCode>(job.error_code))},
                 {"message", job.error_message}};
  }
  Json body = {{"type", std::string(event)},
               {"created", absl::ToUnixSeconds(created)},
               {"job",
                {{"id", job.id},
                 {"kind", std::string(KindName(job.kind))},
                 {"state", std::string(StateName(job.state))},
                 {"idempotency_key", job.idempotency_key},
                 {"counts",
                  {{"total", job.counts.total},
                   {"done", job.counts.done},
                   {"failed", job.counts.failed},
                   {"bytes", job.counts.bytes}}},
                 {"created_at", time(job.created_at)},
                 {"started_at", time(job.started_at)},
                 {"finished_at", time(job.finished_at)},
                 {"expires_at", time(job.expires_at)},
                 {"error", std::move(error)}}}};
  // An error message may hold bytes that are not UTF-8 (an origin's text):
  // replaced, never a throw.
  return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::optional<Delivery> NewWebhookDelivery(const Job& job,
                                           absl::string_view event,
                                           absl::Time now) {
  if (job.webhook.url.empty()) return std::nullopt;
  if (event == kJobProgress && !job.webhook.progress) return std::nullopt;
  Delivery delivery;
  delivery.job_id = job.id;
  delivery.event = std::string(event);
  delivery.body = WebhookEventBody(event, job, now);
  delivery.state = DeliveryState::kPending;
  delivery.next_attempt_at = now;
  delivery.webhook = job.webhook;
  return delivery;
}

bool ProgressDue(absl::Time last_sent, absl::Time now,
                 absl::Duration interval) {
  return last_sent == absl::InfinitePast() || now - last_sent >= interval;
}

absl::Duration WebhookBackoff(int attempts, absl::Duration base,
                              absl::Duration cap, double random01) {
  absl::Duration wait = base;
  for (int i = 1; i < attempts && wait < cap; ++i) wait *= 2;
  wait = std::min(wait, cap);
  random01 = std::clamp(random01, 0.0, 1.0);
  return wait / 2 + (wait / 2) * random01;
}

// --- WebhookSender
// ------------------------------------------------------------

absl::StatusOr<std::unique_ptr<WebhookSender>> WebhookSender::Start(
    JobStore* store, fetch::Engine* engine, WebhookSenderOptions options) {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("webhook sender: ", what));
  };
  if (store == nullptr || engine == nullptr) {
    return bad("needs a job store and a fetch engine");
  }
  if (options.replica.empty()) return bad("replica is empty");
  if (options.poll_interval <= absl::ZeroDuration()) {
    return bad("poll_interval must be above 0");
  }
  if (options.batch_size < 1) return bad("batch_size must be at least 1");
  if (options.max_inflight < 1) return bad("max_inflight must be at least 1");
  if (options.timeout <= absl::ZeroDuration()) {
    return bad("--webhook_timeout must be above 0");
  }
  if (options.lease <= options.timeout) {
    return bad(absl::StrCat("the lease (", absl::FormatDuration(options.lease),
                            ") must be longer than --webhook_timeout (",
                            absl::FormatDuration(options.timeout), ")"));
  }
  if (options.max_attempts < 1) {
    return bad("--webhook_max_attempts must be at least 1");
  }
  if (options.backoff_base <= absl::ZeroDuration() ||
      options.backoff_cap < options.backoff_base) {
    return bad("backoff_base must be above 0 and backoff_cap at least it");
  }
  if (options.max_response_bytes < 1) {
    return bad("max_response_bytes must be at least 1");
  }
  // A POST the engine would refuse for its limits would fail every
  // delivery: refused here, at start, instead.
  Delivery sample;
  sample.webhook.url = "http://webhook.invalid/";
  sample.event = std::string(kJobCompleted);
  sample.body = "{}";
  if (absl::Status s = fetch::ValidateFetchSpec(
          PostSpec(options, sample, "0123456789abcdef", 0), options.limits);
      !s.ok()) {
    return bad(absl::StrCat(
        "its POSTs would break the engine's limits (--webhook_timeout is "
        "the POST's timeout): ",
        s.message()));
  }
  std::unique_ptr<WebhookSender> sender(
      new WebhookSender(store, engine, std::move(options)));
  sender->thread_ = std::thread([s = sender.get()] { s->Run(); });
  return sender;
}

WebhookSender::WebhookSender(JobStore* store, fetch::Engine* engine,
                             WebhookSenderOptions options)
    : store_(store), engine_(engine), options_(std::move(options)) {}

WebhookSender::~WebhookSender() { Shutdown(); }

void WebhookSender::Wake() {
  absl::MutexLock lock(&mu_);
  woken_ = true;
}

void WebhookSender::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  absl::MutexLock join(&join_mu_);
  if (thread_.joinable()) thread_.join();
}

WebhookSender::Stats WebhookSender::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

absl::Time WebhookSender::Now() const {
  return options_.clock ? options_.clock() : absl::Now();
}

void WebhookSender::Log(log::Level level, const std::string& fields) const {
  if (options_.logger != nullptr) options_.logger->Log(level, fields);
}

void WebhookSender::Run() {
  // Real time (AwaitWithDeadline), not the store's clock.
  absl::Time next_claim = absl::Now();
  for (;;) {
    std::deque<Outcome> outcomes;
    bool stopping = false;
    {
      absl::MutexLock lock(&mu_);
      if (inflight_ < options_.max_inflight) {
        mu_.AwaitWithDeadline(absl::Condition(this, &WebhookSender::Ready),
                              next_claim);
      } else {  // no slot: only an outcome (or a stop) moves things on
        mu_.Await(absl::Condition(this, &WebhookSender::Ready));
      }
      outcomes.swap(outcomes_);
      stopping = stopping_;
      if (woken_) {
        woken_ = false;
        next_claim = std::min(next_claim, absl::Now());
      }
    }
    for (Outcome& outcome : outcomes) {
      if (std::optional<absl::Time> due = Record(std::move(outcome), false)) {
        // This sender's own retry: look again when it is due, whatever the
        // poll interval.
        next_claim = std::min(next_claim, absl::Now() + (*due - Now()));
      }
    }
    if (stopping) break;
    if (absl::Now() >= next_claim && inflight_ < options_.max_inflight) {
      const int max =
          std::min(options_.batch_size, options_.max_inflight - inflight_);
      absl::StatusOr<int> claimed = ClaimAndSend(max);
      // A full batch: more may be due at once.
      next_claim = claimed.ok() && *claimed == max
                       ? absl::Now()
                       : absl::Now() + options_.poll_interval;
    }
  }
  // Stop: cancel what is in flight; the engine reports each item once
  // (CANCELLED unless it finished first), and those go back to pending.
  for (Batch& batch : batches_) batch.handle->Cancel();
  bool more = true;
  while (more) {
    std::deque<Outcome> outcomes;
    {
      absl::MutexLock lock(&mu_);
      if (inflight_ > 0) {
        mu_.Await(absl::Condition(this, &WebhookSender::HasOutcomes));
      }
      outcomes.swap(outcomes_);
    }
    for (Outcome& outcome : outcomes) Record(std::move(outcome), true);
    more = inflight_ > 0;
  }
}

absl::StatusOr<int> WebhookSender::ClaimAndSend(int max) {
  const absl::Time now = Now();
  absl::StatusOr<std::vector<Delivery>> claimed =
      store_->ClaimDeliveries(options_.replica, max, options_.lease, now);
  {
    absl::MutexLock lock(&mu_);
    ++stats_.polls;
    if (!claimed.ok()) ++stats_.store_errors;
  }
  if (!claimed.ok()) {
    Log(log::Level::kWarn,
        absl::StrCat(R"("event":"webhook_claim_failed","error":")",
                     log::JsonEscape(claimed.status().ToString()), "\""));
    return claimed.status();
  }
  const int count = static_cast<int>(claimed->size());
  if (count == 0) return 0;
  {
    absl::MutexLock lock(&mu_);
    stats_.claimed += count;
  }
  const uint64_t batch_id = next_batch_++;
  const int64_t unix_now = absl::ToUnixSeconds(now);
  auto sending = std::make_shared<std::vector<Delivery>>();
  std::vector<fetch::FetchSpec> specs;
  for (Delivery& delivery : *claimed) {
    std::optional<std::string> secret;
    if (!delivery.webhook.secret.empty()) {
      secret = delivery.webhook.secret;
    } else if (options_.secrets != nullptr) {
      secret = options_.secrets->Find(delivery.webhook.secret_id);
    }
    if (!secret.has_value()) {
      // The id left the secrets file since Submit: an attempt that failed
      // (a fixed file and a SIGHUP let a retry through).
      Outcome outcome;
      outcome.delivery = std::move(delivery);
      outcome.status = absl::FailedPreconditionError(
          absl::StrCat("webhook.secret_id \"",
                       absl::CHexEscape(outcome.delivery.webhook.secret_id),
                       "\" is not in --webhook_secrets_file"));
      absl::MutexLock lock(&mu_);
      outcomes_.push_back(std::move(outcome));
      continue;
    }
    specs.push_back(PostSpec(options_, delivery, *secret, unix_now));
    sending->push_back(std::move(delivery));
  }
  if (specs.empty()) return count;
  const int items = static_cast<int>(specs.size());
  // Counted before Submit: an item may be reported before it returns.
  inflight_ += items;
  fetch::BatchOptions batch_options;
  batch_options.max_concurrency = items;
  batch_options.identity = options_.identity;
  std::shared_ptr<fetch::BatchHandle> handle = engine_->Submit(
      std::move(specs), std::move(batch_options),
      [this, batch_id, sending](size_t index, fetch::FetchResult result) {
        Outcome outcome;
        outcome.batch = batch_id;
        outcome.delivery = std::move((*sending)[index]);
        outcome.http_status = result.http_status;
        outcome.status = std::move(result.status);
        outcome.body_prefix = BodyPrefix(result.body);
        absl::MutexLock lock(&mu_);
        outcomes_.push_back(std::move(outcome));
      },
      [] {});
  batches_.push_back(Batch{batch_id, std::move(handle), items});
  return count;
}

std::optional<absl::Time> WebhookSender::Record(Outcome outcome,
                                                bool stopping) {
  if (outcome.batch != 0) {
    --inflight_;
    auto it =
        std::find_if(batches_.begin(), batches_.end(),
                     [&](const Batch& b) { return b.id == outcome.batch; });
    if (it != batches_.end() && --it->remaining == 0) batches_.erase(it);
  }
  Delivery& d = outcome.delivery;
  const absl::Time now = Now();
  const bool delivered =
      outcome.http_status >= 200 && outcome.http_status < 300;
  std::optional<absl::Time> retry_at;
  int64_t Stats::*counter = nullptr;
  if (stopping && !delivered &&
      outcome.status.code() == absl::StatusCode::kCancelled) {
    // Cut off by Shutdown: not an attempt. Due at once for the next sender.
    d.state = DeliveryState::kPending;
    d.next_attempt_at = now;
    counter = &Stats::released;
  } else if (delivered) {
    ++d.attempts;
    d.state = DeliveryState::kDelivered;
    d.last_error.clear();
    d.next_attempt_at = absl::InfinitePast();
    counter = &Stats::delivered;
  } else {
    ++d.attempts;
    if (outcome.http_status >= 300 && outcome.http_status < 400) {
      d.last_error = absl::StrCat("HTTP ", outcome.http_status,
                                  " (webhook redirects are not followed)");
    } else if (outcome.http_status != 0) {
      d.last_error = absl::StrCat("HTTP ", outcome.http_status,
                                  outcome.body_prefix.empty() ? "" : ": ",
                                  outcome.body_prefix);
    } else {
      d.last_error = outcome.status.ToString();
    }
    // The address guard's refusal does not change on a retry.
    const bool permanent =
        outcome.http_status == 0 &&
        outcome.status.code() == absl::StatusCode::kPermissionDenied;
    if (permanent || d.attempts >= options_.max_attempts) {
      d.state = DeliveryState::kFailed;
      d.next_attempt_at = absl::InfinitePast();
      counter = &Stats::failed;
    } else {
      d.state = DeliveryState::kPending;
      d.next_attempt_at =
          now + WebhookBackoff(d.attempts, options_.backoff_base,
                               options_.backoff_cap,
                               absl::Uniform(bitgen_, 0.0, 1.0));
      retry_at = d.next_attempt_at;
      counter = &Stats::retrying;
    }
  }
  absl::Status recorded = store_->RecordDelivery(d);
  {
    absl::MutexLock lock(&mu_);
    if (recorded.ok()) {
      ++(stats_.*counter);
    } else {
      ++stats_.store_errors;
    }
  }
  if (!recorded.ok()) {
    // The lease runs out and the delivery is claimed again.
    Log(log::Level::kWarn,
        absl::StrCat(R"("event":"webhook_record_failed","job":")",
                     log::JsonEscape(d.job_id), R"(","delivery":)", d.id,
                     R"(,"error":")", log::JsonEscape(recorded.ToString()),
                     "\""));
    return std::nullopt;
  }
  if (d.state == DeliveryState::kFailed) {
    Log(log::Level::kWarn,
        absl::StrCat(R"("event":"webhook_failed","job":")",
                     log::JsonEscape(d.job_id), R"(","delivery":)", d.id,
                     R"(,"webhook_event":")", log::JsonEscape(d.event),
                     R"(","attempts":)", d.attempts, R"(,"error":")",
                     log::JsonEscape(d.last_error), "\""));
  }
  return retry_at;
}

}  // namespace fetchd::jobs
