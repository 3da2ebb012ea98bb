// Engine: one I/O thread, one CURLM. The loop is
//   take commands (new batches, cancels) -> start transfers within the limits
//   -> curl_multi_poll (timeout = next timer) -> curl_multi_perform
//   -> finish CURLMSG_DONE transfers (retry or report) -> fire due timers.
// Everything below Loop's public face runs on that thread only.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <fstream>
#include <iterator>
#include <queue>
#include <sstream>
#include <thread>
#include <variant>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch {
namespace {

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;

absl::Duration FromMicros(curl_off_t us) { return absl::Microseconds(us); }

// Transport failures where a new connection may well succeed.
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

// "host:port" of an absolute URL, as written (what --max_per_host counts).
absl::string_view HostOf(absl::string_view url) {
  size_t start = url.find("://");
  start = start == absl::string_view::npos ? 0 : start + 3;
  const size_t end = url.find_first_of("/?#", start);
  return url.substr(start,
                    end == absl::string_view::npos ? url.npos : end - start);
}

// The whole file, or why not.
absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError("cannot be opened");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError("cannot be read");
  return text.str();
}

// The number of PEM certificates in `pem`, or why it is not a bundle.
absl::StatusOr<int> CountCertificates(const std::string& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  if (bio == nullptr) return absl::InternalError("BIO_new_mem_buf failed");
  ERR_clear_error();
  int count = 0;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    X509_free(cert);
    ++count;
  }
  // The loop ends on "no start line" at the end of the text; anything else
  // is a broken certificate.
  const unsigned long error = ERR_peek_last_error();
  ERR_clear_error();
  if (error != 0 && !(ERR_GET_LIB(error) == ERR_LIB_PEM &&
                      ERR_GET_REASON(error) == PEM_R_NO_START_LINE)) {
    char text[256];
    ERR_error_string_n(error, text, sizeof(text));
    return absl::InvalidArgumentError(
        absl::StrCat("a certificate in it cannot be parsed: ", text));
  }
  if (count == 0)
    return absl::InvalidArgumentError("it holds no PEM certificate");
  return count;
}

}  // namespace

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

void BatchHandle::Cancel() { engine_->Cancel(id_); }

void WalkHandle::Consumed() {
  window_->consumed.fetch_add(1);
  if (window_->blocked.exchange(false)) engine_->Consumed(id_);
}

void WalkHandle::Cancel() { engine_->Cancel(id_); }

// --- The I/O loop
// --------------------------------------------------------------

class Engine::Loop {
 public:
  explicit Loop(Options options)
      : options_(std::move(options)),
        budget_(options_.retry_budget_ratio, options_.retry_budget_tokens) {}
  ~Loop() {
    Stop();
    if (ca_bundle_fd_ >= 0) close(ca_bundle_fd_);
  }

  absl::Status Init();
  void Stop();

