// The engine's transfers (see engine_transfer.h): one attempt of one item
// from easy-handle setup to its status. I/O thread only.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/fetch/engine_loop.h"

namespace fetchd::fetch {

using internal::EasyHandle;
using internal::SlistDeleter;
namespace {

absl::Duration FromMicros(curl_off_t us) { return absl::Microseconds(us); }

// --low_speed_window in curl's unit: whole seconds, at least 1.
long LowSpeedSeconds(const Engine::Options& options) {
  return static_cast<long>(
      std::max<int64_t>(1, absl::ToInt64Seconds(absl::Ceil(
                               options.low_speed_window, absl::Seconds(1)))));
}

}  // namespace

namespace internal {

bool IsConnectError(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

}  // namespace internal

absl::StatusCode StatusCodeForHttp(int http_status) {
  if (http_status < 400) return absl::StatusCode::kOk;
  switch (http_status) {
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
    case 410:
      return absl::StatusCode::kNotFound;
    case 408:
      return absl::StatusCode::kDeadlineExceeded;
    case 409:
      return absl::StatusCode::kAborted;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    default:
      return http_status >= 500 ? absl::StatusCode::kUnavailable
                                : absl::StatusCode::kFailedPrecondition;
  }
}

EasyHandle Engine::Loop::AcquireEasy() {
  if (!idle_easy_.empty()) {
    EasyHandle easy = std::move(idle_easy_.back());
    idle_easy_.pop_back();
    return easy;
  }
  // Options that are the same for every transfer are set once per handle;
  // StartAttempt sets every other option on every use, so a reused handle
  // carries nothing over (cheaper than curl_easy_reset + a full setup).
  EasyHandle easy(curl_easy_init());
  CURL* e = easy.get();
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Loop::OnBody);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Loop::OnHeader);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_USERAGENT, options_.user_agent.c_str());
  // curl's defaults, stated: upstream TLS is always verified.
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!ca_bundle_path_.empty()) {
    curl_easy_setopt(e, CURLOPT_CAINFO, ca_bundle_path_.c_str());
  }
  // Set explicitly, so curl never reads the proxy variables of the
  // environment ("" = no proxy): the proxy is either ours or none (and the
  // five getenv scans per transfer are saved).
  curl_easy_setopt(e, CURLOPT_PROXY, options_.proxy.c_str());
  curl_easy_setopt(e, CURLOPT_NOPROXY, "");
  // The same for every transfer: set once per handle.
  if (options_.min_bytes_per_second > 0) {
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT,
                     static_cast<long>(options_.min_bytes_per_second));
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, LowSpeedSeconds(options_));
  }
  if (resolve_ != nullptr) curl_easy_setopt(e, CURLOPT_RESOLVE, resolve_.get());
  if (options_.address_policy) {
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, &Loop::OnOpenSocket);
    // Through a proxy, one connection carries requests for many hosts:
    // the host is checked per request instead (once the connection is up,
    // before the request goes out, on every redirect hop too).
    if (!options_.proxy.empty()) {
      curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, &Loop::OnPrereq);
    }
  }
  return easy;
}

void Engine::Loop::ReleaseEasy(EasyHandle easy) {
  if (idle_easy_.size() < static_cast<size_t>(options_.max_inflight)) {
    idle_easy_.push_back(std::move(easy));
  }
}

