// fetch/: the HTTP engine. ONE I/O thread owns a libcurl multi handle and
// runs every transfer, timer (retry backoff, batch deadlines) and limit; other
// threads only submit batches and cancel them through a mutex-guarded queue
// plus curl_multi_wakeup.
//
// What this module offers:
//   FetchSpec / RetryPolicy / FetchResult   one item in, one typed result out
//   FetchLimits + ValidateFetchSpec          per-item checks (field + limit)
//   RetryBudget                              server-wide retry throttling
//   Engine                                   Submit(batch) -> a callback per
//                                            item, then one when all are done;
//                                            Walk(first page, strategy) ->
//                                            pages in order, within a window
//   PageStrategy / Paginator                 how a walk finds its next page
//   AddressGuard (address_guard.h)           the SSRF guard: which addresses
//                                            and hosts a connection may reach
//
// No gRPC in here: tested with a real local HTTP origin, without a server.
#ifndef FETCHD_SERVER_FETCH_FETCH_H_
#define FETCHD_SERVER_FETCH_FETCH_H_

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/fetch/address_guard.h"
#include "server/fetch/trace.h"
#include "server/memory/memory.h"

namespace fetchd::fetch {

enum class Method { kGet, kHead, kPost };

// When and how an item is retried (tenacity's stop/wait/retry, per item).
struct RetryPolicy {
  int max_attempts = 1;  // 1 = no retry
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(5);
  double multiplier = 2.0;
  bool jitter = true;  // full jitter: uniform in [0, backoff]
  bool on_connect_error = true;
  bool on_timeout = true;
  bool on_5xx = true;
  bool on_429 = true;
  std::vector<int> on_curl_codes;  // further CURLcode values to retry on
  bool honor_retry_after = true;   // capped by max_backoff and the deadline