  uint64_t Submit(std::vector<FetchSpec> items, BatchOptions options,
                  ItemCallback on_item, DoneCallback on_done)
      ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t SubmitWalk(FetchSpec first, const PageStrategy& strategy,
                      WalkPosition from, WalkOptions options,
                      std::shared_ptr<WalkWindow> window, PageCallback on_page,
                      WalkDoneCallback on_done) ABSL_LOCKS_EXCLUDED(mu_);
  void Cancel(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  void Consumed(uint64_t id) ABSL_LOCKS_EXCLUDED(mu_);
  Stats stats() const;

 private:
  // ValidateFetchSpec, then the URL in ASCII form and the host policy.
  absl::Status CheckItem(FetchSpec& spec) const;
  // One attempt of one item, alive while its easy handle is on the multi.
  struct Transfer {
    uint64_t batch_id = 0;
    size_t index = 0;
    std::string host;  // counted against --max_per_host while running
    EasyHandle easy;
    std::unique_ptr<curl_slist, SlistDeleter> request_headers;
    const FetchSpec* spec = nullptr;
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
    bool body_too_large = false;
    // The address policy's last refusal, and whether a socket was opened
    // since (another address of the host, or a later connection): the
    // refusal decides only if the connect then failed with none allowed.
    absl::Status refused;
    bool allowed_since_refused = false;
    // Items that carry credential headers: redirects are followed here,
    // not by curl, so that no hop takes them to another origin.
    bool manage_redirects = false;
    int redirects = 0;   // hops followed so far
    absl::Time started;  // the attempt's start (hops share its timeout)
    absl::Status redirect_error;  // a hop that may not be followed
    // A hop of this attempt's chain went to another origin: no later hop
    // gets the credential headers, even back on the item's origin (as the
    // Fetch standard drops Authorization for the rest of the chain).
    bool left_origin = false;
    const Options* options = nullptr;
    char error[CURL_ERROR_SIZE] = {};
  };
  enum class ItemState { kWaiting, kRunning, kBackingOff, kDone };
  struct Item {
    ItemState state = ItemState::kWaiting;
    int attempts = 0;
    std::unique_ptr<Transfer> transfer;
  };
  // A walk's own state: its Batch gains one item per page, within the
  // prefetch window, and sheds items once their pages are handed on.
  struct WalkState {
    WalkState(const PageStrategy& strategy, FetchSpec first_page,
              const FetchLimits& limits)
        : paginator(strategy, first_page.url, limits),
          first(std::move(first_page)) {}
    Paginator paginator;
    FetchSpec first;        // every page is fetched with its settings
    int64_t start = 0;      // the first page's index (item 0)
    int64_t started = 0;    // pages started (items so far)
    int64_t processed = 0;  // pages handed to the paginator, in order
    std::shared_ptr<WalkWindow> window;  // the reader's side of the window
    bool strip_link = false;             // Link was kept for the paginator only
    // With credential headers in `first`, pages stay on its origin (or, with
    // allow_cross_origin, go elsewhere without those headers).
    bool credentials = false;
    std::string origin;  // of first.url, when `credentials`
    // A page was on another origin: later pages go without the credential
    // headers (their links were chosen by that origin). Sticky.
    bool left_origin = false;
    absl::flat_hash_map<size_t, FetchResult> arrived;  // ahead of order
    PageCallback on_page;
    WalkDoneCallback on_done;
    std::vector<Page> outbox;  // decided, handed on after the next request
  };
  struct Batch {
    uint64_t id = 0;
    // Item i lives at [i - base]; only walks ever raise base.
    std::deque<FetchSpec> specs;
    std::vector<absl::Status> invalid;  // per item: OK or why it is invalid
    std::deque<Item> items;
    size_t base = 0;
    Item* item(size_t i) { return i < base ? nullptr : &items[i - base]; }
    const FetchSpec& spec(size_t i) const { return specs[i - base]; }
    std::unique_ptr<WalkState> walk;  // set for walks
    BatchOptions options;
    ItemCallback on_item;
    DoneCallback on_done;
    std::deque<size_t> waiting;  // FIFO of items ready for a transfer
    int running = 0;
    size_t remaining = 0;       // items not yet reported
    bool runnable = false;      // queued in runnable_
    bool host_blocked = false;  // queued in blocked_on_host_
    // Set (by Submit, on the caller's thread) when every valid item goes to
    // one host, as in most batches: a full host then blocks the whole
    // batch, with no scan for another host's item.
    std::string one_host;
  };
  struct NewBatch {
    std::unique_ptr<Batch> batch;
  };
  struct CancelBatch {
    uint64_t id;
  };
  struct PageConsumed {
    uint64_t id;
  };
  using Command = std::variant<NewBatch, CancelBatch, PageConsumed>;
  enum class TimerKind { kRetry, kDeadline };
  struct Timer {
    absl::Time when;
    uint64_t batch_id;
    size_t index;
    TimerKind kind;
    bool operator>(const Timer& o) const { return when > o.when; }
  };

  void Run();
  void TakeCommands() ABSL_LOCKS_EXCLUDED(mu_);
  void AddBatch(std::unique_ptr<Batch> batch);
  void StartTransfers();
  // Gives the slots that finished transfers freed to the batches waiting
  // for those hosts.
  void ServeFreedHosts();
  static constexpr size_t kHostScan = 8;  // waiting items looked at per turn
  // Running transfers per host: a transfer counts from StartAttempt until
  // it leaves the multi handle (Ended also wakes a batch waiting for it).
  void Started(const Transfer& t);
  void Ended(const Transfer& t);
  bool HostFull(absl::string_view host) const;
  // How many waiting items a turn may look at for one whose host has room.
  size_t HostScan(const Batch& batch) const {
    return batch.one_host.empty() ? std::min(kHostScan, batch.waiting.size())
                                  : std::min<size_t>(1, batch.waiting.size());
  }
  void StartAttempt(Batch& batch, size_t index);
  void CollectDone();
  void FinishAttempt(Transfer* transfer, CURLcode rc);
  // An engine-followed redirect (Transfer::manage_redirects): true when the
  // next hop is on the multi handle; false when the attempt ends here (no
  // redirect, or t.redirect_error says why it may not be followed).
  bool FollowRedirect(Transfer& t, long http);
  bool CarriesCredentials(const FetchSpec& spec) const;
  // The spec's request headers, less the credential ones when `strip`.
  curl_slist* HeaderList(const FetchSpec& spec, bool strip) const;
  std::string CredentialNames(const FetchSpec& spec) const;
  // Reads --upstream_ca_file once and makes the bundle every handle uses.
  absl::Status LoadCaBundle();
  void FireTimers();
  absl::Duration UntilNextTimer() const;
  void MakeRunnable(Batch& batch);
  void Report(Batch& batch, size_t index, FetchResult result);
  // Ends every unfinished item of the batch with `status`.
  void EndBatch(uint64_t id, const absl::Status& status);
  void EraseIfDone(uint64_t id);
  void Post(Command command) ABSL_LOCKS_EXCLUDED(mu_);
  // Gives the batch its id and hands it to the I/O thread.
  uint64_t Enqueue(std::unique_ptr<Batch> batch) ABSL_LOCKS_EXCLUDED(mu_);
  // Walks: start pages within the window; take a page's result (in any
  // order) and hand pages on in order; end the walk.
  void FillWalk(Batch& batch);
  void OnPageResult(Batch& batch, size_t index, FetchResult result);
  void EndWalk(uint64_t id, absl::Status status);
  void DeliverPages();
  void ReleaseEasy(EasyHandle easy);
  EasyHandle AcquireEasy();
  absl::Status AttemptStatus(const Transfer& t, CURLcode rc, long http) const;
  bool Retryable(const RetryPolicy& policy, CURLcode rc, long http) const;
  void PublishStats();
  void CountItem(absl::StatusCode code) {
    const auto c = static_cast<size_t>(code);
    if (c < stat_items_by_code_.size()) {
      stat_items_by_code_[c].fetch_add(1, std::memory_order_relaxed);
    }
  }

  static size_t OnBody(char* data, size_t size, size_t n, void* user);
  static size_t OnHeader(char* data, size_t size, size_t n, void* user);
  static curl_socket_t OnOpenSocket(void* user, curlsocktype purpose,
                                    curl_sockaddr* address);
  static int OnPrereq(void* user, char* primary_ip, char* local_ip,
                      int primary_port, int local_port);
  // Options::address_policy for the transfer's current URL (the redirect
  // hop's, on a redirect); a refusal is kept in t->refused.
  static bool Allowed(Transfer* t, const sockaddr* address, socklen_t length);

  const Options options_;
  std::unique_ptr<CURLM, MultiDeleter> multi_;
  std::thread thread_;

  absl::Mutex mu_;
  std::vector<Command> commands_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;

  // I/O thread only.
  absl::flat_hash_map<uint64_t, std::unique_ptr<Batch>> batches_;
  std::deque<uint64_t> runnable_;  // batches with waiting items and room
  std::priority_queue<Timer, std::vector<Timer>, std::greater<>> timers_;
  std::vector<EasyHandle> idle_easy_;
  // The system bundle plus --upstream_ca_file, in an in-memory file that
  // curl reads (and caches) like any CA file; empty: curl's default.
  std::string ca_bundle_path_;
  int ca_bundle_fd_ = -1;
  std::unique_ptr<curl_slist, SlistDeleter> resolve_;  // Options::resolve
  // Transfers per host on the multi handle, never above --max_per_host: the
  // rest wait in our FIFO (round robin) rather than in curl's pending
  // queue, which costs far more per transfer than our own.
  absl::flat_hash_map<std::string, int> host_running_;
  absl::flat_hash_map<std::string, std::deque<uint64_t>> blocked_on_host_;
  std::vector<std::string> freed_hosts_;  // hosts a transfer just left
  std::vector<uint64_t> outboxes_;        // walks with pages to hand on
  int running_ = 0;
  int hosts_at_limit_ = 0;  // hosts with --max_per_host transfers running
  int waiting_ = 0;
  int backing_off_ = 0;
  RetryBudget budget_;
  absl::BitGen rng_;

  // Published for stats() from any thread.
  std::atomic<int> stat_inflight_{0}, stat_waiting_{0}, stat_backing_off_{0},
      stat_batches_{0};
  std::atomic<int64_t> stat_retries_{0}, stat_retries_denied_{0};
  std::atomic<int> stat_hosts_{0}, stat_hosts_at_limit_{0};
  // Written by the I/O thread only, read by stats().
  std::array<std::atomic<int64_t>, 6> stat_attempts_by_class_{};
  std::array<std::atomic<int64_t>, 17> stat_items_by_code_{};
  std::atomic<int64_t> stat_body_bytes_{0};
  std::atomic<int64_t> stat_connections_{0};
};

absl::Status Engine::Loop::Init() {
  static const CURLcode global = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (global != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("curl_global_init: ", curl_easy_strerror(global)));
  }
  if (absl::Status s = LoadCaBundle(); !s.ok()) return s;
  multi_.reset(curl_multi_init());
  if (multi_ == nullptr) return absl::InternalError("curl_multi_init failed");
  CURLM* m = multi_.get();
  curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS,
                    static_cast<long>(options_.max_per_host));
  curl_multi_setopt(m, CURLMOPT_MAXCONNECTS,
                    static_cast<long>(options_.max_inflight));
  curl_multi_setopt(m, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
  curl_slist* resolve = nullptr;
  for (const std::string& entry : options_.resolve) {
    resolve = curl_slist_append(resolve, entry.c_str());
  }
  resolve_.reset(resolve);
  thread_ = std::thread([this] { Run(); });
  return absl::OkStatus();
}

