// JobsService: the Jobs API over a JobStore. Store calls run on a few store
// threads (they block); watches are served by one watch thread that reads
// each watched job's new events when the local runner says it changed, and
// at least every poll interval (progress made by other replicas).
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "server/jobs/jobs.h"
#include "server/jobs/runner.h"
#include "server/jobs/webhook.h"
#include "server/jobs/work.h"

namespace fetchd::jobs {
namespace {

constexpr size_t kMaxIdempotencyKeyBytes = 256;
constexpr int kDefaultListPageSize = 50;
constexpr int kMaxListPageSize = 1000;
constexpr int kDefaultResultsPageSize = 1000;
constexpr int kMaxResultsPageSize = 10000;
constexpr int64_t kDefaultResultsPageBytes = int64_t{4} << 20;
constexpr int64_t kMaxResultsPageBytes = int64_t{64} << 20;
constexpr int kEventsPerRead = 256;

void SetTime(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t micros = absl::ToUnixMicros(t);
  out->set_seconds(micros / 1'000'000);
  out->set_nanos(static_cast<int32_t>(micros % 1'000'000) * 1000);
}

bool Known(absl::Time t) { return t != absl::InfinitePast(); }

void ToProtoCounts(const Counts& counts, v1::JobCounts* out) {
  out->set_total(counts.total);
  out->set_done(counts.done);
  out->set_failed(counts.failed);
  out->set_bytes(counts.bytes);
}

void ToProtoJob(const Job& job, v1::Job* out) {
  out->set_id(job.id);
  out->set_kind(static_cast<v1::JobKind>(job.kind));
  out->set_state(static_cast<v1::JobState>(job.state));
  ToProtoCounts(job.counts, out->mutable_counts());
  SetTime(job.created_at, out->mutable_created_at());
  if (Known(job.started_at)) SetTime(job.started_at, out->mutable_started_at());
  if (Known(job.finished_at)) {
    SetTime(job.finished_at, out->mutable_finished_at());
  }
  if (Known(job.expires_at)) SetTime(job.expires_at, out->mutable_expires_at());
  if (job.error_code != 0) {
    out->mutable_error()->set_code(job.error_code);
    out->mutable_error()->set_message(job.error_message);
  }
  out->set_idempotency_key(job.idempotency_key);
  if (!job.webhook.url.empty()) {
    v1::WebhookStatus* webhook = out->mutable_webhook();
    webhook->set_url(job.webhook.url);
    const Delivery& last = job.last_delivery;
    webhook->set_event(last.event);
    webhook->set_state(static_cast<v1::WebhookDeliveryState>(last.state));
    webhook->set_attempts(last.attempts);
    webhook->set_last_error(last.last_error);
    if (last.state == DeliveryState::kPending && Known(last.next_attempt_at)) {
      SetTime(last.next_attempt_at, webhook->mutable_next_attempt_at());
    }
  }
  out->set_attempts(job.attempts);
  out->set_seq(job.seq);
}

v1::WatchResponse ToProtoEvent(const Event& event) {
  v1::WatchResponse out;
  out.set_seq(event.seq);
  out.set_state(static_cast<v1::JobState>(event.state));
  ToProtoCounts(event.counts, out.mutable_counts());
  SetTime(event.time, out.mutable_time());
  if (event.error_code != 0) {
    out.mutable_error()->set_code(event.error_code);
    out.mutable_error()->set_message(event.error_message);
  }
  return out;
}

Event EventOf(const Job& job) {
  return {.seq = job.seq,
          .state = job.state,
          .counts = job.counts,
          .time = absl::Now(),
          .error_code = job.error_code,
          .error_message = job.error_message};
}

std::string HexSha256(const std::string& bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

// ListResults page tokens: the last index sent, opaque to callers.
std::string ResultsToken(int64_t last_index) {
  return absl::WebSafeBase64Escape(absl::StrCat("r1:", last_index));
}

absl::StatusOr<int64_t> ParseResultsToken(const std::string& token) {
  if (token.empty()) return -1;
  std::string raw;
  int64_t index = 0;
  absl::string_view rest;
  if (!absl::WebSafeBase64Unescape(token, &raw) ||
      !absl::StartsWith(rest = raw, "r1:") ||
      !absl::SimpleAtoi(rest.substr(3), &index) || index < -1) {
    return absl::InvalidArgumentError(
        "page_token: not a token from ListResultsResponse.next_page_token");
  }
  return index;
}

std::string DefaultReplicaName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, "-", getpid(), "-", NewJobId().substr(2, 6));
}

// A fixed set of threads running queued closures; the queue is bounded.
class Executor {
 public:
  Executor(int threads, int max_pending) : max_pending_(max_pending) {
    for (int i = 0; i < threads; ++i) {
      threads_.emplace_back([this] { Loop(); });
    }
  }
  ~Executor() { Shutdown(); }

