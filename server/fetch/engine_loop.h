// Internal to server/fetch/: Engine::Loop, the one I/O thread behind the
// Engine of fetch.h (the module's face). The loop is
//   take commands (new batches, cancels) -> start transfers within the limits
//   -> curl_multi_poll (timeout = next timer) -> curl_multi_perform
//   -> finish CURLMSG_DONE transfers (retry or report) -> fire due timers.
//
// One class, implemented in one file per part, each with its header:
//   engine.cc            the Engine, the loop's life (Init, Run, Stop), the
//                        command queue, Submit's validation, stats;
//   engine_scheduler.h/.cc  admission and scheduling: Batch/Item, host
//                        slots, the round robin, report and batch end;
//   engine_transfer.h/.cc   the transfer: easy handles, curl callbacks,
//                        redirects with credentials, status mapping;
//   engine_timers.h, engine_retry.cc  retry decisions and timers;
//   engine_walk.h/.cc    walks;
//   engine_role.h        the ThreadRole capability.
//
// Threads: the public face (Init, Stop, Submit, SubmitWalk, Cancel,
// Consumed, stats) is for any thread and goes through mu_ and
// curl_multi_wakeup. Everything else is the I/O thread's: guarded by, or
// requiring, io_thread_, which Run and the curl callbacks assert.
#ifndef FETCHD_SERVER_FETCH_ENGINE_LOOP_H_
#define FETCHD_SERVER_FETCH_ENGINE_LOOP_H_

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/fetch/engine_role.h"
#include "server/fetch/engine_scheduler.h"
#include "server/fetch/engine_timers.h"
#include "server/fetch/engine_transfer.h"
#include "server/fetch/engine_walk.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch {

class Engine::Loop {
 public:
  explicit Loop(Options options)
      : options_(std::move(options)),
        budget_(options_.retry_budget_ratio, options_.retry_budget_tokens) {}
  ~Loop();

  absl::Status Init();
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

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
  using EasyHandle = internal::EasyHandle;
  using Transfer = internal::Transfer;
  using ItemState = internal::ItemState;
  using Item = internal::Item;
  using Batch = internal::Batch;
  using WalkState = internal::WalkState;
  using Timer = internal::Timer;
  using TimerKind = internal::TimerKind;

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

  // --- engine.cc: life, commands, validation, stats.
  void Run() ABSL_LOCKS_EXCLUDED(mu_);
  void TakeCommands() ABSL_LOCKS_EXCLUDED(mu_)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // ValidateFetchSpec, then the URL in ASCII form and the host policy.
  absl::Status CheckItem(FetchSpec& spec) const;
  void Post(Command command) ABSL_LOCKS_EXCLUDED(mu_);
  // Gives the batch its id and hands it to the I/O thread; once that
  // thread is gone, ends it on the caller's thread (Refuse).
  uint64_t Enqueue(std::unique_ptr<Batch> batch) ABSL_LOCKS_EXCLUDED(mu_);
  // A batch or walk that never ran: each callback once, with `status`
  // (an invalid item keeps its own error).
  void Refuse(Batch& batch, const absl::Status& status);
  // Reads --upstream_ca_file once and makes the bundle every handle uses.
  absl::Status LoadCaBundle();
  void PublishStats() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void CountItem(absl::StatusCode code) {
    const auto c = static_cast<size_t>(code);
    if (c < stat_items_by_code_.size()) {
      stat_items_by_code_[c].fetch_add(1, std::memory_order_relaxed);
    }
  }