absl::Status Engine::Loop::LoadCaBundle() {
  const std::string& path = options_.upstream_ca_file;
  if (path.empty()) return absl::OkStatus();
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--upstream_ca_file=", path, ": ", why));
  };
  absl::StatusOr<std::string> extra = ReadFile(path);
  if (!extra.ok()) return bad(extra.status().message());
  if (absl::StatusOr<int> n = CountCertificates(*extra); !n.ok()) {
    return bad(n.status().message());
  }
  // CURLOPT_CAINFO replaces the default bundle: start from it. curl names
  // the bundle it was built with (Debian: ca-certificates.crt).
  std::string bundle;
  {
    EasyHandle probe(curl_easy_init());
    char* system_path = nullptr;
    if (probe != nullptr &&
        curl_easy_getinfo(probe.get(), CURLINFO_CAINFO, &system_path) ==
            CURLE_OK &&
        system_path != nullptr) {
      absl::StatusOr<std::string> system = ReadFile(system_path);
      if (system.ok()) bundle = *std::move(system);
    }
  }
  if (!bundle.empty() && bundle.back() != '\n') bundle.push_back('\n');
  bundle += *extra;
  // An in-memory file: nothing on disk to clean up or go stale, and curl
  // builds its X509 store from it once and caches it across connections
  // (CURLOPT_CA_CACHE_TIMEOUT), as it does for the default bundle.
  ca_bundle_fd_ = memfd_create("fetchd-upstream-ca", MFD_CLOEXEC);
  if (ca_bundle_fd_ < 0) return bad("memfd_create failed");
  size_t written = 0;
  while (written < bundle.size()) {
    const ssize_t n =
        write(ca_bundle_fd_, bundle.data() + written, bundle.size() - written);
    if (n <= 0) return bad("writing the combined bundle failed");
    written += static_cast<size_t>(n);
  }
  ca_bundle_path_ = absl::StrCat("/proc/self/fd/", ca_bundle_fd_);
  // curl opens it by that name: make sure it can (e.g. /proc is mounted).
  if (absl::StatusOr<std::string> check = ReadFile(ca_bundle_path_);
      !check.ok() || check->size() != bundle.size()) {
    return bad(absl::StrCat("the combined bundle cannot be read back from ",
                            ca_bundle_path_));
  }
  return absl::OkStatus();
}

void Engine::Loop::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) {
    curl_multi_wakeup(multi_.get());
    thread_.join();
  }
}

uint64_t Engine::Loop::Submit(std::vector<FetchSpec> items,
                              BatchOptions options, ItemCallback on_item,
                              DoneCallback on_done) {
  auto batch = std::make_unique<Batch>();
  // Validate here, on the caller's thread: parsing thousands of URLs is
  // work the I/O thread should not do.
  batch->invalid.resize(items.size());
  bool one_host = true;
  for (size_t i = 0; i < items.size(); ++i) {
    batch->invalid[i] = CheckItem(items[i]);
    if (!batch->invalid[i].ok()) continue;
    const absl::string_view host = HostOf(items[i].url);
    if (one_host && batch->one_host.empty()) {
      batch->one_host = std::string(host);
    } else if (host != batch->one_host) {
      one_host = false;
    }
  }
  if (!one_host) batch->one_host.clear();
  batch->specs.assign(std::make_move_iterator(items.begin()),
                      std::make_move_iterator(items.end()));
  batch->options = options;
  batch->options.max_concurrency = std::max(1, options.max_concurrency);
  batch->on_item = std::move(on_item);
  batch->on_done = std::move(on_done);
  return Enqueue(std::move(batch));
}

