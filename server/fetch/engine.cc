// Engine (fetch.h) and its loop's life: Init, Run, Stop, the command queue
// from other threads, Submit's validation on the caller's thread, stats.
// The loop's other parts: see engine_loop.h.
#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>
#include <variant>

#include "absl/strings/str_cat.h"
#include "server/fetch/engine_loop.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch {
namespace {

using internal::EasyHandle;
using internal::HostKey;

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

void BatchHandle::Cancel() { engine_->Cancel(id_); }

void WalkHandle::Consumed() {
  window_->consumed.fetch_add(1);
  if (window_->blocked.exchange(false)) engine_->Consumed(id_);
}

void WalkHandle::Cancel() { engine_->Cancel(id_); }

// --- The I/O loop
// --------------------------------------------------------------

Engine::Loop::~Loop() {
  Stop();
  // Before multi_ goes: a release on another thread may be waking it.
  if (options_.memory_budget != nullptr && memory_waker_ != 0) {
    options_.memory_budget->RemoveWaker(memory_waker_);
  }
  if (ca_bundle_fd_ >= 0) close(ca_bundle_fd_);
}

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
  // A release in the memory budget wakes the loop: transfers waiting for
  // room start (curl_multi_wakeup is the one call safe from any thread).
  if (options_.memory_budget != nullptr) {
    memory_waker_ =
        options_.memory_budget->AddWaker([m] { curl_multi_wakeup(m); });
  }
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
  absl::MutexLock lock(&mu_);
  closed_ = true;  // no thread ever ran (Init failed) or it has ended
}

uint64_t Engine::Loop::Submit(std::vector<FetchSpec> items,
                              BatchOptions options, ItemCallback on_item,
                              DoneCallback on_done) {
  auto batch = std::make_unique<Batch>();
  // Validate here, on the caller's thread: parsing thousands of URLs is
  // work the I/O thread should not do.
  batch->invalid.resize(items.size());
  batch->hosts.resize(items.size());
  bool one_host = true;
  for (size_t i = 0; i < items.size(); ++i) {
    batch->invalid[i] = CheckItem(items[i]);
    if (!batch->invalid[i].ok()) continue;
    batch->hosts[i] = HostKey(items[i].url);
    const std::string& host = batch->hosts[i];
    if (one_host && batch->one_host.empty()) {
      batch->one_host = host;
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

uint64_t Engine::Loop::Enqueue(std::unique_ptr<Batch> batch) {
  uint64_t id;
  bool queued = false;
  {
    absl::MutexLock lock(&mu_);
    id = batch->id = next_id_++;
    if (!closed_) {
      commands_.push_back(NewBatch{std::move(batch)});
      queued = true;
    }
  }
  if (queued) {
    curl_multi_wakeup(multi_.get());
  } else {
    // The I/O thread is gone (the engine is being destroyed): its
    // callbacks can only run here, and must run once all the same.
    Refuse(*batch, absl::UnavailableError("the fetch engine is shutting down"));
  }
  return id;
}

void Engine::Loop::Refuse(Batch& batch, const absl::Status& status) {
  if (batch.walk != nullptr) {
    CountItem(status.code());
    batch.walk->on_done(status);
    return;
  }
  for (size_t i = 0; i < batch.specs.size(); ++i) {
    FetchResult result;
    result.status = batch.invalid[i].ok() ? status : batch.invalid[i];
    result.final_url = batch.specs[i].url;
    CountItem(result.status.code());
    batch.on_item(i, std::move(result));
  }
  if (batch.on_done) batch.on_done();
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
  io_thread_.AssertHeld();  // this is the I/O thread
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
  // Batches submitted meanwhile (a callback above may submit more) are
  // refused, each callback still run once; from the last take on, Enqueue
  // refuses them on the caller's thread.
  for (;;) {
    std::vector<Command> commands;
    {
      absl::MutexLock lock(&mu_);
      commands.swap(commands_);
      if (commands.empty()) {
        closed_ = true;
        break;
      }
    }
    for (Command& command : commands) {
      if (auto* add = std::get_if<NewBatch>(&command)) {
        Refuse(*add->batch,
               absl::UnavailableError("the fetch engine is shutting down"));
      }
    }
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