void Engine::Loop::StartAttempt(Batch& batch, size_t index,
                                memory::Reservation memory) {
  Item& item = *batch.item(index);
  const FetchSpec& spec = batch.spec(index);
  const absl::Time now = absl::Now();
  const absl::Duration left = batch.options.deadline - now;
  auto t = std::make_unique<Transfer>();
  t->batch_id = batch.id;
  t->index = index;
  t->host = batch.host(index);
  t->identity = batch.identity;
  t->spec = &spec;
  t->options = &options_;
  t->io_thread = &io_thread_;
  if (options_.memory_budget != nullptr) {
    t->memory = memory.budget() != nullptr ? std::move(memory)
                                           : options_.memory_budget->Empty();
    t->paused = &memory_paused_;
  }
  t->easy = AcquireEasy();
  CURL* e = t->easy.get();
  curl_easy_setopt(e, CURLOPT_URL, spec.url.c_str());
  curl_easy_setopt(e, CURLOPT_PRIVATE, t.get());
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get());
  curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get());
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, t.get());
  curl_easy_setopt(e, CURLOPT_PREREQDATA, t.get());
  // The attempt may not outlive the batch's deadline.
  const absl::Duration timeout = std::min(spec.timeout, left);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(std::max<int64_t>(
                       1, absl::ToInt64Milliseconds(timeout))));
  // Credential headers: the engine follows redirects itself (checking each
  // hop's origin); every other item keeps curl's own, cheaper following.
  t->manage_redirects = spec.max_redirects > 0 && CarriesCredentials(spec);
  t->started = now;
  t->ends = now + timeout;
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION,
                   spec.max_redirects > 0 && !t->manage_redirects ? 1L : 0L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, static_cast<long>(spec.max_redirects));
  curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(spec.max_body_bytes));
  // Back to a plain GET first: the handle may come from a POST or a HEAD.
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, nullptr);
  curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  switch (spec.method) {
    case Method::kGet:
      break;
    case Method::kHead:
      curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
      break;
    case Method::kPost:
      curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(spec.body.size()));
      curl_easy_setopt(e, CURLOPT_POSTFIELDS, spec.body.data());
      break;
  }
  // One branch per attempt without a trace; with one, one more header.
  if (batch.options.trace.valid) {
    t->traceparent = TraceparentLine(batch.options.trace, spec);
  }
  curl_slist* list = HeaderList(spec, /*strip=*/false, t->traceparent);
  t->request_headers.reset(list);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
  // Over TLS, wait for a connection that may multiplex (h2) rather than
  // opening a new one per transfer.
  curl_easy_setopt(e, CURLOPT_PIPEWAIT,
                   absl::StartsWithIgnoreCase(spec.url, "https:") ? 1L : 0L);
  if (item.attempts++ == 0) budget_.OnFirstAttempt();
  item.state = ItemState::kRunning;
  ++batch.running;
  Started(*t);
  CURLMcode added = curl_multi_add_handle(multi_.get(), e);
  item.transfer = std::move(t);
  if (added != CURLM_OK) {
    // Never expected; report rather than lose the item.
    Transfer* raw = item.transfer.get();
    curl_multi_remove_handle(multi_.get(), e);
    --batch.running;
    Ended(*raw);
    ReleaseEasy(std::move(raw->easy));
    item.transfer.reset();
    FetchResult result;
    result.status = absl::InternalError(
        absl::StrCat("curl_multi_add_handle: ", curl_multi_strerror(added)));
    result.attempts = item.attempts;
    Report(batch, index, std::move(result));
  }
}

bool Engine::Loop::CarriesCredentials(const FetchSpec& spec) const {
  for (const auto& header : spec.headers) {
    if (IsCredentialHeader(header.first, options_.credential_headers)) {
      return true;
    }
  }
  return false;
}

curl_slist* Engine::Loop::HeaderList(const FetchSpec& spec, bool strip,
                                     const std::string& extra) const {
  curl_slist* list = nullptr;
  for (const auto& [name, value] : spec.headers) {
    if (strip && IsCredentialHeader(name, options_.credential_headers)) {
      continue;
    }
    list = curl_slist_append(list, absl::StrCat(name, ": ", value).c_str());
  }
  if (!extra.empty()) list = curl_slist_append(list, extra.c_str());
  return list;
}

std::string Engine::Loop::TraceparentLine(const TraceContext& trace,
                                          const FetchSpec& spec) {
  // The item's own traceparent is the caller's explicit choice for that
  // request: it goes as given, and no second one is added.
  for (const auto& header : spec.headers) {
    if (IsTraceparentHeader(header.first)) return "";
  }
  // A new span per attempt (each is its own HTTP request); never zero,
  // which W3C reserves for "invalid".
  uint64_t span = 0;
  while (span == 0) span = absl::Uniform<uint64_t>(rng_);
  return ChildTraceparentLine(trace, span);
}