  // The wait before attempt `next_attempt` (2 = the first retry) without
  // jitter or Retry-After: min(max_backoff, initial * multiplier^(n-2)).
  absl::Duration Backoff(int next_attempt) const;
};

struct FetchSpec {
  std::string url;
  Method method = Method::kGet;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;                            // POST only
  absl::Duration timeout = absl::Seconds(30);  // per attempt
  int64_t max_body_bytes = 8 << 20;
  int max_redirects = 5;  // 0 = do not follow
  RetryPolicy retry;
  // Response headers to return (lower-case names); others are dropped as
  // they arrive.
  std::vector<std::string> keep_headers;
  // Credential headers (IsCredentialHeader) never leave the item's origin.
  // false: a redirect to another origin fails the item FAILED_PRECONDITION
  // (a walk: a next page on another origin ends it so); true: it is
  // followed with the credential headers left out.
  bool allow_cross_origin = false;
};

// Server-side bounds each item is validated against.
struct FetchLimits {
  int64_t max_url_bytes = 8 << 10;
  int max_headers = 64;
  int64_t max_header_bytes = 16 << 10;  // all request headers together
  int64_t max_request_body_bytes = 1 << 20;
  int64_t max_body_bytes = 64 << 20;  // --max_body_bytes
  int max_redirects = 10;             // --max_redirects
  int max_attempts = 5;               // --max_attempts
  absl::Duration max_backoff = absl::Seconds(30);
  absl::Duration max_timeout = absl::Minutes(5);
};

// OK, or INVALID_ARGUMENT naming the field (as the API spells it, e.g.
// "url", "headers", "retry.max_attempts") and the limit. Checks the URL
// with curl's own parser: http or https, a host, no credentials.
absl::Status ValidateFetchSpec(const FetchSpec& spec,
                               const FetchLimits& limits);

// Whether a request header carries credentials that must stay on their
// origin: Authorization, Cookie, Proxy-Authorization, or one of `extra`
// (lower-case names, --credential_headers). Case-insensitive.
bool IsCredentialHeader(absl::string_view name,
                        const std::vector<std::string>& extra);

// The origin of an absolute URL as "scheme://host:port", normalized: lower
// case, the default port written out, no trailing dot, IDNA hosts in their
// punycode form. INVALID_ARGUMENT for a URL curl cannot parse.
absl::StatusOr<std::string> OriginOf(const std::string& url);

// The URL part of ValidateFetchSpec: http(s), a host, no credentials, at
// most max_url_bytes, an international host name valid IDNA.
// INVALID_ARGUMENT naming "url".
absl::Status ValidateUrl(const std::string& url, const FetchLimits& limits);

// A valid URL with its host in IDNA ASCII form ("http://bücher.example/" ->
// "http://xn--bcher-kva.example/"): what the engine fetches, counts per host
// and checks. A URL that is all ASCII comes back unchanged, unparsed.
absl::StatusOr<std::string> AsciiUrl(const std::string& url);

// The host of an absolute URL as the address guard sees it (NormalizeHost:
// lower case, no trailing dot, no IPv6 brackets, IDNA ASCII; IPv4 written
// as a number or in octal/hex comes back dotted).
absl::StatusOr<std::string> UrlHost(const std::string& url);

// The request-level part of ValidateFetchSpec: the retry policy alone,
// with field names prefixed "retry.".
absl::Status ValidateRetryPolicy(const RetryPolicy& retry,
                                 const FetchLimits& limits);

struct Timings {
  absl::Duration dns, connect, tls, first_byte, total;  // of the last attempt
};

// What a body costs against the memory budget per byte of it: its own
// bytes, and the copy gRPC serializes while the result is being sent.
inline constexpr int64_t kBodyMemoryFactor = 2;

struct FetchResult {
  // OK for a 2xx/3xx answer; otherwise the item's error: HTTP errors map
  // 404->NOT_FOUND, 429->RESOURCE_EXHAUSTED, 5xx->UNAVAILABLE, ...;
  // transport errors UNAVAILABLE, timeouts DEADLINE_EXCEEDED, a body over
  // max_body_bytes RESOURCE_EXHAUSTED, a refused address PERMISSION_DENIED.
  absl::Status status;
  int http_status = 0;  // 0 when no response arrived
  std::string final_url;
  std::vector<std::pair<std::string, std::string>> headers;  // keep_headers
  std::string body;
  Timings timings;
  int attempts = 0;
  // The HTTP version of the last response: 10, 11, 20 or 30; 0 for none.
  int http_version = 0;
  // What body, headers (and a page's items) hold against the memory budget
  // (Engine::Options::memory_budget): whoever keeps the result keeps it,
  // and releases it with the bytes (the rpc layer: once gRPC took them).
  memory::Reservation memory;
};

// The gRPC-style code for an HTTP status (OK below 400).
absl::StatusCode StatusCodeForHttp(int http_status);

// Server-wide retry throttling, like gRPC's retry throttling and Envoy's
// retry budgets: every first attempt earns `ratio` tokens (up to
// `max_tokens`); every retry spends one. With no token left, failures come
// back at once instead of feeding a retry storm. Single-threaded (the I/O
// thread owns it).
class RetryBudget {
 public:
  RetryBudget(double ratio, double max_tokens)
      : ratio_(ratio), max_tokens_(max_tokens), tokens_(max_tokens) {}
  void OnFirstAttempt() { tokens_ = std::min(max_tokens_, tokens_ + ratio_); }
  bool TrySpend() {
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }
  double tokens() const { return tokens_; }