absl::Status Engine::Loop::CheckItem(FetchSpec& spec) const {
  if (absl::Status s = ValidateFetchSpec(spec, options_.limits); !s.ok()) {
    return s;
  }
  // Fetched, counted per host and checked in its ASCII form.
  absl::StatusOr<std::string> ascii = AsciiUrl(spec.url);
  if (!ascii.ok()) return ascii.status();
  spec.url = *std::move(ascii);
  if (options_.host_policy) {
    absl::StatusOr<std::string> host = UrlHost(spec.url);
    if (!host.ok()) return host.status();
    return options_.host_policy(*host);
  }
  return absl::OkStatus();
}

uint64_t Engine::Loop::SubmitWalk(FetchSpec first, const PageStrategy& strategy,
                                  WalkPosition from, WalkOptions options,
                                  std::shared_ptr<WalkWindow> window,
                                  PageCallback on_page,
                                  WalkDoneCallback on_done) {
  // The caller validated it; only the host's IDNA form is ours to make
  // (next pages' URLs are checked at connect time like any other).
  if (absl::StatusOr<std::string> ascii = AsciiUrl(first.url); ascii.ok()) {
    first.url = *std::move(ascii);
  }
  // The link_header strategy reads Link whether or not the caller asked
  // for it; pages carry it only if asked.
  const bool borrow_link =
      strategy.kind == PageStrategy::Kind::kLinkHeader &&
      std::find(first.keep_headers.begin(), first.keep_headers.end(), "link") ==
          first.keep_headers.end();
  if (borrow_link) first.keep_headers.push_back("link");
  const bool credentials = CarriesCredentials(first);
  std::string origin;
  if (credentials) origin = OriginOf(first.url).value_or(first.url);
  auto batch = std::make_unique<Batch>();
  batch->walk =
      std::make_unique<WalkState>(strategy, std::move(first), options_.limits);
  WalkState& walk = *batch->walk;
  walk.paginator.Restart(from);
  walk.start = walk.started = walk.processed = from.next_index;
  walk.window = std::move(window);
  walk.strip_link = borrow_link;
  walk.credentials = credentials;
  walk.origin = std::move(origin);
  walk.left_origin = from.left_origin;  // carried by the resume token
  walk.on_page = std::move(on_page);
  walk.on_done = std::move(on_done);
  batch->options.deadline = options.deadline;
  // The window is also the walk's concurrency: pages in flight <= prefetch.
  batch->options.max_concurrency = std::max(1, options.prefetch);
  return Enqueue(std::move(batch));
}

uint64_t Engine::Loop::Enqueue(std::unique_ptr<Batch> batch) {
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    id = batch->id = next_id_++;
    commands_.push_back(NewBatch{std::move(batch)});
  }
  curl_multi_wakeup(multi_.get());
  return id;
}

void Engine::Loop::Post(Command command) {
  {
    absl::MutexLock lock(&mu_);
    commands_.push_back(std::move(command));
  }
  curl_multi_wakeup(multi_.get());
}

void Engine::Loop::Cancel(uint64_t id) { Post(CancelBatch{id}); }

void Engine::Loop::Consumed(uint64_t id) { Post(PageConsumed{id}); }

Engine::Stats Engine::Loop::stats() const {
  Stats s;
  s.inflight = stat_inflight_.load(std::memory_order_relaxed);
  s.waiting = stat_waiting_.load(std::memory_order_relaxed);
  s.backing_off = stat_backing_off_.load(std::memory_order_relaxed);
  s.batches = stat_batches_.load(std::memory_order_relaxed);
  s.retries = stat_retries_.load(std::memory_order_relaxed);
  s.retries_denied = stat_retries_denied_.load(std::memory_order_relaxed);
  s.hosts = stat_hosts_.load(std::memory_order_relaxed);
  s.hosts_at_limit = stat_hosts_at_limit_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < s.attempts_by_class.size(); ++i) {
    s.attempts_by_class[i] =
        stat_attempts_by_class_[i].load(std::memory_order_relaxed);
  }
  for (size_t i = 0; i < s.items_by_code.size(); ++i) {
    s.items_by_code[i] = stat_items_by_code_[i].load(std::memory_order_relaxed);
  }
  s.body_bytes = stat_body_bytes_.load(std::memory_order_relaxed);
  s.connections = stat_connections_.load(std::memory_order_relaxed);
  return s;
}

void Engine::Loop::Run() {
  for (;;) {
    TakeCommands();
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    StartTransfers();
    PublishStats();
    // Pages waiting to be handed on: do not sleep on them.
    const int64_t wait_ms =
        outboxes_.empty()
            ? std::clamp<int64_t>(absl::ToInt64Milliseconds(UntilNextTimer()),
                                  0, 1000)
            : 0;
    curl_multi_poll(multi_.get(), nullptr, 0, static_cast<int>(wait_ms),
                    nullptr);
    int still_running = 0;
    curl_multi_perform(multi_.get(), &still_running);
    CollectDone();
    FireTimers();
    if (!outboxes_.empty()) {
      // A walk's next request goes out before its pages are handed on:
      // the consumer's work overlaps the origin's round trip.
      StartTransfers();
      curl_multi_perform(multi_.get(), &still_running);
      DeliverPages();
      // NOTE: every perform is followed by a collect: a transfer it
      // finished sits in curl's message queue, which poll does not watch.
      // What it fills goes out next round (poll timeout 0), after commands
      // and timers: many busy walks must not starve cancels and deadlines.
      CollectDone();
    }
  }
  // Shutting down: every batch ends, its callbacks still run.
  std::vector<uint64_t> ids;
  for (const auto& [id, batch] : batches_) ids.push_back(id);
  for (uint64_t id : ids) {
    EndBatch(id, absl::CancelledError("the fetch engine is shutting down"));
  }
  {
    absl::MutexLock lock(&mu_);
    commands_.clear();  // batches submitted during shutdown are dropped
  }
  idle_easy_.clear();
  PublishStats();
}