  // False when full or shut down (the closure is not run).
  bool TrySchedule(absl::AnyInvocable<void()> fn) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (stopping_ || static_cast<int>(queue_.size()) >= max_pending_) {
      return false;
    }
    queue_.push_back(std::move(fn));
    return true;
  }

  // Runs what is queued, then joins.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_) {
    for (;;) {
      absl::AnyInvocable<void()> fn;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Executor* e) ABSL_EXCLUSIVE_LOCKS_REQUIRED(e->mu_) {
              return e->stopping_ || !e->queue_.empty();
            },
            this));
        if (queue_.empty()) return;  // stopping, and nothing left
        fn = std::move(queue_.front());
        queue_.pop_front();
      }
      fn();
    }
  }

  const int max_pending_;
  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace

absl::Status ValidateJobsConfig(const JobsConfig& config) {
  auto positive = [](absl::string_view flag, int64_t value) {
    return value > 0 ? absl::OkStatus()
                     : absl::InvalidArgumentError(
                           absl::StrCat(flag, " must be at least 1"));
  };
  for (absl::Status status :
       {positive("--max_jobs_running", config.max_jobs_running),
        positive("--max_job_items", config.max_job_items),
        positive("--job_store_threads", config.store_threads)}) {
    if (!status.ok()) return status;
  }
  if (config.max_jobs_queued < 0) {
    return absl::InvalidArgumentError("--max_jobs_queued must be >= 0");
  }
  if (config.max_store_bytes < 0) {
    return absl::InvalidArgumentError("--max_store_bytes must be >= 0");
  }
  if (config.lease < absl::Seconds(3)) {
    return absl::InvalidArgumentError(
        "--job_lease must be at least 3s (it is renewed every lease/3)");
  }
  if (config.default_ttl <= absl::ZeroDuration() ||
      config.max_ttl < config.default_ttl) {
    return absl::InvalidArgumentError(
        "--default_job_ttl must be positive and at most --max_job_ttl");
  }
  if (config.poll_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--job_poll_interval must be positive");
  }
  return absl::OkStatus();
}

class JobsService::Impl {
 public:
  Impl(JobsConfig config, request::Services services,
       compute::KernelRunner* kernels, std::unique_ptr<JobStore> store,
       std::unique_ptr<WebhookSecrets> secrets)
      : config_(std::move(config)),
        services_(services),
        kernels_(kernels),
        store_(std::move(store)),
        secrets_(std::move(secrets)),
        executor_(config_.store_threads, config_.max_pending_ops),
        runner_(
            store_.get(), services_, kernels,
            RunnerOptions{
                .replica = config_.replica,
                .max_jobs_running = config_.max_jobs_running,
                .lease = config_.lease,
                .poll_interval = config_.poll_interval,
                .max_job_items = config_.max_job_items,
                .webhook_progress_interval = config_.webhook_progress_interval},
            [this](const std::string& job_id) { NotifyChange(job_id); },
            [this] {
              absl::MutexLock lock(&sender_mu_);
              if (sender_ != nullptr) sender_->Wake();
            }) {}