 private:
  const double ratio_;
  const double max_tokens_;
  double tokens_;
};

struct BatchOptions {
  int max_concurrency = 64;  // the seed's Semaphore, >= 1
  // Items not done by then come back DEADLINE_EXCEEDED; attempts are cut
  // to fit and a retry whose backoff would end past it is not started.
  absl::Time deadline = absl::InfiniteFuture();
  bool fail_fast = false;  // the first failure cancels the rest
  // Who asked (the RPC's caller identity, else its peer address): transfer
  // slots are shared round robin across identities, then across one
  // identity's batches and walks. Empty is an identity like any other.
  std::string identity;
  // The caller's W3C trace (--propagate_trace): when valid, every attempt
  // carries a child traceparent (same trace id, a new span id per attempt)
  // unless the item sets its own traceparent header. Not valid: nothing is
  // added, at no cost.
  TraceContext trace;
};

// Called on the I/O thread, exactly once per item, as items finish
// (including items that fail validation, are cancelled or run out of
// time). Must not block. A batch submitted while the engine stops ends
// UNAVAILABLE ("the fetch engine is shutting down"), its callbacks still
// run once each: on the I/O thread, or, once that thread has ended, on the
// submitting thread before Submit returns (the same for a walk's done).
using ItemCallback = absl::AnyInvocable<void(size_t index, FetchResult result)>;
// Called on the I/O thread once, after the last item's callback.
using DoneCallback = absl::AnyInvocable<void()>;

// --- Pagination
// ---------------------------------------------------------------

// How a walk finds the page after the one it just fetched.
struct PageStrategy {
  enum class Kind { kPageNumber, kCursor, kLinkHeader };
  Kind kind = Kind::kPageNumber;
  // kPageNumber: the query parameter carrying the page number (replaced in
  // the first URL), the first page's number and the step.
  // kCursor: the query parameter the cursor goes into; empty = the value at
  // cursor_pointer is the next page's URL (absolute or relative).
  std::string param = "page";
  int64_t first_page = 1;
  int64_t step = 1;
  std::string cursor_pointer;  // kCursor: RFC 6901 pointer into the body
  // When set, the page's JSON array of items: an empty array ends the walk
  // (that page is not delivered); with split_items each element comes back
  // as its own JSON text.
  std::string items_pointer;
  bool split_items = false;
  std::vector<int> stop_statuses;  // an HTTP status that ends the walk
  int64_t max_pages = 0;           // pages delivered by this walk; 0 = no cap
};

// Where a walk stands: the next page's index and URL. A walk started from
// a Position continues exactly there (resume).
struct WalkPosition {
  int64_t next_index = 0;
  std::string next_url;  // empty once the walk has reached its end
  // The walk has fetched a page on another origin than its first one's
  // (allow_cross_origin): the links it follows from there were chosen by
  // that origin, so no later page carries credential headers.
  bool left_origin = false;
  bool done() const { return next_url.empty(); }
};

// INVALID_ARGUMENT naming the field ("strategy.param", ...) for a strategy
// that cannot work, e.g. an empty parameter name or a malformed pointer.
absl::Status ValidatePageStrategy(const PageStrategy& strategy);

// The first URL with query parameter `name` set to `value` (replaced if
// present, appended otherwise; the value is percent-encoded).
absl::StatusOr<std::string> WithQueryParam(const std::string& url,
                                           absl::string_view name,
                                           absl::string_view value);
// `reference` resolved against `base` (RFC 3986), e.g. "/p/2" or "?c=x".
absl::StatusOr<std::string> ResolveUrl(const std::string& base,
                                       const std::string& reference);
// The rel="next" target of RFC 8288 Link header values (several headers or
// several links per header, quoted parameters, rel lists). Unresolved;
// empty when there is none.
std::string NextLink(const std::vector<std::string>& link_values);

// What a walk delivers for one page.
struct Page {
  int64_t index = 0;
  std::string url;
  FetchResult result;
  std::vector<std::string> items;  // split_items only
  WalkPosition next;               // where a resumed walk would continue
};

// The walk's decisions, page by page, in order; no I/O. The engine calls it
// on its I/O thread as soon as a page is in, so the next request goes out
// with no thread hop.
class Paginator {
 public:
  // `first` is the request's first page (its URL is the strategy's base).
  // Next URLs must pass ValidateUrl against `limits`.
  Paginator(const PageStrategy& strategy, std::string first_url,
            const FetchLimits& limits = {});

  // The URL of page `index` if known before the pages ahead of it are
  // processed: always for kPageNumber (prefetch runs ahead), otherwise only
  // the page right after the last processed one.
  std::optional<std::string> UrlOf(int64_t index) const;

  // Starts at `from` (a fresh walk: StartPosition()).
  void Restart(const WalkPosition& from);
  WalkPosition StartPosition() const;

  struct Decision {
    bool deliver = false;
    // Set when the walk ends after this page: OK for a clean end, else the
    // error the walk ends with (naming the page and its URL).
    std::optional<absl::Status> end;
  };
  // Page `page.index` came back (pages arrive in index order). Fills
  // page.items and page.next, and decides.
  Decision OnPage(Page& page);

  int64_t delivered() const { return delivered_; }

 private:
  // kPageNumber: the URL of page `index`, with no max_pages cap; none past
  // int64.
  std::optional<std::string> PageNumberUrl(int64_t index) const;
  // `cursor`: the value at cursor_pointer (kCursor only; none = no next).
  absl::StatusOr<std::optional<std::string>> NextUrl(
      const Page& page, const std::optional<std::string>& cursor) const;
  bool SeenBefore(const std::string& url);