void Engine::Loop::TakeCommands() {
  std::vector<Command> commands;
  {
    absl::MutexLock lock(&mu_);
    commands.swap(commands_);
  }
  for (Command& command : commands) {
    if (auto* add = std::get_if<NewBatch>(&command)) {
      AddBatch(std::move(add->batch));
    } else if (auto* cancel = std::get_if<CancelBatch>(&command)) {
      EndBatch(cancel->id, absl::CancelledError("cancelled by the caller"));
    } else {
      auto it = batches_.find(std::get<PageConsumed>(command).id);
      if (it == batches_.end() || it->second->walk == nullptr) continue;
      FillWalk(*it->second);
    }
  }
}

void Engine::Loop::AddBatch(std::unique_ptr<Batch> owned) {
  Batch& batch = *owned;
  const uint64_t id = batch.id;
  batches_[id] = std::move(owned);
  if (batch.walk != nullptr) {
    if (batch.options.deadline != absl::InfiniteFuture()) {
      timers_.push(Timer{batch.options.deadline, id, 0, TimerKind::kDeadline});
    }
    if (batch.walk->paginator.UrlOf(batch.walk->start).has_value()) {
      FillWalk(batch);
    } else {  // resumed from a finished walk: nothing left
      EndWalk(id, absl::OkStatus());
    }
    return;
  }
  batch.items.resize(batch.specs.size());
  batch.remaining = batch.specs.size();
  // Queue the valid items first, so that ending the batch early (an
  // invalid item with fail_fast) finds every item in a known state.
  for (size_t i = 0; i < batch.specs.size(); ++i) {
    if (batch.invalid[i].ok()) {
      batch.waiting.push_back(i);
      ++waiting_;
    }
  }
  for (size_t i = 0; i < batch.specs.size(); ++i) {
    if (batch.invalid[i].ok()) continue;
    FetchResult result;
    result.status = std::move(batch.invalid[i]);
    result.final_url = batch.specs[i].url;
    Report(batch, i, std::move(result));
    if (!batches_.contains(id)) return;  // fail_fast ended it
  }
  if (batch.options.deadline != absl::InfiniteFuture()) {
    timers_.push(Timer{batch.options.deadline, id, 0, TimerKind::kDeadline});
  }
  MakeRunnable(batch);
  EraseIfDone(id);
}

void Engine::Loop::MakeRunnable(Batch& batch) {
  // A batch waiting for a full host is served when that host frees a slot.
  if (!batch.runnable && !batch.host_blocked && !batch.waiting.empty() &&
      batch.running < batch.options.max_concurrency) {
    batch.runnable = true;
    runnable_.push_back(batch.id);
  }
}

void Engine::Loop::ServeFreedHosts() {
  std::vector<std::string> hosts;
  hosts.swap(freed_hosts_);
  for (const std::string& host : hosts) {
    auto blocked = blocked_on_host_.find(host);
    if (blocked == blocked_on_host_.end()) continue;
    std::deque<uint64_t>& ids = blocked->second;
    // Oldest first, until the host is full again: a batch that no longer
    // has an item for it passes the slot on instead of losing it.
    while (!ids.empty() && running_ < options_.max_inflight) {
      if (HostFull(host)) break;
      const uint64_t id = ids.front();
      ids.pop_front();
      auto it = batches_.find(id);
      if (it == batches_.end()) continue;  // ended meanwhile
      Batch& batch = *it->second;
      batch.host_blocked = false;
      const size_t scan = HostScan(batch);
      size_t pos = 0;
      while (pos < scan && HostOf(batch.spec(batch.waiting[pos]).url) != host) {
        ++pos;
      }
      if (pos < scan && batch.running < batch.options.max_concurrency) {
        const size_t index = batch.waiting[pos];
        batch.waiting.erase(batch.waiting.begin() +
                            static_cast<ptrdiff_t>(pos));
        --waiting_;
        StartAttempt(batch, index);
      }
      auto again = batches_.find(id);
      if (again == batches_.end()) continue;  // a failed start ended it
      Batch& still = *again->second;
      if (!still.one_host.empty() && !still.waiting.empty() &&
          still.running < still.options.max_concurrency && HostFull(host)) {
        // Straight back in line for this host, without a turn in
        // runnable_ that would only find the host full.
        still.host_blocked = true;
        ids.push_back(id);
        break;
      }
      MakeRunnable(still);
    }
    // NOTE: look again: StartAttempt may have changed the map.
    blocked = blocked_on_host_.find(host);
    if (blocked != blocked_on_host_.end() && blocked->second.empty()) {
      blocked_on_host_.erase(blocked);
    }
  }
}

void Engine::Loop::StartTransfers() {
  ServeFreedHosts();
  // Round robin over batches, one item at a time: a big batch cannot starve
  // the others, and each batch keeps its own FIFO order (but for items
  // whose host is full, which the next few may pass).
  while (running_ < options_.max_inflight && !runnable_.empty()) {
    const uint64_t id = runnable_.front();
    runnable_.pop_front();
    auto it = batches_.find(id);
    if (it == batches_.end()) continue;
    Batch& batch = *it->second;
    batch.runnable = false;
    if (batch.waiting.empty() ||
        batch.running >= batch.options.max_concurrency) {
      continue;
    }
    size_t pos = 0;
    const size_t scan = HostScan(batch);
    while (pos < scan && HostFull(HostOf(batch.spec(batch.waiting[pos]).url))) {
      ++pos;
    }
    if (pos == scan) {  // wait for a transfer to the first item's host
      if (!batch.host_blocked) {
        batch.host_blocked = true;
        blocked_on_host_[HostOf(batch.spec(batch.waiting.front()).url)]
            .push_back(id);
      }
      continue;
    }
    const size_t index = batch.waiting[pos];
    batch.waiting.erase(batch.waiting.begin() + static_cast<ptrdiff_t>(pos));
    --waiting_;
    StartAttempt(batch, index);
    // A failed start reports at once, which may end the batch.
    if (auto again = batches_.find(id); again != batches_.end()) {
      MakeRunnable(*again->second);
    }
  }
}