  absl::Status Start() {
    absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
        WebhookSender::Start(
            store_.get(), services_.engine,
            {.replica = config_.replica,
             .lease = std::max(absl::Minutes(1), 2 * config_.webhook_timeout),
             .timeout = config_.webhook_timeout,
             .max_attempts = config_.webhook_max_attempts,
             .limits = services_.config->engine.limits,
             .secrets = secrets_.get()});
    if (!sender.ok()) return sender.status();
    {
      absl::MutexLock lock(&sender_mu_);
      sender_ = *std::move(sender);
    }
    runner_.Start();
    watch_thread_ = std::thread([this] { WatchLoop(); });
    upkeep_thread_ = std::thread([this] { UpkeepLoop(); });
    return absl::OkStatus();
  }

  absl::Status Reload() { return secrets_->Reload(); }

  template <typename T>
  void Schedule(Done<T> done, absl::AnyInvocable<absl::StatusOr<T>()> op) {
    auto shared_done = std::make_shared<Done<T>>(std::move(done));
    const bool scheduled = executor_.TrySchedule(
        [shared_done, op = std::move(op)]() mutable { (*shared_done)(op()); });
    if (!scheduled) {
      (*shared_done)(absl::ResourceExhaustedError(absl::StrCat(
          "the job store has ", config_.max_pending_ops,
          " calls waiting (--job_store_threads); retry with backoff")));
    }
  }