  const PageStrategy strategy_;
  const FetchLimits limits_;
  const std::string first_url_;
  WalkPosition position_;
  int64_t start_index_ = 0;
  int64_t delivered_ = 0;
  // Loop detection in constant memory: the last few URLs exactly, and
  // Brent's cycle finding for longer loops.
  std::vector<uint64_t> recent_;
  size_t recent_next_ = 0;
  uint64_t checkpoint_ = 0;
  int64_t checkpoint_power_ = 1, checkpoint_steps_ = 0;
};

struct WalkOptions {
  // Pages fetched but not yet consumed (WalkHandle::Consumed) at most.
  int prefetch = 2;
  absl::Time deadline = absl::InfiniteFuture();
  std::string identity;  // as BatchOptions::identity
  TraceContext trace;    // as BatchOptions::trace, per page attempt
};
// Called on the I/O thread, in page order. Must not block.
using PageCallback = absl::AnyInvocable<void(Page page)>;
// Called on the I/O thread once, after the last page: OK when the walk
// reached its end, else why it stopped.
using WalkDoneCallback = absl::AnyInvocable<void(absl::Status status)>;

class Engine;

// A submitted batch. Cancel() is thread-safe and idempotent: the engine
// removes the batch's transfers from the multi handle at its next wakeup
// and reports the unfinished items as CANCELLED.
class BatchHandle {
 public:
  void Cancel();

 private:
  friend class Engine;
  BatchHandle(Engine* engine, uint64_t id) : engine_(engine), id_(id) {}
  Engine* const engine_;
  const uint64_t id_;
};

// A walk's prefetch window, shared by the engine and the consumer. Counting
// a consumed page is lock-free; the engine is woken only when the walk is
// actually waiting for the window (a wakeup per page would cost more than
// the page).
struct WalkWindow {
  std::atomic<int64_t> consumed{0};  // pages the reader is done with
  std::atomic<bool> blocked{false};  // the engine waits for `consumed`
};

// A running walk. Thread-safe.
class WalkHandle {
 public:
  // The consumer is done with one more delivered page: the window moves on.
  void Consumed();
  // Ends the walk at the engine's next wakeup (done gets CANCELLED).
  void Cancel();