void Engine::Loop::Started(const Transfer& t) {
  ++running_;
  if (++host_running_[t.host] == options_.max_per_host) ++hosts_at_limit_;
}

bool Engine::Loop::HostFull(absl::string_view host) const {
  auto running = host_running_.find(host);
  return running != host_running_.end() &&
         running->second >= options_.max_per_host;
}

void Engine::Loop::Ended(const Transfer& t) {
  --running_;
  auto running = host_running_.find(t.host);
  if (running != host_running_.end()) {
    if (running->second-- == options_.max_per_host) --hosts_at_limit_;
    if (running->second == 0) host_running_.erase(running);
  }
  // A slot is free: StartTransfers gives it to a batch waiting for it.
  if (blocked_on_host_.contains(t.host)) freed_hosts_.push_back(t.host);
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

void Engine::Loop::StartAttempt(Batch& batch, size_t index) {
  Item& item = *batch.item(index);
  const FetchSpec& spec = batch.spec(index);
  const absl::Time now = absl::Now();
  const absl::Duration left = batch.options.deadline - now;
  auto t = std::make_unique<Transfer>();
  t->batch_id = batch.id;
  t->index = index;
  t->host = std::string(HostOf(spec.url));
  t->spec = &spec;
  t->options = &options_;
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
  curl_slist* list = HeaderList(spec, /*strip=*/false);
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

curl_slist* Engine::Loop::HeaderList(const FetchSpec& spec, bool strip) const {
  curl_slist* list = nullptr;
  for (const auto& [name, value] : spec.headers) {
    if (strip && IsCredentialHeader(name, options_.credential_headers)) {
      continue;
    }
    list = curl_slist_append(list, absl::StrCat(name, ": ", value).c_str());
  }
  return list;
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
      HeaderList(spec, /*strip=*/t.left_origin));
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
  const size_t len = size * n;
  if (static_cast<int64_t>(t->body.size() + len) > t->spec->max_body_bytes) {
    t->body_too_large = true;
    return CURL_WRITEFUNC_ERROR;  // aborts the transfer
  }
  t->body.append(data, len);
  return len;
}

size_t Engine::Loop::OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t len = size * n;
  absl::string_view line(data, len);
  if (absl::StartsWith(line, "HTTP/")) {
    t->headers.clear();  // a new response (after a redirect or 100)
    return len;
  }
  if (t->spec->keep_headers.empty()) return len;
  const size_t colon = line.find(':');
  if (colon == absl::string_view::npos) return len;
  std::string name =
      absl::AsciiStrToLower(absl::StripAsciiWhitespace(line.substr(0, colon)));
  for (const std::string& wanted : t->spec->keep_headers) {
    if (wanted == name) {
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
  if (!Allowed(t, &address->addr, address->addrlen)) return CURL_SOCKET_BAD;
  return socket(address->family, address->socktype, address->protocol);
}

int Engine::Loop::OnPrereq(void* user, char* primary_ip, char* /*local_ip*/,
                           int primary_port, int /*local_port*/) {
  auto* t = static_cast<Transfer*>(user);
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
  if (t.body_too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "response body exceeds max_body_bytes=", t.spec->max_body_bytes));
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
      return absl::DeadlineExceededError(absl::StrCat("timed out: ", detail));
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

bool Engine::Loop::Retryable(const RetryPolicy& policy, CURLcode rc,
                             long http) const {
  if (rc == CURLE_OK) {
    return (http == 429 && policy.on_429) || (http >= 500 && policy.on_5xx);
  }
  if (rc == CURLE_OPERATION_TIMEDOUT) return policy.on_timeout;
  if (IsConnectError(rc) && policy.on_connect_error) return true;
  return std::find(policy.on_curl_codes.begin(), policy.on_curl_codes.end(),
                   static_cast<int>(rc)) != policy.on_curl_codes.end();
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
      t->redirect_error.ok() && !t->body_too_large &&
      Retryable(spec.retry, rc, http);
  ReleaseEasy(std::move(t->easy));

  if (retry_wanted) {
    absl::Duration delay = spec.retry.Backoff(item.attempts + 1);
    if (spec.retry.jitter) {
      delay = absl::Nanoseconds(absl::Uniform<int64_t>(
          absl::IntervalClosed, rng_, 0, absl::ToInt64Nanoseconds(delay)));
    }
    if (spec.retry.honor_retry_after && after > 0) {
      delay = std::min(absl::Seconds(after), spec.retry.max_backoff);
    }
    const absl::Time when = absl::Now() + delay;
    if (when >= batch.options.deadline) {
      result.status = absl::Status(
          result.status.code(),
          absl::StrCat(result.status.message(), " (no retry: backoff of ",
                       absl::FormatDuration(delay),
                       " ends past the deadline)"));
    } else if (!budget_.TrySpend()) {
      stat_retries_denied_.fetch_add(1, std::memory_order_relaxed);
      result.status = absl::Status(
          result.status.code(),
          absl::StrCat(result.status.message(),
                       " (no retry: the server's retry budget is spent, "
                       "--retry_budget_ratio)"));
    } else {
      stat_retries_.fetch_add(1, std::memory_order_relaxed);
      item.state = ItemState::kBackingOff;
      ++backing_off_;
      timers_.push(Timer{when, batch.id, raw->index, TimerKind::kRetry});
      MakeRunnable(batch);
      return;
    }
  }
  result.body = std::move(t->body);
  result.headers = std::move(t->headers);
  const uint64_t id = batch.id;
  Report(batch, raw->index, std::move(result));
  if (auto it = batches_.find(id); it != batches_.end()) {
    MakeRunnable(*it->second);
    EraseIfDone(id);
  }
}

void Engine::Loop::Report(Batch& batch, size_t index, FetchResult result) {
  Item& item = *batch.item(index);
  item.state = ItemState::kDone;
  --batch.remaining;
  CountItem(result.status.code());
  if (batch.walk != nullptr)
    return OnPageResult(batch, index, std::move(result));
  const bool failed = !result.status.ok();
  absl::Status cause =
      failed && batch.options.fail_fast
          ? absl::CancelledError(absl::StrCat("cancelled: item ", index, " (",
                                              result.final_url,
                                              ") failed and fail_fast is set"))
          : absl::OkStatus();
  batch.on_item(index, std::move(result));
  if (!cause.ok() && batch.remaining > 0) EndBatch(batch.id, cause);
}

void Engine::Loop::EndBatch(uint64_t id, const absl::Status& status) {
  auto it = batches_.find(id);
  if (it == batches_.end()) return;  // already over
  Batch& batch = *it->second;
  if (batch.walk != nullptr) return EndWalk(id, status);
  for (size_t i = 0; i < batch.items.size() && batch.remaining > 0; ++i) {
    Item& item = batch.items[i];
    switch (item.state) {
      case ItemState::kDone:
        continue;
      case ItemState::kRunning:
        curl_multi_remove_handle(multi_.get(), item.transfer->easy.get());
        ReleaseEasy(std::move(item.transfer->easy));
        Ended(*item.transfer);
        item.transfer.reset();
        --batch.running;
        break;
      case ItemState::kBackingOff:
        --backing_off_;  // its timer finds the item done and does nothing
        break;
      case ItemState::kWaiting:
        --waiting_;
        break;
    }
    FetchResult result;
    result.status = status;
    result.attempts = item.attempts;
    result.final_url = batch.spec(i).url;
    item.state = ItemState::kDone;
    --batch.remaining;
    CountItem(status.code());
    batch.on_item(i, std::move(result));
  }
  batch.waiting.clear();
  EraseIfDone(id);
}

void Engine::Loop::EraseIfDone(uint64_t id) {
  auto it = batches_.find(id);
  if (it == batches_.end() || it->second->remaining > 0 ||
      it->second->walk != nullptr) {
    return;  // a walk ends only through EndWalk
  }
  std::unique_ptr<Batch> batch = std::move(it->second);
  batches_.erase(it);
  PublishStats();  // stats() agrees with what on_done tells
  if (batch->on_done) batch->on_done();
}

void Engine::Loop::FillWalk(Batch& batch) {
  WalkState& walk = *batch.walk;
  for (;;) {
    // First whether the next page is known at all (a cursor is not, until
    // the page before it is in): only a walk held back by the window asks
    // its reader for a wakeup.
    std::optional<std::string> url = walk.paginator.UrlOf(walk.started);
    if (!url.has_value()) break;
    const int64_t consumed = walk.window->consumed.load();
    if (walk.started - walk.start - consumed >= batch.options.max_concurrency) {
      // Full: ask the reader to wake us, then look again in case it
      // consumed in between (it reads `blocked` after counting).
      walk.window->blocked.store(true);
      if (walk.window->consumed.load() == consumed) break;
      walk.window->blocked.store(false);
      continue;
    }
    FetchSpec spec = walk.first;
    spec.url = *std::move(url);
    // A next page on an international host: its IDNA ASCII form, as for
    // the first (the paginator checked that it has one).
    if (absl::StatusOr<std::string> ascii = AsciiUrl(spec.url); ascii.ok()) {
      spec.url = *std::move(ascii);
    }
    if (walk.credentials) {
      // A next link, cursor URL or resume token on another origin.
      absl::StatusOr<std::string> origin = OriginOf(spec.url);
      if (!origin.ok() || *origin != walk.origin) {
        if (!walk.first.allow_cross_origin) {
          return EndWalk(
              batch.id,
              absl::FailedPreconditionError(absl::StrCat(
                  "page ", walk.started, " (", spec.url, ") is on origin ",
                  origin.value_or(spec.url), ", not the first page's origin ",
                  walk.origin, ": the request's credential headers (",
                  CredentialNames(walk.first),
                  ") stay on their origin; set allow_cross_origin to follow "
                  "it without them")));
        }
        walk.left_origin = true;
      }
      // Once the walk has left its origin, every later page goes without
      // them, back on the first origin too.
      if (walk.left_origin) {
        spec.headers.erase(
            std::remove_if(spec.headers.begin(), spec.headers.end(),
                           [this](const auto& h) {
                             return IsCredentialHeader(
                                 h.first, options_.credential_headers);
                           }),
            spec.headers.end());
      }
    }
    batch.specs.push_back(std::move(spec));
    batch.items.emplace_back();
    batch.waiting.push_back(static_cast<size_t>(walk.started - walk.start));
    ++batch.remaining;
    ++waiting_;
    ++walk.started;
  }
  MakeRunnable(batch);
}

void Engine::Loop::OnPageResult(Batch& batch, size_t index,
                                FetchResult result) {
  WalkState& walk = *batch.walk;
  walk.arrived.emplace(index, std::move(result));
  const uint64_t id = batch.id;
  for (;;) {
    const auto next = static_cast<size_t>(walk.processed - walk.start);
    auto it = walk.arrived.find(next);
    if (it == walk.arrived.end()) break;
    Page page;
    page.index = walk.processed;
    page.url = batch.spec(next).url;
    page.result = std::move(it->second);
    walk.arrived.erase(it);
    ++walk.processed;
    // The page's item is done and handed on: shed it (flat memory).
    while (!batch.items.empty() && batch.base < next + 1 &&
           batch.items.front().state == ItemState::kDone) {
      batch.items.pop_front();
      batch.specs.pop_front();
      ++batch.base;
    }
    // A page redirected to another origin: its links were chosen there.
    if (walk.credentials && !walk.left_origin) {
      absl::StatusOr<std::string> origin = OriginOf(
          page.result.final_url.empty() ? page.url : page.result.final_url);
      if (!origin.ok() || *origin != walk.origin) walk.left_origin = true;
    }
    Paginator::Decision decision = walk.paginator.OnPage(page);
    page.next.left_origin = walk.left_origin;
    if (decision.deliver) {
      if (walk.strip_link) {
        auto& headers = page.result.headers;
        headers.erase(
            std::remove_if(headers.begin(), headers.end(),
                           [](const auto& h) { return h.first == "link"; }),
            headers.end());
      }
      if (walk.outbox.empty()) outboxes_.push_back(id);
      walk.outbox.push_back(std::move(page));
    }
    if (decision.end.has_value()) return EndWalk(id, *std::move(decision.end));
  }
  FillWalk(batch);
}

void Engine::Loop::EndWalk(uint64_t id, absl::Status status) {
  auto it = batches_.find(id);
  if (it == batches_.end()) return;
  std::unique_ptr<Batch> batch = std::move(it->second);
  batches_.erase(it);
  // Pages still in flight or waiting are dropped without a result.
  for (Item& item : batch->items) {
    switch (item.state) {
      case ItemState::kRunning:
        curl_multi_remove_handle(multi_.get(), item.transfer->easy.get());
        ReleaseEasy(std::move(item.transfer->easy));
        Ended(*item.transfer);
        item.transfer.reset();
        break;
      case ItemState::kBackingOff:
        --backing_off_;
        break;
      case ItemState::kWaiting:
        --waiting_;
        break;
      case ItemState::kDone:
        break;
    }
  }
  if (status.code() == absl::StatusCode::kDeadlineExceeded &&
      !absl::StrContains(status.message(), "page ")) {
    status = absl::DeadlineExceededError(absl::StrCat(
        "the RPC deadline passed at page ", batch->walk->processed));
  }
  PublishStats();
  WalkState& walk = *batch->walk;
  for (Page& page : walk.outbox) walk.on_page(std::move(page));
  walk.on_done(std::move(status));
}

void Engine::Loop::DeliverPages() {
  std::vector<uint64_t> ids;
  ids.swap(outboxes_);
  for (uint64_t id : ids) {
    auto it = batches_.find(id);
    if (it == batches_.end()) continue;  // ended: EndWalk delivered them
    WalkState& walk = *it->second->walk;
    std::vector<Page> pages;
    pages.swap(walk.outbox);
    for (Page& page : pages) walk.on_page(std::move(page));
  }
}

absl::Duration Engine::Loop::UntilNextTimer() const {
  if (timers_.empty()) return absl::Seconds(1);
  return timers_.top().when - absl::Now();
}

void Engine::Loop::FireTimers() {
  const absl::Time now = absl::Now();
  while (!timers_.empty() && timers_.top().when <= now) {
    const Timer timer = timers_.top();
    timers_.pop();
    auto it = batches_.find(timer.batch_id);
    if (it == batches_.end()) continue;
    Batch& batch = *it->second;
    if (timer.kind == TimerKind::kDeadline) {
      EndBatch(timer.batch_id,
               absl::DeadlineExceededError(
                   "the RPC deadline passed before the item finished"));
      continue;
    }
    Item* item = batch.item(timer.index);
    if (item == nullptr || item->state != ItemState::kBackingOff) continue;
    item->state = ItemState::kWaiting;
    --backing_off_;
    // A retry goes ahead of items that have not started yet.
    batch.waiting.push_front(timer.index);
    ++waiting_;
    MakeRunnable(batch);
  }
}

void Engine::Loop::PublishStats() {
  stat_inflight_.store(running_, std::memory_order_relaxed);
  stat_waiting_.store(waiting_, std::memory_order_relaxed);
  stat_backing_off_.store(backing_off_, std::memory_order_relaxed);
  stat_batches_.store(static_cast<int>(batches_.size()),
                      std::memory_order_relaxed);
  stat_hosts_.store(static_cast<int>(host_running_.size()),
                    std::memory_order_relaxed);
  stat_hosts_at_limit_.store(hosts_at_limit_, std::memory_order_relaxed);
}

// --- Engine
// -----------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Engine>> Engine::Start(Options options) {
  auto loop = std::make_unique<Loop>(std::move(options));
  if (absl::Status s = loop->Init(); !s.ok()) return s;
  return std::unique_ptr<Engine>(new Engine(std::move(loop)));
}

Engine::Engine(std::unique_ptr<Loop> loop) : loop_(std::move(loop)) {}

Engine::~Engine() { loop_->Stop(); }

std::shared_ptr<BatchHandle> Engine::Submit(std::vector<FetchSpec> items,
                                            BatchOptions options,
                                            ItemCallback on_item,
                                            DoneCallback on_done) {
  const uint64_t id = loop_->Submit(std::move(items), options,
                                    std::move(on_item), std::move(on_done));
  return std::shared_ptr<BatchHandle>(new BatchHandle(this, id));
}

std::shared_ptr<WalkHandle> Engine::Walk(FetchSpec first, PageStrategy strategy,
                                         WalkPosition from, WalkOptions options,
                                         PageCallback on_page,
                                         WalkDoneCallback on_done) {
  auto window = std::make_shared<WalkWindow>();
  const uint64_t id =
      loop_->SubmitWalk(std::move(first), strategy, std::move(from), options,
                        window, std::move(on_page), std::move(on_done));
  return std::shared_ptr<WalkHandle>(new WalkHandle(this, id, window));
}

void Engine::Cancel(uint64_t batch_id) { loop_->Cancel(batch_id); }

void Engine::Consumed(uint64_t walk_id) { loop_->Consumed(walk_id); }

Engine::Stats Engine::stats() const { return loop_->stats(); }

}  // namespace fetchd::fetch