  // --- engine_scheduler.cc: admission and scheduling.
  void AddBatch(std::unique_ptr<Batch> batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void StartTransfers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // One turn of `who`: one item of its next runnable batch, if it can go.
  // False when the memory budget has no room for it (it stays first in
  // line; StartTransfers stops until a release).
  bool StartNextOf(internal::Identity& who)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // Gives the slots that finished transfers freed to the batches waiting
  // for those hosts.
  void ServeFreedHosts() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // Running transfers per host: a transfer counts from StartAttempt until
  // it leaves the multi handle (Ended also wakes a batch waiting for it).
  void Started(const Transfer& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_) {
    ++running_;
    ++t.identity->running;
    if (++host_running_[t.host] == options_.max_per_host) ++hosts_at_limit_;
  }
  void Ended(const Transfer& t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_) {
    --running_;
    // An identity at --max_inflight_per_identity is out of the ring until
    // one of its transfers ends.
    if (t.identity->running-- == options_.max_inflight_per_identity &&
        !t.identity->runnable.empty()) {
      QueueIdentity(*t.identity);
    }
    auto running = host_running_.find(t.host);
    if (running != host_running_.end()) {
      if (running->second-- == options_.max_per_host) --hosts_at_limit_;
      if (running->second == 0) host_running_.erase(running);
    }
    // A slot is free: StartTransfers gives it to a batch waiting for it.
    if (blocked_on_host_.contains(t.host)) freed_hosts_.push_back(t.host);
  }
  bool HostFull(absl::string_view host) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_) {
    auto running = host_running_.find(host);
    return running != host_running_.end() &&
           running->second >= options_.max_per_host;
  }
  void MakeRunnable(Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_) {
    // A batch waiting for a full host is served when that host frees a slot.
    if (!batch.runnable && !batch.host_blocked && !batch.waiting.empty() &&
        batch.running < batch.options.max_concurrency) {
      batch.runnable = true;
      batch.identity->runnable.push_back(batch.id);
      QueueIdentity(*batch.identity);
    }
  }
  // --max_inflight_per_identity.
  bool HasRoom(const internal::Identity& who) const {
    return options_.max_inflight_per_identity <= 0 ||
           who.running < options_.max_inflight_per_identity;
  }
  // Into the ring of identities, unless there already or at its cap.
  void QueueIdentity(internal::Identity& who)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_) {
    if (!who.queued && HasRoom(who)) {
      who.queued = true;
      runnable_.push_back(&who);
    }
  }
  // The identity of a new batch, made on first use.
  internal::Identity* IdentityOf(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // A batch of `who` ended: forget `who` once nothing refers to it.
  void BatchGone(internal::Identity* who)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void Report(Batch& batch, size_t index, FetchResult result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // Ends every unfinished item of the batch with `status`.
  void EndBatch(uint64_t id, const absl::Status& status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void EraseIfDone(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);

  // --- engine_transfer.cc: the transfer.
  // `memory`: what AdmitMemory reserved for it.
  void StartAttempt(Batch& batch, size_t index, memory::Reservation memory)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void CollectDone() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void FinishAttempt(Transfer* transfer, CURLcode rc)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // An engine-followed redirect (Transfer::manage_redirects): true when the
  // next hop is on the multi handle; false when the attempt ends here (no
  // redirect, or t.redirect_error says why it may not be followed).
  bool FollowRedirect(Transfer& t, long http)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  bool CarriesCredentials(const FetchSpec& spec) const;
  // The spec's request headers, less the credential ones when `strip`,
  // plus `extra` (a whole header line) when not empty.
  curl_slist* HeaderList(const FetchSpec& spec, bool strip,
                         const std::string& extra) const;
  // The attempt's child traceparent line for `trace` (a new span id), or
  // empty: no trace, or the item sets its own traceparent.
  std::string TraceparentLine(const TraceContext& trace, const FetchSpec& spec)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  std::string CredentialNames(const FetchSpec& spec) const;
  void ReleaseEasy(EasyHandle easy) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  EasyHandle AcquireEasy() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  absl::Status AttemptStatus(const Transfer& t, CURLcode rc, long http) const;
  static size_t OnBody(char* data, size_t size, size_t n, void* user);
  static size_t OnHeader(char* data, size_t size, size_t n, void* user);
  static curl_socket_t OnOpenSocket(void* user, curlsocktype purpose,
                                    curl_sockaddr* address);
  static int OnPrereq(void* user, char* primary_ip, char* local_ip,
                      int primary_port, int local_port);
  // Options::address_policy for the transfer's current URL (the redirect
  // hop's, on a redirect); a refusal is kept in t->refused.
  static bool Allowed(Transfer* t, const sockaddr* address, socklen_t length);

  // --- engine_memory.cc: the memory budget (Options::memory_budget).
  // Admission: true with `out` holding the transfer's first bytes, or
  // false: no room (the budget wakes the loop on its next release).
  bool AdmitMemory(const FetchSpec& spec, memory::Reservation& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // Admission found no room for waiting item batch.waiting[pos]: true when
  // it has been blocked for the item's timeout and the item was failed
  // RESOURCE_EXHAUSTED (the batch may have ended).
  bool ShedForMemory(Batch& batch, size_t pos)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // Resumes paused bodies in order while they fit; true when none is left.
  bool ResumePaused() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  // OnBody: room for `len` more body bytes; false when there is none (the
  // transfer pauses if t.paused_need was set, else fails: t.memory_short).
  static bool MakeRoom(Transfer& t, size_t len);
  // OnHeader: room for a kept header of `bytes`; false sets memory_short.
  static bool HoldHeader(Transfer& t, int64_t bytes);
  // The attempt's status when memory ended it; OK otherwise.
  absl::Status MemoryStatus(const Transfer& t, CURLcode rc) const;
  // The result takes the attempt's bytes (body capacity and kept headers).
  static void KeepMemory(Transfer& t, FetchResult& result);
  // A page's split items count too: OK, or the error the walk ends with.
  absl::Status HoldPageItems(Page& page);

  // --- engine_retry.cc: retry and timers.
  bool Retryable(const RetryPolicy& policy, CURLcode rc, long http) const;
  // A failed attempt that may be retried: true when a retry timer is set
  // (the item backs off); false when it is not, with `result.status` saying
  // why (deadline, retry budget).
  bool ScheduleRetry(Batch& batch, size_t index, FetchResult& result,
                     curl_off_t retry_after)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void FireTimers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  absl::Duration UntilNextTimer() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);

  // --- engine_walk.cc: walks. Start pages within the window; take a
  // page's result (in any order) and hand pages on in order; end the walk.
  void FillWalk(Batch& batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void OnPageResult(Batch& batch, size_t index, FetchResult result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void EndWalk(uint64_t id, absl::Status status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);
  void DeliverPages() ABSL_EXCLUSIVE_LOCKS_REQUIRED(io_thread_);

  const Options options_;
  // Made in Init, before the thread starts; curl_multi_wakeup from any
  // thread, everything else on the I/O thread.
  std::unique_ptr<CURLM, internal::MultiDeleter> multi_;
  std::thread thread_;
  // The I/O thread's role: Run asserts it.
  internal::ThreadRole io_thread_;

  absl::Mutex mu_;
  std::vector<Command> commands_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // The I/O thread took its last commands: a batch enqueued now is refused
  // on the caller's thread.
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;

  // Set in Init, before the thread starts; read-only after.
  // The system bundle plus --upstream_ca_file, in an in-memory file that
  // curl reads (and caches) like any CA file; empty: curl's default.
  std::string ca_bundle_path_;
  int ca_bundle_fd_ = -1;
  std::unique_ptr<curl_slist, internal::SlistDeleter> resolve_;  // ::resolve

  // I/O thread only.
  absl::flat_hash_map<uint64_t, std::unique_ptr<Batch>> batches_
      ABSL_GUARDED_BY(io_thread_);
  // Identities with a batch that has waiting items and room, round robin.
  std::deque<internal::Identity*> runnable_ ABSL_GUARDED_BY(io_thread_);
  absl::flat_hash_map<std::string, std::unique_ptr<internal::Identity>>
      identities_ ABSL_GUARDED_BY(io_thread_);
  internal::TimerQueue timers_ ABSL_GUARDED_BY(io_thread_);
  std::vector<EasyHandle> idle_easy_ ABSL_GUARDED_BY(io_thread_);
  // Transfers per host on the multi handle, never above --max_per_host: the
  // rest wait in our FIFO (round robin) rather than in curl's pending
  // queue, which costs far more per transfer than our own.
  absl::flat_hash_map<std::string, int> host_running_
      ABSL_GUARDED_BY(io_thread_);
  absl::flat_hash_map<std::string, std::deque<uint64_t>> blocked_on_host_
      ABSL_GUARDED_BY(io_thread_);
  // Hosts a transfer just left.
  std::vector<std::string> freed_hosts_ ABSL_GUARDED_BY(io_thread_);
  // Walks with pages to hand on.
  std::vector<uint64_t> outboxes_ ABSL_GUARDED_BY(io_thread_);
  int running_ ABSL_GUARDED_BY(io_thread_) = 0;
  // Hosts with --max_per_host transfers running.
  int hosts_at_limit_ ABSL_GUARDED_BY(io_thread_) = 0;
  int waiting_ ABSL_GUARDED_BY(io_thread_) = 0;
  int backing_off_ ABSL_GUARDED_BY(io_thread_) = 0;
  RetryBudget budget_ ABSL_GUARDED_BY(io_thread_);
  // The memory budget's waker (it wakes this loop on a release), and the
  // transfers whose bodies wait for room, oldest first (batch id, index).
  int memory_waker_ = 0;
  std::deque<std::pair<uint64_t, size_t>> memory_paused_
      ABSL_GUARDED_BY(io_thread_);
  // Since when admission has found no room (InfiniteFuture: it has).
  absl::Time memory_blocked_since_ ABSL_GUARDED_BY(io_thread_) =
      absl::InfiniteFuture();
  absl::BitGen rng_ ABSL_GUARDED_BY(io_thread_);

  // Published for stats() from any thread; written by the I/O thread only.
  std::atomic<int> stat_inflight_{0}, stat_waiting_{0}, stat_backing_off_{0},
      stat_batches_{0};
  std::atomic<int64_t> stat_retries_{0}, stat_retries_denied_{0};
  std::atomic<int> stat_hosts_{0}, stat_hosts_at_limit_{0};
  std::array<std::atomic<int64_t>, 6> stat_attempts_by_class_{};
  std::array<std::atomic<int64_t>, 17> stat_items_by_code_{};
  std::atomic<int64_t> stat_body_bytes_{0};
  std::atomic<int64_t> stat_connections_{0};
};

}  // namespace fetchd::fetch

#endif  // FETCHD_SERVER_FETCH_ENGINE_LOOP_H_