 private:
  friend class Engine;
  WalkHandle(Engine* engine, uint64_t id, std::shared_ptr<WalkWindow> window)
      : engine_(engine), id_(id), window_(std::move(window)) {}
  Engine* const engine_;
  const uint64_t id_;
  const std::shared_ptr<WalkWindow> window_;
};

// Asked once per new connection, on the I/O thread, with the address curl
// is about to connect to and the normalized host (UrlHost) of the URL being
// fetched (the redirect hop's, on a redirect). Non-OK refuses it.
using AddressPolicy = std::function<absl::Status(
    const sockaddr* address, socklen_t length, absl::string_view host)>;
// Asked on the submitting thread with each item's normalized host.
using HostPolicy = std::function<absl::Status(absl::string_view host)>;

class Engine {
 public:
  struct Options {
    int max_inflight = 512;  // transfers at once; excess waits in FIFO order
    // Transfers per host at once; the rest wait in FIFO. The host is the
    // URL's normalized host and port (lower case, no trailing dot, canonical
    // IP, IDNA ASCII, default port written out): one origin, one share.
    int max_per_host = 64;
    double retry_budget_ratio = 0.2;
    double retry_budget_tokens = 20;  // burst of retries allowed at start
    std::string user_agent = "fetchd/0.1";
    FetchLimits limits;
    // The one place where an address policy is checked: called on the I/O
    // thread with the address curl is about to connect to (after DNS, and
    // for every redirect's connection), once per connection (a reused
    // connection is not asked again). A non-OK status refuses it before any
    // socket exists and fails the item with that status (PERMISSION_DENIED),
    // never retried. Empty = allow.
    AddressPolicy address_policy;
    // Checked at Submit for each valid item, on the caller's thread: an
    // early, clear refusal for a host the address policy would refuse
    // anyway (host allow/deny lists). Empty = none.
    HostPolicy host_policy;
    // Upstream HTTP(S) proxy URL for every transfer; empty = none. The
    // proxy variables of the environment (http_proxy, ...) are ignored
    // either way: a proxy the engine does not know of would hide the real
    // address from address_policy.
    std::string proxy;
    // Tests: CURLOPT_RESOLVE entries ("host:port:address"), so that names
    // resolve to loopback without DNS.
    std::vector<std::string> resolve;
    // Upstream credentials and TLS.
    // Request headers that stay on their origin besides Authorization,
    // Cookie and Proxy-Authorization (lower-case; --credential_headers).
    std::vector<std::string> credential_headers = {"x-api-key"};
    // A PEM bundle of CAs trusted for upstream TLS on top of the system
    // bundle (--upstream_ca_file); empty = the system bundle only. Read
    // once, at Start. Peer and host-name verification are always on.
    std::string upstream_ca_file;
    // Hostile origins (#16). A transfer that receives fewer than
    // min_bytes_per_second bytes a second for low_speed_window (whole
    // seconds, at least 1) ends DEADLINE_EXCEEDED naming the limit, and is
    // retried like any timeout (RetryPolicy::on_timeout). 0 = off.
    int64_t min_bytes_per_second = 1024;
    absl::Duration low_speed_window = absl::Seconds(30);
    // Response header lines per response (each redirect hop and each 1xx
    // counts on its own) and their bytes: past either, or with a single
    // line longer than the bytes cap, the transfer ends and the item fails
    // RESOURCE_EXHAUSTED naming the limit, not retried. 0 = no cap (curl
    // still refuses a single line over 100 KB).
    int max_response_headers = 256;
    int64_t max_response_header_bytes = 64 << 10;
    // Fair shares (#16): transfers one identity (BatchOptions::identity)
    // may have running at once; its other items wait while other
    // identities' run. 0 = no cap (the round robin across identities
    // still shares every freed slot).
    int max_inflight_per_identity = 0;
    // The process-wide memory budget (--memory_budget_bytes; not owned,
    // outlives the engine); null: nothing is counted. A transfer starts
    // only when its first bytes fit (until then it waits, as for a slot),
    // reserves its body as it arrives, and fails RESOURCE_EXHAUSTED naming
    // the budget when the body cannot fit; the result carries the bytes
    // (FetchResult::memory).
    memory::Budget* memory_budget = nullptr;
  };
  struct Stats {
    int inflight = 0;     // transfers on the multi handle
    int waiting = 0;      // items waiting for a transfer slot
    int backing_off = 0;  // items waiting for a retry timer
    int batches = 0;
    int64_t retries = 0;
    int64_t retries_denied = 0;  // by the retry budget
    int hosts = 0;               // hosts with transfers running
    int hosts_at_limit = 0;      // of those, hosts at --max_per_host
    // Counters since start (for metrics): attempts (each try of each item)
    // by HTTP status class, [0] for no response and [1..5] for 1xx..5xx;
    // items ended, by their absl::StatusCode; response body bytes received.
    std::array<int64_t, 6> attempts_by_class{};
    std::array<int64_t, 17> items_by_code{};
    int64_t body_bytes = 0;
    // Connections opened since start (CURLINFO_NUM_CONNECTS summed over
    // every transfer and redirect hop): h2 multiplexing keeps it low.
    int64_t connections = 0;
  };

  // Starts the I/O thread. INTERNAL if libcurl cannot be set up,
  // INVALID_ARGUMENT naming --upstream_ca_file if that file cannot be read
  // or holds no PEM certificate.
  static absl::StatusOr<std::unique_ptr<Engine>> Start(Options options);
  ~Engine();  // cancels every batch (callbacks still run), joins the thread
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Thread-safe. Each item is checked with ValidateFetchSpec against
  // Options::limits; an invalid item is reported at once with its error and
  // the rest of the batch runs. `options.max_concurrency` must be >= 1.
  std::shared_ptr<BatchHandle> Submit(std::vector<FetchSpec> items,
                                      BatchOptions options,
                                      ItemCallback on_item,
                                      DoneCallback on_done);

  // Thread-safe. Walks pages from `from` (Paginator::StartPosition() for a
  // fresh walk), each page fetched with `first`'s settings and the
  // strategy's URL. Call ValidateFetchSpec and ValidatePageStrategy first.
  std::shared_ptr<WalkHandle> Walk(FetchSpec first, PageStrategy strategy,
                                   WalkPosition from, WalkOptions options,
                                   PageCallback on_page,
                                   WalkDoneCallback on_done);

  Stats stats() const;

 private:
  friend class BatchHandle;
  friend class WalkHandle;
  void Consumed(uint64_t walk_id);
  class Loop;
  explicit Engine(std::unique_ptr<Loop> loop);
  void Cancel(uint64_t batch_id);

  std::unique_ptr<Loop> loop_;
};

}  // namespace fetchd::fetch

#endif  // FETCHD_SERVER_FETCH_FETCH_H_