std::string Engine::Loop::CredentialNames(const FetchSpec& spec) const {
  std::vector<std::string> names;
  for (const auto& header : spec.headers) {
    if (IsCredentialHeader(header.first, options_.credential_headers)) {
      names.push_back(absl::AsciiStrToLower(header.first));
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return absl::StrJoin(names, ", ");
}

bool Engine::Loop::FollowRedirect(Transfer& t, long http) {
  const FetchSpec& spec = *t.spec;
  CURL* e = t.easy.get();
  char* location = nullptr;
  // As curl: any 3xx with a Location but 304.
  if (http < 300 || http >= 400 || http == 304 ||
      curl_easy_getinfo(e, CURLINFO_REDIRECT_URL, &location) != CURLE_OK ||
      location == nullptr) {
    return false;
  }
  if (t.redirects >= spec.max_redirects) {
    t.redirect_error = absl::ResourceExhaustedError(absl::StrCat(
        "more than max_redirects=", spec.max_redirects, " redirects"));
    return false;
  }
  const std::string next = location;
  absl::StatusOr<std::string> from = OriginOf(spec.url);
  absl::StatusOr<std::string> to = OriginOf(next);
  if (!to.ok()) {
    t.redirect_error = absl::InvalidArgumentError(
        absl::StrCat("redirect to an invalid URL: ", to.status().message()));
    return false;
  }
  const bool cross_origin = !from.ok() || *from != *to;
  if (cross_origin && !spec.allow_cross_origin) {
    // Names the origins and the headers, never their values.
    t.redirect_error = absl::FailedPreconditionError(absl::StrCat(
        "redirect from origin ", from.value_or(spec.url), " to origin ", *to,
        " refused: the item's credential headers (", CredentialNames(spec),
        ") stay on their origin; set allow_cross_origin to follow it without "
        "them"));
    return false;
  }
  curl_off_t connects = 0;
  curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
  stat_connections_.fetch_add(connects, std::memory_order_relaxed);
  const absl::Duration left =
      std::min(t.started + spec.timeout,
               batches_.at(t.batch_id)->options.deadline) -
      absl::Now();
  if (left <= absl::ZeroDuration()) {
    t.redirect_error = absl::DeadlineExceededError(
        absl::StrCat("timed out: after ", t.redirects + 1, " redirects"));
    return false;
  }
  // curl's method rules: 301, 302 and 303 turn a POST into a GET.
  if (spec.method == Method::kPost &&
      (http == 301 || http == 302 || http == 303)) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, nullptr);
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  }
  // Credentials go only to the item's own origin, and not even there once
  // the chain has left it: the way back was chosen by another origin.
  t.left_origin = t.left_origin || cross_origin;
  std::unique_ptr<curl_slist, SlistDeleter> list(
      HeaderList(spec, /*strip=*/t.left_origin, t.traceparent));
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, list.get());
  t.request_headers = std::move(list);
  curl_easy_setopt(e, CURLOPT_URL, next.c_str());
  curl_easy_setopt(
      e, CURLOPT_TIMEOUT_MS,
      static_cast<long>(std::max<int64_t>(1, absl::ToInt64Milliseconds(left))));
  curl_easy_setopt(e, CURLOPT_PIPEWAIT,
                   absl::StartsWithIgnoreCase(next, "https:") ? 1L : 0L);
  t.body.clear();
  t.headers.clear();
  t.kept_header_bytes = 0;
  t.error[0] = '\0';
  // The last hop's refusals were not why it ended (it answered).
  t.refused = absl::OkStatus();
  t.allowed_since_refused = false;
  ++t.redirects;
  // The hop connects through OnOpenSocket like any transfer: the address
  // policy sees it.
  const CURLMcode added = curl_multi_add_handle(multi_.get(), e);
  if (added != CURLM_OK) {
    t.redirect_error = absl::InternalError(
        absl::StrCat("curl_multi_add_handle: ", curl_multi_strerror(added)));
    return false;
  }
  return true;
}