  absl::StatusOr<v1::SubmitResponse> Submit(const std::string& identity,
                                            const v1::SubmitRequest& request) {
    if (request.idempotency_key().size() > kMaxIdempotencyKeyBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("idempotency_key: at most ", kMaxIdempotencyKeyBytes,
                       " bytes, got ", request.idempotency_key().size()));
    }
    absl::Duration ttl = config_.default_ttl;
    if (request.has_ttl()) {
      ttl = absl::Seconds(request.ttl().seconds()) +
            absl::Nanoseconds(request.ttl().nanos());
      if (ttl <= absl::ZeroDuration() || ttl > config_.max_ttl) {
        return absl::InvalidArgumentError(
            absl::StrCat("ttl: must be positive and at most --max_job_ttl (",
                         absl::FormatDuration(config_.max_ttl), ")"));
      }
    }
    absl::StatusOr<WorkSummary> work = CheckWork(
        request, *services_.config, kernels_->limits(), config_.max_job_items);
    if (!work.ok()) return work.status();
    WebhookConfig webhook;
    if (request.has_webhook()) {
      absl::StatusOr<WebhookConfig> checked = CheckWebhook(request.webhook());
      if (!checked.ok()) return checked.status();
      webhook = *std::move(checked);
    }
    NewJob job{.id = NewJobId(),
               .identity = identity,
               .idempotency_key = request.idempotency_key(),
               .kind = work->kind,
               .total = work->total,
               .ttl = ttl,
               .webhook = std::move(webhook),
               .now = absl::Now()};
    // The payload is the whole request but its key: the same key with
    // another payload (work, webhook or ttl) is a conflict.
    v1::SubmitRequest payload = request;
    payload.clear_idempotency_key();
    {
      std::string bytes;
      google::protobuf::io::StringOutputStream stream(&bytes);
      google::protobuf::io::CodedOutputStream coded(&stream);
      coded.SetSerializationDeterministic(true);
      payload.SerializeToCodedStream(&coded);
      coded.Trim();
      job.request_hash = HexSha256(bytes);
    }
    job.request = request.SerializeAsString();
    absl::StatusOr<Created> created =
        store_->Create(job, {.max_jobs_queued = config_.max_jobs_queued,
                             .max_store_bytes = config_.max_store_bytes});
    if (!created.ok()) return created.status();
    if (created->created) runner_.Wake();
    v1::SubmitResponse response;
    ToProtoJob(created->job, response.mutable_job());
    response.set_created(created->created);
    return response;
  }

  absl::StatusOr<WebhookConfig> CheckWebhook(const v1::Webhook& webhook);

  absl::StatusOr<v1::GetResponse> Get(const std::string& identity,
                                      const v1::GetRequest& request) {
    absl::StatusOr<Job> job = store_->Get(identity, request.id(), absl::Now());
    if (!job.ok()) return job.status();
    v1::GetResponse response;
    ToProtoJob(*job, response.mutable_job());
    return response;
  }

  absl::StatusOr<v1::CancelResponse> Cancel(const std::string& identity,
                                            const v1::CancelRequest& request) {
    absl::StatusOr<Job> job =
        store_->Cancel(identity, request.id(), absl::Now());
    if (!job.ok()) return job.status();
    runner_.Wake();  // stops it here at once if this replica runs it
    NotifyChange(job->id);
    v1::CancelResponse response;
    ToProtoJob(*job, response.mutable_job());
    return response;
  }

  absl::StatusOr<v1::DeleteResponse> Delete(const std::string& identity,
                                            const v1::DeleteRequest& request) {
    absl::Status status = store_->Delete(identity, request.id(), absl::Now());
    if (!status.ok()) return status;
    runner_.Wake();
    NotifyChange(request.id());
    return v1::DeleteResponse();
  }

  absl::StatusOr<v1::ListResponse> List(const std::string& identity,
                                        const v1::ListRequest& request) {
    if (request.page_size() < 0 || request.page_size() > kMaxListPageSize) {
      return absl::InvalidArgumentError(absl::StrCat(
          "page_size: 0 (", kDefaultListPageSize, ") to ", kMaxListPageSize));
    }
    std::optional<State> state;
    if (request.state() != v1::JOB_STATE_UNSPECIFIED) {
      state = static_cast<State>(request.state());
    }
    absl::StatusOr<JobPage> page = store_->List(
        identity, state, request.page_token(),
        request.page_size() == 0 ? kDefaultListPageSize : request.page_size(),
        absl::Now());
    if (!page.ok()) return page.status();
    v1::ListResponse response;
    for (const Job& job : page->jobs) ToProtoJob(job, response.add_jobs());
    response.set_next_page_token(page->next_page_token);
    return response;
  }

  absl::StatusOr<v1::ListResultsResponse> ListResults(
      const std::string& identity, const v1::ListResultsRequest& request) {
    if (request.page_size() < 0 || request.page_size() > kMaxResultsPageSize) {
      return absl::InvalidArgumentError(
          absl::StrCat("page_size: 0 (", kDefaultResultsPageSize, ") to ",
                       kMaxResultsPageSize));
    }
    if (request.max_bytes() < 0 || request.max_bytes() > kMaxResultsPageBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("max_bytes: 0 (", kDefaultResultsPageBytes, ") to ",
                       kMaxResultsPageBytes));
    }
    absl::StatusOr<int64_t> after = ParseResultsToken(request.page_token());
    if (!after.ok()) return after.status();
    const absl::Time now = absl::Now();
    // The state first: a job seen terminal here has all its results below.
    absl::StatusOr<Job> job = store_->Get(identity, request.id(), now);
    if (!job.ok()) return job.status();
    const int page_size = request.page_size() == 0 ? kDefaultResultsPageSize
                                                   : request.page_size();
    const int64_t max_bytes = request.max_bytes() == 0
                                  ? kDefaultResultsPageBytes
                                  : request.max_bytes();
    absl::StatusOr<std::vector<ResultRow>> rows = store_->Results(
        identity, request.id(), *after, page_size + 1, max_bytes, now);
    if (!rows.ok()) return rows.status();
    bool more = static_cast<int>(rows->size()) > page_size;
    if (more) rows->pop_back();
    v1::ListResultsResponse response;
    response.set_state(static_cast<v1::JobState>(job->state));
    int64_t last = *after;
    for (const ResultRow& row : *rows) {
      if (!response.add_results()->ParseFromString(row.data)) {
        return absl::DataLossError(absl::StrCat(
            "job ", request.id(), ": result ", row.index, " is unreadable"));
      }
      last = row.index;
    }
    if (!more && !rows->empty() && IsTerminal(job->state)) {
      // The page may have been cut by max_bytes: look one further.
      absl::StatusOr<std::vector<ResultRow>> next =
          store_->Results(identity, request.id(), last, 1, 1, now);
      if (!next.ok()) return next.status();
      more = !next->empty();
    }
    if (more || !IsTerminal(job->state)) {
      response.set_next_page_token(ResultsToken(last));
    }
    return response;
  }

  // --- watches -------------------------------------------------------------

  class WatchImpl final : public Watch {
   public:
    WatchImpl(Impl* impl, std::string identity, std::string id,
              int64_t after_seq,
              absl::AnyInvocable<void(v1::WatchResponse)> on_event,
              absl::AnyInvocable<void(absl::Status)> on_end)
        : impl_(impl),
          identity_(std::move(identity)),
          id_(std::move(id)),
          after_seq_(after_seq),
          on_event_(std::move(on_event)),
          on_end_(std::move(on_end)) {}
    ~WatchImpl() override { Cancel(); }

    void Cancel() override { impl_->EndWatch(this, absl::CancelledError()); }

    Impl* const impl_;
    const std::string identity_;
    const std::string id_;
    // Touched only by the watch thread (and by EndWatch under watch_mu_).
    int64_t after_seq_;
    bool sent_current_ = false;
    absl::AnyInvocable<void(v1::WatchResponse)> on_event_;
    absl::AnyInvocable<void(absl::Status)> on_end_;
  };

  absl::StatusOr<std::unique_ptr<Watch>> StartWatch(
      std::string identity, const v1::WatchRequest& request,
      absl::AnyInvocable<void(v1::WatchResponse)> on_event,
      absl::AnyInvocable<void(absl::Status)> on_end) {
    if (request.from_seq() < 0) {
      return absl::InvalidArgumentError("from_seq: must be >= 0");
    }
    auto watch = std::make_unique<WatchImpl>(
        this, std::move(identity), request.id(), request.from_seq(),
        std::move(on_event), std::move(on_end));
    watch->sent_current_ = request.from_seq() > 0;
    absl::MutexLock lock(&watch_mu_);
    if (stopping_) return absl::UnavailableError("fetchd is shutting down");
    if (static_cast<int>(watches_.size()) >= config_.max_watchers) {
      return absl::ResourceExhaustedError(
          absl::StrCat("--max_job_watchers (", config_.max_watchers,
                       ") Watch streams are open on this replica"));
    }
    watches_.insert(watch.get());
    dirty_.insert(watch->id_);
    return watch;
  }

  // Ends `watch` with `status` unless it ended already. Waits while the
  // watch thread is delivering to it, so that after this returns no
  // callback of it runs.
  void EndWatch(WatchImpl* watch, absl::Status status)
      ABSL_LOCKS_EXCLUDED(watch_mu_) {
    absl::AnyInvocable<void(absl::Status)> on_end;
    {
      absl::MutexLock lock(&watch_mu_);
      while (delivering_ == watch) delivered_.Wait(&watch_mu_);
      if (!watches_.erase(watch)) return;
      on_end = std::move(watch->on_end_);
    }
    if (on_end) on_end(std::move(status));
  }

  void NotifyChange(const std::string& job_id) ABSL_LOCKS_EXCLUDED(watch_mu_) {
    absl::MutexLock lock(&watch_mu_);
    dirty_.insert(job_id);
  }

  bool healthy() const { return healthy_.load(); }

  void OnHealthChange(absl::AnyInvocable<void(bool)> callback) {
    absl::MutexLock lock(&upkeep_mu_);
    on_health_ = std::move(callback);
  }

  void Drain() {
    {
      absl::MutexLock lock(&watch_mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    runner_.Shutdown();
    if (watch_thread_.joinable()) watch_thread_.join();
    // Every watch still open ends UNAVAILABLE (its stream can be resumed on
    // another replica with from_seq).
    for (;;) {
      WatchImpl* watch = nullptr;
      {
        absl::MutexLock lock(&watch_mu_);
        if (watches_.empty()) break;
        watch = *watches_.begin();
      }
      EndWatch(watch, absl::UnavailableError(
                          "fetchd is shutting down; watch again (from_seq)"));
    }
  }

  void Shutdown() {
    Drain();
    std::unique_ptr<WebhookSender> sender;
    {
      absl::MutexLock lock(&sender_mu_);
      sender = std::move(sender_);
    }
    if (sender != nullptr) sender->Shutdown();
    {
      absl::MutexLock lock(&upkeep_mu_);
      upkeep_stop_ = true;
    }
    if (upkeep_thread_.joinable()) upkeep_thread_.join();
    executor_.Shutdown();
  }

  Stats stats() const {
    Stats stats;
    stats.running = runner_.running();
    stats.finished = runner_.finished();
    stats.results = runner_.results();
    absl::MutexLock lock(&watch_mu_);
    stats.watchers = static_cast<int>(watches_.size());
    return stats;
  }

 private:
  // One pass over the watches of jobs marked changed (or all of them when
  // `all`): reads their new events and delivers them.
  void ServeWatches(bool all) ABSL_LOCKS_EXCLUDED(watch_mu_) {
    std::vector<WatchImpl*> todo;
    {
      absl::MutexLock lock(&watch_mu_);
      for (WatchImpl* watch : watches_) {
        if (all || dirty_.contains(watch->id_)) todo.push_back(watch);
      }
      dirty_.clear();
    }
    for (WatchImpl* watch : todo) {
      {
        absl::MutexLock lock(&watch_mu_);
        if (!watches_.contains(watch)) continue;  // ended meanwhile
        delivering_ = watch;
      }
      std::optional<absl::Status> end = Serve(*watch);
      {
        absl::MutexLock lock(&watch_mu_);
        delivering_ = nullptr;
        delivered_.SignalAll();
      }
      if (end.has_value()) EndWatch(watch, *std::move(end));
    }
  }

  // Delivers `watch`'s new events; returns the status to end it with (OK
  // after the terminal event), or nothing while it goes on.
  std::optional<absl::Status> Serve(WatchImpl& watch) {
    const absl::Time now = absl::Now();
    if (!watch.sent_current_) {
      absl::StatusOr<Job> job = store_->Get(watch.identity_, watch.id_, now);
      if (!job.ok()) {
        if (absl::IsUnavailable(job.status())) return std::nullopt;
        return job.status();
      }
      watch.sent_current_ = true;
      watch.after_seq_ = job->seq;
      watch.on_event_(ToProtoEvent(EventOf(*job)));
      if (IsTerminal(job->state)) return absl::OkStatus();
    }
    for (;;) {
      absl::StatusOr<std::vector<Event>> events = store_->Events(
          watch.identity_, watch.id_, watch.after_seq_, kEventsPerRead, now);
      if (!events.ok()) {
        // The store is down: keep the watch; the next pass tries again.
        if (absl::IsUnavailable(events.status())) return std::nullopt;
        return events.status();
      }
      for (const Event& event : *events) {
        watch.after_seq_ = event.seq;
        watch.on_event_(ToProtoEvent(event));
        if (IsTerminal(event.state)) return absl::OkStatus();
      }
      if (static_cast<int>(events->size()) < kEventsPerRead) {
        return std::nullopt;
      }
    }
  }

  void WatchLoop() ABSL_LOCKS_EXCLUDED(watch_mu_) {
    absl::Time next_full = absl::Now();
    for (;;) {
      {
        absl::MutexLock lock(&watch_mu_);
        watch_mu_.AwaitWithDeadline(
            absl::Condition(
                +[](Impl* impl) ABSL_EXCLUSIVE_LOCKS_REQUIRED(impl->watch_mu_) {
                  return impl->stopping_ || !impl->dirty_.empty();
                },
                this),
            next_full);
        if (stopping_) return;
      }
      const bool all = absl::Now() >= next_full;
      if (all) next_full = absl::Now() + config_.poll_interval;
      ServeWatches(all);
    }
  }

  // Store health (Ping every few seconds) and the retention sweeper.
  void UpkeepLoop() ABSL_LOCKS_EXCLUDED(upkeep_mu_) {
    absl::Time next_sweep = absl::Now();
    for (;;) {
      {
        absl::MutexLock lock(&upkeep_mu_);
        if (upkeep_mu_.AwaitWithTimeout(absl::Condition(&upkeep_stop_),
                                        absl::Seconds(2))) {
          return;
        }
      }
      const bool up = store_->Ping().ok();
      if (up != healthy_.exchange(up)) {
        absl::MutexLock lock(&upkeep_mu_);
        if (on_health_) on_health_(up);
      }
      if (up && absl::Now() >= next_sweep) {
        // Bounded batches until a short one: one long transaction would
        // hold the store from the runner.
        for (int round = 0; round < 100; ++round) {
          absl::StatusOr<int> swept =
              store_->Sweep(absl::Now(), config_.sweep_batch);
          if (!swept.ok() || *swept < config_.sweep_batch) break;
        }
        next_sweep = absl::Now() + config_.sweep_interval;
      }
    }
  }

 public:
  const JobsConfig config_;
  const request::Services services_;
  compute::KernelRunner* const kernels_;
  const std::unique_ptr<JobStore> store_;
  const std::unique_ptr<WebhookSecrets> secrets_;

 private:
  absl::Mutex sender_mu_;
  std::unique_ptr<WebhookSender> sender_ ABSL_GUARDED_BY(sender_mu_);
  Executor executor_;
  Runner runner_;

  mutable absl::Mutex watch_mu_;
  bool stopping_ ABSL_GUARDED_BY(watch_mu_) = false;
  absl::flat_hash_set<WatchImpl*> watches_ ABSL_GUARDED_BY(watch_mu_);
  absl::flat_hash_set<std::string> dirty_ ABSL_GUARDED_BY(watch_mu_);
  // The watch the watch thread is delivering to (EndWatch waits for it).
  WatchImpl* delivering_ ABSL_GUARDED_BY(watch_mu_) = nullptr;
  absl::CondVar delivered_;
  std::thread watch_thread_;

  absl::Mutex upkeep_mu_;
  bool upkeep_stop_ ABSL_GUARDED_BY(upkeep_mu_) = false;
  absl::AnyInvocable<void(bool)> on_health_ ABSL_GUARDED_BY(upkeep_mu_);
  std::atomic<bool> healthy_{true};
  std::thread upkeep_thread_;
};

absl::StatusOr<WebhookConfig> JobsService::Impl::CheckWebhook(
    const v1::Webhook& webhook) {
  WebhookConfig config{.url = webhook.url(),
                       .secret = webhook.secret(),
                       .secret_id = webhook.secret_id(),
                       .progress = webhook.progress()};
  if (config.url.empty()) {
    return absl::InvalidArgumentError(
        "webhook.url is empty: a webhook needs an http or https URL");
  }
  if (absl::Status valid = ValidateWebhook(config, *secrets_); !valid.ok()) {
    return valid;
  }
  return config;
}

// --- JobsService ------------------------------------------------------------

absl::StatusOr<std::unique_ptr<JobsService>> JobsService::Start(
    JobsConfig config, request::Services services,
    compute::KernelRunner* kernels) {
  if (absl::Status status = ValidateJobsConfig(config); !status.ok()) {
    return status;
  }
  if (config.replica.empty()) config.replica = DefaultReplicaName();
  // PostgreSQL: a connection for each thread that may call the store at
  // once (store threads, one per running job, the runner's claim loop, the
  // watch and upkeep threads, the webhook sender).
  absl::StatusOr<std::unique_ptr<JobStore>> store = OpenJobStore(
      config.store,
      {.pool_size = config.store_threads + config.max_jobs_running + 4});
  if (!store.ok()) return store.status();
  auto secrets = std::make_unique<WebhookSecrets>();
  if (!config.webhook_secrets_file.empty()) {
    absl::StatusOr<std::unique_ptr<WebhookSecrets>> loaded =
        WebhookSecrets::Load(config.webhook_secrets_file);
    if (!loaded.ok()) return loaded.status();
    secrets = *std::move(loaded);
  }
  auto impl = std::make_unique<Impl>(std::move(config), services, kernels,
                                     *std::move(store), std::move(secrets));
  if (absl::Status started = impl->Start(); !started.ok()) {
    impl->Shutdown();
    return started;
  }
  return std::unique_ptr<JobsService>(new JobsService(std::move(impl)));
}

JobsService::JobsService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
JobsService::~JobsService() { Shutdown(); }

void JobsService::Submit(std::string identity, v1::SubmitRequest request,
                         Done<v1::SubmitResponse> done) {
  impl_->Schedule<v1::SubmitResponse>(
      std::move(done), [impl = impl_.get(), identity = std::move(identity),
                        request = std::move(request)] {
        return impl->Submit(identity, request);
      });
}

void JobsService::Get(std::string identity, v1::GetRequest request,
                      Done<v1::GetResponse> done) {
  impl_->Schedule<v1::GetResponse>(
      std::move(done),
      [impl = impl_.get(), identity = std::move(identity),
       request = std::move(request)] { return impl->Get(identity, request); });
}

void JobsService::Cancel(std::string identity, v1::CancelRequest request,
                         Done<v1::CancelResponse> done) {
  impl_->Schedule<v1::CancelResponse>(
      std::move(done), [impl = impl_.get(), identity = std::move(identity),
                        request = std::move(request)] {
        return impl->Cancel(identity, request);
      });
}

void JobsService::List(std::string identity, v1::ListRequest request,
                       Done<v1::ListResponse> done) {
  impl_->Schedule<v1::ListResponse>(
      std::move(done),
      [impl = impl_.get(), identity = std::move(identity),
       request = std::move(request)] { return impl->List(identity, request); });
}

void JobsService::ListResults(std::string identity,
                              v1::ListResultsRequest request,
                              Done<v1::ListResultsResponse> done) {
  impl_->Schedule<v1::ListResultsResponse>(
      std::move(done), [impl = impl_.get(), identity = std::move(identity),
                        request = std::move(request)] {
        return impl->ListResults(identity, request);
      });
}

void JobsService::Delete(std::string identity, v1::DeleteRequest request,
                         Done<v1::DeleteResponse> done) {
  impl_->Schedule<v1::DeleteResponse>(
      std::move(done), [impl = impl_.get(), identity = std::move(identity),
                        request = std::move(request)] {
        return impl->Delete(identity, request);
      });
}

absl::StatusOr<std::unique_ptr<Watch>> JobsService::StartWatch(
    std::string identity, v1::WatchRequest request,
    absl::AnyInvocable<void(v1::WatchResponse)> on_event,
    absl::AnyInvocable<void(absl::Status)> on_end) {
  return impl_->StartWatch(std::move(identity), request, std::move(on_event),
                           std::move(on_end));
}

bool JobsService::healthy() const { return impl_->healthy(); }

void JobsService::OnHealthChange(absl::AnyInvocable<void(bool)> callback) {
  impl_->OnHealthChange(std::move(callback));
}

void JobsService::Drain() { impl_->Drain(); }
absl::Status JobsService::Reload() { return impl_->Reload(); }
void JobsService::Shutdown() { impl_->Shutdown(); }

JobsService::Stats JobsService::stats() const { return impl_->stats(); }

void JobsService::Render(metrics::Exposition& out) const {
  const Stats now = stats();
  out.Family("fetchd_jobs_running", "gauge",
             "jobs this replica runs now (at most --max_jobs_running)");
  out.Sample("fetchd_jobs_running", now.running);
  out.Family("fetchd_jobs_finished_total", "counter",
             "jobs this replica ended (succeeded, failed or cancelled by "
             "fail_fast) since it started");
  out.Sample("fetchd_jobs_finished_total", static_cast<double>(now.finished));
  out.Family("fetchd_job_results_total", "counter",
             "results this replica committed to the job store");
  out.Sample("fetchd_job_results_total", static_cast<double>(now.results));
  out.Family("fetchd_job_watchers", "gauge", "Jobs.Watch streams open");
  out.Sample("fetchd_job_watchers", now.watchers);
  out.Family("fetchd_job_store_up", "gauge",
             "1 while the job store answers (health of fetchd.v1.Jobs)");
  out.Sample("fetchd_job_store_up", healthy() ? 1 : 0);
}

}  // namespace fetchd::jobs