size_t Engine::Loop::OnBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  t->io_thread->AssertHeld();  // called from curl_multi_perform
  const size_t len = size * n;
  if (static_cast<int64_t>(t->body.size() + len) > t->spec->max_body_bytes) {
    t->body_too_large = true;
    return CURL_WRITEFUNC_ERROR;  // aborts the transfer
  }
  // Reserved before the string grows: it never allocates past the budget.
  if (t->body.size() + len > t->body.capacity() && !MakeRoom(*t, len)) {
    return t->paused_need > 0 ? CURL_WRITEFUNC_PAUSE : CURL_WRITEFUNC_ERROR;
  }
  t->body.append(data, len);
  return len;
}

size_t Engine::Loop::OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  t->io_thread->AssertHeld();  // called from curl_multi_perform
  const size_t len = size * n;
  absl::string_view line(data, len);
  if (absl::StartsWith(line, "HTTP/")) {
    t->headers.clear();  // a new response (after a redirect or 100)
    t->kept_header_bytes = 0;
    t->header_lines = 0;
    t->header_bytes = static_cast<int64_t>(len);
    return len;
  }
  // Bounded before anything is kept: a hostile origin's 100,000 headers or
  // megabyte lines end the transfer (returning less than len aborts it).
  const Options& options = *t->options;
  t->header_bytes += static_cast<int64_t>(len);
  if (options.max_response_header_bytes > 0 &&
      t->header_bytes > options.max_response_header_bytes) {
    t->header_cap =
        static_cast<int64_t>(len) > options.max_response_header_bytes
            ? Transfer::HeaderCap::kLine
            : Transfer::HeaderCap::kBytes;
    return 0;
  }
  // The blank line that ends the headers is a line too.
  if (options.max_response_headers > 0 &&
      ++t->header_lines > options.max_response_headers + 1) {
    t->header_cap = Transfer::HeaderCap::kCount;
    return 0;
  }
  if (t->spec->keep_headers.empty()) return len;
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos) return len;
  std::string name =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon)));
  for (const std::string& wanted : t->spec->keep_headers) {
    if (wanted == name) {
      if (!HoldHeader(*t, static_cast<int64_t>(line.size()))) return 0;
      t->headers.emplace_back(
          std::move(name),
          std::string(absl::StripAsciiWhitespace(line.substr(colon + 1))));
      break;
    }
  }
  return len;
}

bool Engine::Loop::Allowed(Transfer* t, const sockaddr* address,
                           socklen_t length) {
  // The URL this connection is for: after a redirect, curl has already
  // moved the effective URL to the new hop when it connects for it.
  char* url = nullptr;
  curl_easy_getinfo(t->easy.get(), CURLINFO_EFFECTIVE_URL, &url);
  absl::StatusOr<std::string> host =
      UrlHost(url != nullptr ? url : t->spec->url);
  absl::Status allowed =
      host.ok() ? t->options->address_policy(address, length, *host)
                : absl::PermissionDeniedError(absl::StrCat(
                      "refused to connect: no host in the URL being fetched (",
                      host.status().message(), ")"));
  if (allowed.ok()) {
    t->allowed_since_refused = true;
    return true;
  }
  t->refused = std::move(allowed);
  t->allowed_since_refused = false;
  return false;
}

curl_socket_t Engine::Loop::OnOpenSocket(void* user, curlsocktype /*purpose*/,
                                         curl_sockaddr* address) {
  auto* t = static_cast<Transfer*>(user);
  t->io_thread->AssertHeld();  // called from curl_multi_perform
  if (!Allowed(t, &address->addr, address->addrlen)) return CURL_SOCKET_BAD;
  return socket(address->family, address->socktype, address->protocol);
}

int Engine::Loop::OnPrereq(void* user, char* primary_ip, char* /*local_ip*/,
                           int primary_port, int /*local_port*/) {
  auto* t = static_cast<Transfer*>(user);
  t->io_thread->AssertHeld();  // called from curl_multi_perform
  sockaddr_storage storage{};
  socklen_t length = 0;
  auto* in = reinterpret_cast<sockaddr_in*>(&storage);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
  if (inet_pton(AF_INET, primary_ip, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(primary_port));
    length = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, primary_ip, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(primary_port));
    length = sizeof(sockaddr_in6);
  }
  return Allowed(t, reinterpret_cast<const sockaddr*>(&storage), length)
             ? CURL_PREREQFUNC_OK
             : CURL_PREREQFUNC_ABORT;
}

void Engine::Loop::CollectDone() {
  int queued = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_.get(), &queued)) {
    if (msg->msg != CURLMSG_DONE) continue;
    Transfer* t = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
    const CURLcode rc = msg->data.result;
    curl_multi_remove_handle(multi_.get(), msg->easy_handle);
    FinishAttempt(t, rc);
  }
}

absl::Status Engine::Loop::AttemptStatus(const Transfer& t, CURLcode rc,
                                         long http) const {
  // A refusal decides only when it is why the transfer failed: curl 7.88
  // ends with CURLE_COULDNT_CONNECT once the open-socket callback refused
  // every address it tried, and with CURLE_ABORTED_BY_CALLBACK when the
  // prereq callback refused. A refusal of one address (say the host's IPv6)
  // followed by an allowed one does not turn a later failure, such as a
  // timeout, into PERMISSION_DENIED.
  if (!t.refused.ok() && !t.allowed_since_refused &&
      (rc == CURLE_COULDNT_CONNECT || rc == CURLE_ABORTED_BY_CALLBACK)) {
    return t.refused;
  }
  if (!t.redirect_error.ok()) return t.redirect_error;
  if (absl::Status memory = MemoryStatus(t, rc); !memory.ok()) return memory;
  if (t.body_too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "response body exceeds max_body_bytes=", t.spec->max_body_bytes));
  }
  switch (t.header_cap) {
    case Transfer::HeaderCap::kNone:
      break;
    case Transfer::HeaderCap::kCount:
      return absl::ResourceExhaustedError(
          absl::StrCat("the origin sent more than --max_response_headers=",
                       options_.max_response_headers, " response headers"));
    case Transfer::HeaderCap::kBytes:
      return absl::ResourceExhaustedError(absl::StrCat(
          "the origin's response headers exceed --max_response_header_bytes=",
          options_.max_response_header_bytes));
    case Transfer::HeaderCap::kLine:
      return absl::ResourceExhaustedError(
          absl::StrCat("the origin sent a response header line longer than "
                       "--max_response_header_bytes=",
                       options_.max_response_header_bytes));
  }
  const std::string detail =
      t.error[0] != '\0' ? t.error : curl_easy_strerror(rc);
  switch (rc) {
    case CURLE_OK:
      if (http >= 400) {
        return absl::Status(StatusCodeForHttp(static_cast<int>(http)),
                            absl::StrCat("HTTP ", http));
      }
      return absl::OkStatus();
    case CURLE_OPERATION_TIMEDOUT:
      // Ended before its own timeout: the low-speed limit did it (a
      // connect timeout is never shorter, curl's default being 300 s).
      if (options_.min_bytes_per_second > 0 &&
          absl::Now() < t.ends - absl::Milliseconds(5)) {
        return absl::DeadlineExceededError(absl::StrCat(
            "the origin sent fewer than ", options_.min_bytes_per_second,
            " bytes/s for ", LowSpeedSeconds(options_),
            "s (--min_bytes_per_second, --low_speed_window)"));
      }
      return absl::DeadlineExceededError(absl::StrCat("timed out: ", detail));
    case CURLE_OUT_OF_MEMORY:
      // Besides a real shortage: a response header line over curl's own
      // cap (CURL_MAX_HTTP_HEADER, 100 KB), "Rejected ... bytes header".
      return absl::ResourceExhaustedError(absl::StrCat("curl: ", detail));
    case CURLE_TOO_MANY_REDIRECTS:
      return absl::ResourceExhaustedError(absl::StrCat(
          "more than max_redirects=", t.spec->max_redirects, " redirects"));
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return absl::InvalidArgumentError(detail);
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
      // The origin's TLS cannot be trusted (or spoken): the message is
      // curl's, e.g. "SSL certificate problem: certificate has expired".
      return absl::UnavailableError(absl::StrCat("TLS: ", detail));
    default:
      return absl::UnavailableError(detail);
  }
}

void Engine::Loop::FinishAttempt(Transfer* raw, CURLcode rc) {
  if (raw->manage_redirects && rc == CURLE_OK) {
    long code = 0;
    curl_easy_getinfo(raw->easy.get(), CURLINFO_RESPONSE_CODE, &code);
    if (FollowRedirect(*raw, code)) return;  // the next hop is running
  }
  Batch& batch = *batches_.at(raw->batch_id);
  Item& item = *batch.item(raw->index);
  std::unique_ptr<Transfer> t = std::move(item.transfer);
  --batch.running;
  Ended(*t);
  const FetchSpec& spec = *t->spec;
  CURL* e = t->easy.get();
  long http = 0;
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &http);
  FetchResult result;
  result.status = AttemptStatus(*t, rc, http);
  result.http_status = static_cast<int>(http);
  // Counted once per attempt (the metrics' fetches by status class).
  const size_t status_class = http >= 100 && http < 600 ? http / 100 : 0;
  stat_attempts_by_class_[status_class].fetch_add(1, std::memory_order_relaxed);
  stat_body_bytes_.fetch_add(static_cast<int64_t>(t->body.size()),
                             std::memory_order_relaxed);
  curl_off_t connects = 0;
  curl_easy_getinfo(e, CURLINFO_NUM_CONNECTS, &connects);
  stat_connections_.fetch_add(connects, std::memory_order_relaxed);
  long version = 0;
  curl_easy_getinfo(e, CURLINFO_HTTP_VERSION, &version);
  switch (version) {
    case CURL_HTTP_VERSION_1_0:
      result.http_version = 10;
      break;
    case CURL_HTTP_VERSION_1_1:
      result.http_version = 11;
      break;
    case CURL_HTTP_VERSION_2_0:
      result.http_version = 20;
      break;
    case CURL_HTTP_VERSION_3:
      result.http_version = 30;
      break;
    default:
      break;
  }
  result.attempts = item.attempts;
  char* effective = nullptr;
  curl_easy_getinfo(e, CURLINFO_EFFECTIVE_URL, &effective);
  result.final_url = effective != nullptr ? effective : spec.url;
  curl_off_t dns = 0, connect = 0, tls = 0, first = 0, total = 0, after = -1;
  curl_easy_getinfo(e, CURLINFO_NAMELOOKUP_TIME_T, &dns);
  curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect);
  curl_easy_getinfo(e, CURLINFO_APPCONNECT_TIME_T, &tls);
  curl_easy_getinfo(e, CURLINFO_STARTTRANSFER_TIME_T, &first);
  curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &total);
  curl_easy_getinfo(e, CURLINFO_RETRY_AFTER, &after);
  result.timings = Timings{FromMicros(dns),
                           FromMicros(std::max<curl_off_t>(0, connect - dns)),
                           FromMicros(tls > 0 ? tls - connect : 0),
                           FromMicros(first), FromMicros(total)};
  const bool retry_wanted =
      !result.status.ok() && item.attempts < spec.retry.max_attempts &&
      result.status.code() != absl::StatusCode::kPermissionDenied &&
      t->redirect_error.ok() && !t->body_too_large && t->memory_short == 0 &&
      t->header_cap == Transfer::HeaderCap::kNone &&
      Retryable(spec.retry, rc, http);
  ReleaseEasy(std::move(t->easy));

  // The retry decision is engine_retry.cc's.
  if (retry_wanted && ScheduleRetry(batch, raw->index, result, after)) return;
  result.body = std::move(t->body);
  result.headers = std::move(t->headers);
  KeepMemory(*t, result);
  const uint64_t id = batch.id;
  Report(batch, raw->index, std::move(result));
  if (auto it = batches_.find(id); it != batches_.end()) {
    MakeRunnable(*it->second);
    EraseIfDone(id);
  }
}

}  // namespace fetchd::fetch
