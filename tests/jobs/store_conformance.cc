// The JobStore conformance suite (see store_conformance.h).
#include "tests/jobs/store_conformance.h"

#include <openssl/sha.h>

#include <algorithm>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"

namespace fetchd::jobs::testing {
namespace {

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAreArray;

ResultRow Row(int64_t index, const std::string& data, bool failed = false,
              int64_t body_bytes = 100) {
  return ResultRow{index, failed, body_bytes, data};
}

Delivery MakeDelivery(const std::string& event, const std::string& body) {
  Delivery d;
  d.event = event;
  d.body = body;
  return d;
}

std::vector<std::string> Ids(const std::vector<Job>& jobs) {
  std::vector<std::string> ids;
  for (const Job& job : jobs) ids.push_back(job.id);
  return ids;
}

}  // namespace

void JobStoreConformance::SetUp() {
  absl::StatusOr<std::unique_ptr<JobStore>> store = GetParam()();
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = *std::move(store);
}

void JobStoreConformance::TearDown() { store_.reset(); }

NewJob JobStoreConformance::MakeJob(const std::string& identity, absl::Time now,
                                    const std::string& key,
                                    const std::string& request, int64_t total) {
  NewJob job;
  job.id = NewJobId();
  job.identity = identity;
  job.idempotency_key = key;
  job.kind = Kind::kBatchFetch;
  job.request = request;
  job.request_hash = Sha256Hex(request);
  job.total = total;
  job.ttl = absl::Hours(1);
  job.now = now;
  return job;
}

std::string JobStoreConformance::CreateJob(const std::string& identity,
                                           absl::Time now,
                                           const std::string& key,
                                           int64_t total) {
  absl::StatusOr<Created> created =
      store_->Create(MakeJob(identity, now, key, "request", total), {});
  EXPECT_TRUE(created.ok()) << created.status();
  if (!created.ok()) return "";
  return created->job.id;
}

// --- Create / Get -----------------------------------------------------------

TEST_P(JobStoreConformance, CreateStoresAQueuedJobWithItsFirstEvent) {
  NewJob job = MakeJob("alice", t0_, "key-1", "the request", 42);
  job.kind = Kind::kFetchPages;
  job.ttl = absl::Minutes(30);
  job.webhook = {"http://127.0.0.1:9/hook", "s3cret", "", true};
  absl::StatusOr<Created> created = store_->Create(job, {});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->job.id, job.id);

  absl::StatusOr<Job> got = store_->Get("alice", job.id, t0_);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->id, job.id);
  EXPECT_EQ(got->identity, "alice");
  EXPECT_EQ(got->idempotency_key, "key-1");
  EXPECT_EQ(got->kind, Kind::kFetchPages);
  EXPECT_EQ(got->request, "");  // only Claim reads it (megabytes)
  EXPECT_EQ(got->request_hash, job.request_hash);
  EXPECT_EQ(got->state, State::kQueued);
  EXPECT_EQ(got->counts.total, 42);
  EXPECT_EQ(got->counts.done, 0);
  EXPECT_EQ(got->counts.failed, 0);
  EXPECT_EQ(got->counts.bytes, 0);
  EXPECT_EQ(got->error_code, 0);
  EXPECT_EQ(got->created_at, t0_);
  EXPECT_EQ(got->started_at, absl::InfinitePast());
  EXPECT_EQ(got->finished_at, absl::InfinitePast());
  EXPECT_EQ(got->expires_at, absl::InfinitePast());
  EXPECT_EQ(got->ttl, absl::Minutes(30));
  EXPECT_EQ(got->attempts, 0);
  EXPECT_EQ(got->owner, "");
  EXPECT_EQ(got->checkpoint, "");
  EXPECT_EQ(got->seq, 1);
  EXPECT_EQ(got->webhook.url, "http://127.0.0.1:9/hook");
  EXPECT_EQ(got->webhook.secret, "s3cret");
  EXPECT_TRUE(got->webhook.progress);
  EXPECT_EQ(got->last_delivery.state, DeliveryState::kNone);

  absl::StatusOr<std::vector<Event>> events =
      store_->Events("alice", job.id, 0, 100, t0_);
  ASSERT_TRUE(events.ok()) << events.status();
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].seq, 1);
  EXPECT_EQ((*events)[0].state, State::kQueued);
  EXPECT_EQ((*events)[0].counts.total, 42);
  EXPECT_EQ((*events)[0].time, t0_);
}

TEST_P(JobStoreConformance, BinaryRequestRoundTripsThroughClaimOnly) {
  std::string request("\0\x01\xff\n binary", 11);
  NewJob job = MakeJob("alice", t0_, "", request);
  ASSERT_TRUE(store_->Create(job, {}).ok());
  absl::StatusOr<Job> got = store_->Get("alice", job.id, t0_);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->request, "");
  absl::StatusOr<JobPage> listed =
      store_->List("alice", std::nullopt, "", 10, t0_);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->jobs.size(), 1u);
  EXPECT_EQ(listed->jobs[0].request, "");
  absl::StatusOr<std::vector<Job>> claimed =
      store_->Claim("r1", 1, absl::Seconds(30), t0_);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ((*claimed)[0].request, request);
}

TEST_P(JobStoreConformance, UnknownOrOtherIdentitysJobIsNotFound) {
  std::string id = CreateJob("alice", t0_);
  absl::StatusOr<Job> other = store_->Get("bob", id, t0_);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(other.status().message(), HasSubstr("job " + id + " not found"));
  EXPECT_EQ(store_->Get("alice", "j_nosuchjob", t0_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Cancel("bob", id, t0_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete("bob", id, t0_).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Results("bob", id, -1, 10, 0, t0_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Events("bob", id, 0, 10, t0_).status().code(),
            absl::StatusCode::kNotFound);
  // Still there for its owner.
  EXPECT_TRUE(store_->Get("alice", id, t0_).ok());
}

// --- idempotency -------------------------------------------------------------

TEST_P(JobStoreConformance, SameKeySameRequestGivesTheExistingJob) {
  absl::StatusOr<Created> first =
      store_->Create(MakeJob("alice", t0_, "k", "req"), {});
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<Created> again =
      store_->Create(MakeJob("alice", t0_ + absl::Seconds(5), "k", "req"), {});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->created);
  EXPECT_EQ(again->job.id, first->job.id);
  EXPECT_EQ(again->job.created_at, t0_);
  absl::StatusOr<JobPage> page =
      store_->List("alice", std::nullopt, "", 10, t0_);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs.size(), 1u);
}

TEST_P(JobStoreConformance, SameKeyOtherRequestIsAlreadyExists) {
  ASSERT_TRUE(store_->Create(MakeJob("alice", t0_, "my-key", "req"), {}).ok());
  absl::StatusOr<Created> other =
      store_->Create(MakeJob("alice", t0_, "my-key", "another"), {});
  EXPECT_EQ(other.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(other.status().message(), HasSubstr("my-key"));
  absl::StatusOr<JobPage> page =
      store_->List("alice", std::nullopt, "", 10, t0_);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs.size(), 1u);
}

TEST_P(JobStoreConformance, KeysArePerIdentityAndEmptyKeysNeverMatch) {
  absl::StatusOr<Created> a = store_->Create(MakeJob("alice", t0_, "k"), {});
  absl::StatusOr<Created> b = store_->Create(MakeJob("bob", t0_, "k"), {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(b->created);
  EXPECT_NE(a->job.id, b->job.id);
  absl::StatusOr<Created> c = store_->Create(MakeJob("alice", t0_), {});
  absl::StatusOr<Created> d = store_->Create(MakeJob("alice", t0_), {});
  ASSERT_TRUE(c.ok() && d.ok());
  EXPECT_TRUE(c->created);
  EXPECT_TRUE(d->created);
  EXPECT_NE(c->job.id, d->job.id);
}

TEST_P(JobStoreConformance, ConcurrentCreatesWithOneKeyMakeOneJob) {
  constexpr int kThreads = 4;
  absl::Mutex mu;
  std::vector<std::string> ids;
  int created = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      absl::StatusOr<Created> c =
          store_->Create(MakeJob("alice", t0_, "race", "req"), {});
      absl::MutexLock lock(&mu);
      ASSERT_TRUE(c.ok()) << c.status();
      ids.push_back(c->job.id);
      if (c->created) ++created;
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(created, 1);
  ASSERT_EQ(ids.size(), static_cast<size_t>(kThreads));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), 1u);
}

// --- limits ------------------------------------------------------------------

TEST_P(JobStoreConformance,
       MaxJobsQueuedIsResourceExhaustedWithNothingWritten) {
  CreateLimits limits;
  limits.max_jobs_queued = 2;
  ASSERT_TRUE(store_->Create(MakeJob("alice", t0_, "a"), limits).ok());
  ASSERT_TRUE(store_->Create(MakeJob("alice", t0_), limits).ok());
  NewJob third = MakeJob("alice", t0_);
  absl::StatusOr<Created> refused = store_->Create(third, limits);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("max_jobs_queued"));
  EXPECT_EQ(store_->Get("alice", third.id, t0_).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<JobPage> page =
      store_->List("alice", std::nullopt, "", 10, t0_);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs.size(), 2u);
  // The existing key still answers (no new job needed).
  absl::StatusOr<Created> same =
      store_->Create(MakeJob("alice", t0_, "a"), limits);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_FALSE(same->created);
  // Per identity.
  // Later than alice's, so the claim below takes one of hers.
  EXPECT_TRUE(
      store_->Create(MakeJob("bob", t0_ + absl::Seconds(1)), limits).ok());
  // RUNNING counts too; a finished job frees its place.
  absl::StatusOr<std::vector<Job>> claimed =
      store_->Claim("r1", 1, absl::Minutes(1), t0_);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 1u);
  EXPECT_EQ(store_->Create(MakeJob("alice", t0_), limits).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(store_
                  ->Finish((*claimed)[0].id, "r1", State::kSucceeded,
                           absl::OkStatus(), std::nullopt, t0_)
                  .ok());
  EXPECT_TRUE(store_->Create(MakeJob("alice", t0_), limits).ok());
}

TEST_P(JobStoreConformance,
       MaxStoreBytesIsResourceExhaustedWithNothingWritten) {
  CreateLimits limits;
  limits.max_store_bytes = 1;  // any store holds more than a byte
  NewJob job = MakeJob("alice", t0_);
  absl::StatusOr<Created> refused = store_->Create(job, limits);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("max_store_bytes"));
  EXPECT_EQ(store_->Get("alice", job.id, t0_).status().code(),
            absl::StatusCode::kNotFound);
  limits.max_store_bytes = int64_t{1} << 40;
  EXPECT_TRUE(store_->Create(job, limits).ok());
}

TEST_P(JobStoreConformance, StoreBytesGrowsWithResults) {
  absl::StatusOr<int64_t> before = store_->StoreBytes();
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_GT(*before, 0);
  std::string id = CreateJob("alice", t0_, "", 1000);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  Commit commit{id, "r1", {}, std::nullopt, "", std::nullopt, t0_};
  for (int i = 0; i < 1000; ++i) {
    commit.rows.push_back(Row(i, std::string(1000, 'x')));
  }
  ASSERT_TRUE(store_->CommitResults(commit).ok());
  absl::StatusOr<int64_t> after = store_->StoreBytes();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_GE(*after - *before, 500'000);
  EXPECT_TRUE(store_->Ping().ok());
}

// --- List
// ----------------------------------------------------------------------

TEST_P(JobStoreConformance, ListIsNewestFirstPagedAndFiltered) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(CreateJob("alice", t0_ + absl::Seconds(i)));
  }
  CreateJob("bob", t0_ + absl::Seconds(10));
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    absl::StatusOr<JobPage> page =
        store_->List("alice", std::nullopt, token, 2, t0_ + absl::Minutes(1));
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->jobs.size(), 2u);
    for (const Job& job : page->jobs) seen.push_back(job.id);
    token = page->next_page_token;
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_THAT(seen, ElementsAre(ids[4], ids[3], ids[2], ids[1], ids[0]));

  // Filtered by state.
  absl::StatusOr<std::vector<Job>> claimed =
      store_->Claim("r1", 2, absl::Minutes(1), t0_ + absl::Minutes(1));
  ASSERT_TRUE(claimed.ok());
  absl::StatusOr<JobPage> running =
      store_->List("alice", State::kRunning, "", 10, t0_ + absl::Minutes(1));
  ASSERT_TRUE(running.ok());
  EXPECT_THAT(Ids(running->jobs), ElementsAre(ids[1], ids[0]));
  absl::StatusOr<JobPage> queued =
      store_->List("alice", State::kQueued, "", 10, t0_ + absl::Minutes(1));
  ASSERT_TRUE(queued.ok());
  EXPECT_THAT(Ids(queued->jobs), ElementsAre(ids[4], ids[3], ids[2]));
  EXPECT_TRUE(queued->next_page_token.empty());
}

TEST_P(JobStoreConformance, ListBreaksCreatedAtTiesById) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(CreateJob("alice", t0_));
  std::sort(ids.rbegin(), ids.rend());
  std::vector<std::string> seen;
  std::string token;
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<JobPage> page =
        store_->List("alice", std::nullopt, token, 1, t0_);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_EQ(page->jobs.size(), 1u);
    seen.push_back(page->jobs[0].id);
    token = page->next_page_token;
  }
  EXPECT_TRUE(token.empty());
  EXPECT_EQ(seen, ids);
}

TEST_P(JobStoreConformance, ListRejectsAMalformedPageToken) {
  CreateJob("alice", t0_);
  for (const char* token : {"not a token!", "AAAA", "%%%"}) {
    absl::StatusOr<JobPage> page =
        store_->List("alice", std::nullopt, token, 10, t0_);
    EXPECT_EQ(page.status().code(), absl::StatusCode::kInvalidArgument)
        << token;
    EXPECT_THAT(page.status().message(), HasSubstr("page_token")) << token;
  }
}

// --- Cancel / Delete ---------------------------------------------------------

TEST_P(JobStoreConformance, CancelEndsAQueuedJobAndLeavesATerminalOneAlone) {
  std::string id = CreateJob("alice", t0_);
  absl::Time when = t0_ + absl::Seconds(3);
  absl::StatusOr<Job> cancelled = store_->Cancel("alice", id, when);
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->state, State::kCancelled);
  EXPECT_EQ(cancelled->error_code,
            static_cast<int>(absl::StatusCode::kCancelled));
  EXPECT_EQ(cancelled->error_message, "cancelled by the caller");
  EXPECT_EQ(cancelled->finished_at, when);
  EXPECT_EQ(cancelled->expires_at, when + absl::Hours(1));
  EXPECT_EQ(cancelled->seq, 2);
  absl::StatusOr<std::vector<Event>> events =
      store_->Events("alice", id, 1, 10, when);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].state, State::kCancelled);
  EXPECT_EQ((*events)[0].error_message, "cancelled by the caller");

  absl::StatusOr<Job> again =
      store_->Cancel("alice", id, when + absl::Seconds(1));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->seq, 2);
  EXPECT_EQ(again->finished_at, when);
  // Never claimed.
  absl::StatusOr<std::vector<Job>> claimed =
      store_->Claim("r1", 10, absl::Minutes(1), when);
  ASSERT_TRUE(claimed.ok());
  EXPECT_THAT(*claimed, IsEmpty());
}

TEST_P(JobStoreConformance, CancelARunningJobStopsItsRunner) {
  std::string id = CreateJob("alice", t0_);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  ASSERT_TRUE(store_->Cancel("alice", id, t0_).ok());
  absl::StatusOr<std::vector<std::string>> stop =
      store_->Renew("r1", {id}, absl::Minutes(1), t0_);
  ASSERT_TRUE(stop.ok());
  EXPECT_THAT(*stop, ElementsAre(id));
  Commit commit{id, "r1", {Row(0, "x")}, std::nullopt, "", std::nullopt, t0_};
  EXPECT_EQ(store_->CommitResults(commit).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_
                ->Finish(id, "r1", State::kSucceeded, absl::OkStatus(),
                         std::nullopt, t0_)
                .code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<Job> job = store_->Get("alice", id, t0_);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, State::kCancelled);
  EXPECT_EQ(job->counts.done, 0);
}

TEST_P(JobStoreConformance, DeleteRemovesTheJobAndItsRows) {
  std::string id = CreateJob("alice", t0_);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  Commit commit{id,           "r1", {Row(0, "a"), Row(1, "b")},
                std::nullopt, "",   MakeDelivery("job.progress", "{}"),
                t0_};
  ASSERT_TRUE(store_->CommitResults(commit).ok());
  ASSERT_TRUE(store_->Delete("alice", id, t0_).ok());
  EXPECT_EQ(store_->Get("alice", id, t0_).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete("alice", id, t0_).code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<std::vector<int64_t>> indexes = store_->ResultIndexes(id);
  ASSERT_TRUE(indexes.ok());
  EXPECT_THAT(*indexes, IsEmpty());
  absl::StatusOr<std::vector<Delivery>> deliveries =
      store_->ClaimDeliveries("r1", 10, absl::Minutes(1), t0_);
  ASSERT_TRUE(deliveries.ok());
  EXPECT_THAT(*deliveries, IsEmpty());
  absl::StatusOr<std::vector<std::string>> stop =
      store_->Renew("r1", {id}, absl::Minutes(1), t0_);
  ASSERT_TRUE(stop.ok());
  EXPECT_THAT(*stop, ElementsAre(id));
}

// --- Claim / Renew / Release
// ---------------------------------------------------

TEST_P(JobStoreConformance, ClaimTakesQueuedJobsOldestFirst) {
  std::string a = CreateJob("alice", t0_ + absl::Seconds(2));
  std::string b = CreateJob("bob", t0_);
  std::string c = CreateJob("alice", t0_ + absl::Seconds(1));
  absl::Time now = t0_ + absl::Seconds(10);
  absl::StatusOr<std::vector<Job>> claimed =
      store_->Claim("r1", 2, absl::Seconds(30), now);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  ASSERT_THAT(Ids(*claimed), ElementsAre(b, c));
  for (const Job& job : *claimed) {
    EXPECT_EQ(job.state, State::kRunning);
    EXPECT_EQ(job.owner, "r1");
    EXPECT_EQ(job.lease_until, now + absl::Seconds(30));
    EXPECT_EQ(job.attempts, 1);
    EXPECT_EQ(job.started_at, now);
    EXPECT_EQ(job.seq, 2);
  }
  absl::StatusOr<std::vector<Event>> events =
      store_->Events("bob", b, 1, 10, now);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].state, State::kRunning);

  // Leased jobs are not claimed again; the third one is.
  absl::StatusOr<std::vector<Job>> next =
      store_->Claim("r2", 10, absl::Seconds(30), now);
  ASSERT_TRUE(next.ok());
  EXPECT_THAT(Ids(*next), ElementsAre(a));
  absl::StatusOr<std::vector<Job>> none =
      store_->Claim("r2", 10, absl::Seconds(30), now + absl::Seconds(29));
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());
}

TEST_P(JobStoreConformance, AnExpiredLeaseIsClaimedAgain) {
  std::string id = CreateJob("alice", t0_);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Seconds(30), t0_).ok());
  absl::Time later = t0_ + absl::Seconds(31);
  absl::StatusOr<std::vector<Job>> retaken =
      store_->Claim("r2", 1, absl::Seconds(30), later);
  ASSERT_TRUE(retaken.ok()) << retaken.status();
  ASSERT_EQ(retaken->size(), 1u);
  const Job& job = (*retaken)[0];
  EXPECT_EQ(job.id, id);
  EXPECT_EQ(job.owner, "r2");
  EXPECT_EQ(job.attempts, 2);
  EXPECT_EQ(job.started_at, t0_);  // the first time only
  EXPECT_EQ(job.lease_until, later + absl::Seconds(30));
  // The old owner learns it lost the job, and can no longer write.
  absl::StatusOr<std::vector<std::string>> stop =
      store_->Renew("r1", {id}, absl::Seconds(30), later);
  ASSERT_TRUE(stop.ok());
  EXPECT_THAT(*stop, ElementsAre(id));
  Commit commit{id, "r1", {Row(0, "x")}, std::nullopt, "", std::nullopt, later};
  absl::Status lost = store_->CommitResults(commit);
  EXPECT_EQ(lost.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lost.message(), HasSubstr("lease lost"));
  EXPECT_EQ(store_
                ->Finish(id, "r1", State::kSucceeded, absl::OkStatus(),
                         std::nullopt, later)
                .code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(JobStoreConformance, ConcurrentClaimsGetDisjointJobs) {
  constexpr int kJobs = 40;
  std::vector<std::string> ids;
  for (int i = 0; i < kJobs; ++i) {
    ids.push_back(CreateJob("alice", t0_ + absl::Milliseconds(i)));
  }
  absl::Mutex mu;
  std::vector<std::string> claimed;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kJobs; ++round) {
        absl::StatusOr<std::vector<Job>> got = store_->Claim(
            absl::StrCat("r", t), 3, absl::Minutes(5), t0_ + absl::Seconds(1));
        ASSERT_TRUE(got.ok()) << got.status();
        if (got->empty()) return;
        absl::MutexLock lock(&mu);
        for (const Job& job : *got) {
          EXPECT_EQ(job.owner, absl::StrCat("r", t));
          claimed.push_back(job.id);
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(claimed.size(), static_cast<size_t>(kJobs));
  EXPECT_THAT(claimed, UnorderedElementsAreArray(ids));
}

TEST_P(JobStoreConformance, RenewExtendsTheLeaseAndNamesJobsToStop) {
  std::string held = CreateJob("alice", t0_);
  std::string cancelled = CreateJob("alice", t0_ + absl::Seconds(1));
  std::string deleted = CreateJob("alice", t0_ + absl::Seconds(2));
  absl::StatusOr<std::vector<Job>> claimed =
      store_->Claim("r1", 3, absl::Seconds(30), t0_);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 3u);
  ASSERT_TRUE(store_->Cancel("alice", cancelled, t0_).ok());
  ASSERT_TRUE(store_->Delete("alice", deleted, t0_).ok());
  absl::Time now = t0_ + absl::Seconds(20);
  absl::StatusOr<std::vector<std::string>> stop =
      store_->Renew("r1", {held, cancelled, deleted}, absl::Seconds(30), now);
  ASSERT_TRUE(stop.ok()) << stop.status();
  EXPECT_THAT(*stop, UnorderedElementsAreArray({cancelled, deleted}));
  absl::StatusOr<Job> job = store_->Get("alice", held, now);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->lease_until, now + absl::Seconds(30));
  // Past the first lease, but renewed: nobody else takes it.
  absl::StatusOr<std::vector<Job>> other =
      store_->Claim("r2", 10, absl::Seconds(30), t0_ + absl::Seconds(45));
  ASSERT_TRUE(other.ok());
  EXPECT_THAT(*other, IsEmpty());
  // Another replica renewing it is told to stop.
  absl::StatusOr<std::vector<std::string>> not_mine =
      store_->Renew("r2", {held}, absl::Seconds(30), now);
  ASSERT_TRUE(not_mine.ok());
  EXPECT_THAT(*not_mine, ElementsAre(held));
}

TEST_P(JobStoreConformance, ReleaseRequeuesOnlyTheHoldersRunningJobs) {
  std::string a = CreateJob("alice", t0_);
  std::string b = CreateJob("alice", t0_ + absl::Seconds(1));
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(5), t0_).ok());
  ASSERT_TRUE(store_->Claim("r2", 1, absl::Minutes(5), t0_).ok());
  // r1 releases both: only its own goes back.
  ASSERT_TRUE(store_->Release("r1", {a, b}, t0_).ok());
  absl::StatusOr<Job> ja = store_->Get("alice", a, t0_);
  absl::StatusOr<Job> jb = store_->Get("alice", b, t0_);
  ASSERT_TRUE(ja.ok() && jb.ok());
  EXPECT_EQ(ja->state, State::kQueued);
  EXPECT_EQ(ja->owner, "");
  EXPECT_EQ(jb->state, State::kRunning);
  EXPECT_EQ(jb->owner, "r2");
  // Taken at once, not after the lease.
  absl::StatusOr<std::vector<Job>> again =
      store_->Claim("r3", 10, absl::Minutes(5), t0_ + absl::Seconds(1));
  ASSERT_TRUE(again.ok());
  EXPECT_THAT(Ids(*again), ElementsAre(a));
  EXPECT_EQ((*again)[0].attempts, 2);
}

// --- CommitResults / ResultIndexes / Finish
// -----------------------------------

TEST_P(JobStoreConformance, CommitAddsEachIndexOnceWithItsCounts) {
  std::string id = CreateJob("alice", t0_, "", 5);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  Commit first{id,
               "r1",
               {Row(3, "three", false, 30), Row(0, "zero", true, 0),
                Row(1, "one", false, 10)},
               std::nullopt,
               "cp-1",
               std::nullopt,
               t0_ + absl::Seconds(1)};
  ASSERT_TRUE(store_->CommitResults(first).ok());
  // Index 1 again (an item fetched twice after a crash): the first stays.
  Commit second{id,
                "r1",
                {Row(1, "ONE AGAIN", true, 99), Row(4, "four", false, 40)},
                int64_t{7},
                "",
                std::nullopt,
                t0_ + absl::Seconds(2)};
  ASSERT_TRUE(store_->CommitResults(second).ok());

  absl::StatusOr<Job> job = store_->Get("alice", id, t0_ + absl::Seconds(2));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->counts.done, 4);
  EXPECT_EQ(job->counts.failed, 1);
  EXPECT_EQ(job->counts.bytes, 80);
  EXPECT_EQ(job->counts.total, 7);
  EXPECT_EQ(job->checkpoint, "cp-1");  // empty: kept
  EXPECT_EQ(job->seq, 4);              // created, claimed, two commits

  absl::StatusOr<std::vector<int64_t>> indexes = store_->ResultIndexes(id);
  ASSERT_TRUE(indexes.ok());
  EXPECT_THAT(*indexes, ElementsAre(0, 1, 3, 4));
  absl::StatusOr<std::vector<ResultRow>> rows =
      store_->Results("alice", id, -1, 100, 0, t0_);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[1].index, 1);
  EXPECT_EQ((*rows)[1].data, "one");
  EXPECT_FALSE((*rows)[1].failed);
  EXPECT_EQ((*rows)[1].body_bytes, 10);
  EXPECT_TRUE((*rows)[0].failed);

  absl::StatusOr<std::vector<Event>> events =
      store_->Events("alice", id, 2, 10, t0_);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 2u);
  EXPECT_EQ((*events)[0].counts.done, 3);
  EXPECT_EQ((*events)[0].time, t0_ + absl::Seconds(1));
  EXPECT_EQ((*events)[1].counts.done, 4);
  EXPECT_EQ((*events)[1].counts.total, 7);

  // A later checkpoint replaces it.
  Commit third{id, "r1", {}, std::nullopt, "cp-2", std::nullopt, t0_};
  ASSERT_TRUE(store_->CommitResults(third).ok());
  job = store_->Get("alice", id, t0_);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->checkpoint, "cp-2");
  EXPECT_EQ(job->counts.done, 4);
}

TEST_P(JobStoreConformance, ALostLeaseCommitsNothing) {
  std::string id = CreateJob("alice", t0_);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  Commit commit{id,          "r2", {Row(0, "x")},
                int64_t{99}, "cp", MakeDelivery("job.progress", "{}"),
                t0_};
  absl::Status lost = store_->CommitResults(commit);
  EXPECT_EQ(lost.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(lost.message(), HasSubstr("lease lost"));
  absl::StatusOr<Job> job = store_->Get("alice", id, t0_);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->counts.done, 0);
  EXPECT_EQ(job->counts.total, 10);
  EXPECT_EQ(job->checkpoint, "");
  EXPECT_EQ(job->seq, 2);
  EXPECT_EQ(job->last_delivery.state, DeliveryState::kNone);
  absl::StatusOr<std::vector<int64_t>> indexes = store_->ResultIndexes(id);
  ASSERT_TRUE(indexes.ok());
  EXPECT_THAT(*indexes, IsEmpty());
  // A queued (never claimed) job has no lease either.
  std::string queued = CreateJob("alice", t0_ + absl::Seconds(1));
  commit.job_id = queued;
  commit.replica = "r1";
  EXPECT_EQ(store_->CommitResults(commit).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(JobStoreConformance, FinishEndsTheJobWithItsDelivery) {
  std::string id = CreateJob("alice", t0_);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  absl::Time done = t0_ + absl::Seconds(9);
  EXPECT_EQ(store_
                ->Finish(id, "r2", State::kSucceeded, absl::OkStatus(),
                         std::nullopt, done)
                .code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(store_
                  ->Finish(id, "r1", State::kFailed,
                           absl::DeadlineExceededError("too slow"),
                           MakeDelivery("job.failed", "{\"id\":1}"), done)
                  .ok());
  absl::StatusOr<Job> job = store_->Get("alice", id, done);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state, State::kFailed);
  EXPECT_EQ(job->error_code,
            static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(job->error_message, "too slow");
  EXPECT_EQ(job->finished_at, done);
  EXPECT_EQ(job->expires_at, done + absl::Hours(1));
  EXPECT_EQ(job->owner, "");
  EXPECT_EQ(job->seq, 3);
  EXPECT_EQ(job->last_delivery.state, DeliveryState::kPending);
  EXPECT_EQ(job->last_delivery.event, "job.failed");
  EXPECT_EQ(job->last_delivery.body, "{\"id\":1}");
  absl::StatusOr<std::vector<Event>> events =
      store_->Events("alice", id, 2, 10, done);
  ASSERT_TRUE(events.ok());
  ASSERT_EQ(events->size(), 1u);
  EXPECT_EQ((*events)[0].state, State::kFailed);
  EXPECT_EQ((*events)[0].error_message, "too slow");
  // Terminal: no second finish, no commits, no claims.
  EXPECT_EQ(store_
                ->Finish(id, "r1", State::kSucceeded, absl::OkStatus(),
                         std::nullopt, done)
                .code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<std::vector<Job>> claimed =
      store_->Claim("r1", 10, absl::Minutes(1), done + absl::Minutes(5));
  ASSERT_TRUE(claimed.ok());
  EXPECT_THAT(*claimed, IsEmpty());
}

// --- Results / Events
// ------------------------------------------------------------

TEST_P(JobStoreConformance, ResultsPageByRowsAndBytesAndAlwaysGiveOne) {
  std::string id = CreateJob("alice", t0_, "", 10);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  Commit commit{id, "r1", {}, std::nullopt, "", std::nullopt, t0_};
  for (int i = 9; i >= 0; --i) {
    commit.rows.push_back(Row(i, std::string(100, static_cast<char>('a' + i))));
  }
  ASSERT_TRUE(store_->CommitResults(commit).ok());

  absl::StatusOr<std::vector<ResultRow>> rows =
      store_->Results("alice", id, -1, 4, 0, t0_);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  EXPECT_EQ((*rows)[0].index, 0);
  EXPECT_EQ((*rows)[3].index, 3);
  EXPECT_EQ((*rows)[3].data, std::string(100, 'd'));

  rows = store_->Results("alice", id, 3, 100, 250, t0_);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);  // a third would make 300 > 250
  EXPECT_EQ((*rows)[0].index, 4);
  EXPECT_EQ((*rows)[1].index, 5);

  rows = store_->Results("alice", id, 5, 100, 10, t0_);
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);  // bigger than max_bytes, but one
  EXPECT_EQ((*rows)[0].index, 6);

  rows = store_->Results("alice", id, 9, 100, 0, t0_);
  ASSERT_TRUE(rows.ok());
  EXPECT_THAT(*rows, IsEmpty());
}

TEST_P(JobStoreConformance, EventsHaveIncreasingSeqAndResumeAfterOne) {
  std::string id = CreateJob("alice", t0_, "", 3);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  for (int i = 0; i < 3; ++i) {
    Commit commit{id, "r1",         {Row(i, "x")},         std::nullopt,
                  "", std::nullopt, t0_ + absl::Seconds(i)};
    ASSERT_TRUE(store_->CommitResults(commit).ok());
  }
  ASSERT_TRUE(store_
                  ->Finish(id, "r1", State::kSucceeded, absl::OkStatus(),
                           std::nullopt, t0_ + absl::Seconds(5))
                  .ok());
  absl::StatusOr<std::vector<Event>> all =
      store_->Events("alice", id, 0, 100, t0_);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 6u);
  for (size_t i = 0; i < all->size(); ++i) {
    EXPECT_EQ((*all)[i].seq, static_cast<int64_t>(i + 1));
  }
  EXPECT_EQ((*all)[0].state, State::kQueued);
  EXPECT_EQ((*all)[1].state, State::kRunning);
  EXPECT_EQ((*all)[4].counts.done, 3);
  EXPECT_EQ((*all)[5].state, State::kSucceeded);
  absl::StatusOr<std::vector<Event>> tail =
      store_->Events("alice", id, 3, 2, t0_);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 2u);
  EXPECT_EQ((*tail)[0].seq, 4);
  EXPECT_EQ((*tail)[1].seq, 5);
  absl::StatusOr<std::vector<Event>> none =
      store_->Events("alice", id, 6, 10, t0_);
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());
}

// --- deliveries --------------------------------------------------------------

TEST_P(JobStoreConformance, DeliveriesAreClaimedWhenDueLeasedAndRecorded) {
  NewJob new_job = MakeJob("alice", t0_);
  new_job.webhook = {"http://127.0.0.1:9/hook", "", "team-a", true};
  ASSERT_TRUE(store_->Create(new_job, {}).ok());
  const std::string& id = new_job.id;
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  Delivery later = MakeDelivery("job.progress", "{\"n\":1}");
  later.next_attempt_at = t0_ + absl::Seconds(30);
  Commit commit{id, "r1", {Row(0, "x")}, std::nullopt, "", later, t0_};
  ASSERT_TRUE(store_->CommitResults(commit).ok());
  ASSERT_TRUE(store_
                  ->Finish(id, "r1", State::kSucceeded, absl::OkStatus(),
                           MakeDelivery("job.completed", "{\"n\":2}"), t0_)
                  .ok());

  // Only the completed one is due now.
  absl::StatusOr<std::vector<Delivery>> due =
      store_->ClaimDeliveries("w1", 10, absl::Seconds(10), t0_);
  ASSERT_TRUE(due.ok()) << due.status();
  ASSERT_EQ(due->size(), 1u);
  Delivery completed = (*due)[0];
  EXPECT_GT(completed.id, 0);
  EXPECT_EQ(completed.job_id, id);
  EXPECT_EQ(completed.event, "job.completed");
  EXPECT_EQ(completed.body, "{\"n\":2}");
  EXPECT_EQ(completed.state, DeliveryState::kPending);
  EXPECT_EQ(completed.attempts, 0);
  EXPECT_EQ(completed.webhook.url, "http://127.0.0.1:9/hook");
  EXPECT_EQ(completed.webhook.secret_id, "team-a");
  EXPECT_TRUE(completed.webhook.progress);
  // Leased: nobody else sends it meanwhile.
  absl::StatusOr<std::vector<Delivery>> none = store_->ClaimDeliveries(
      "w2", 10, absl::Seconds(10), t0_ + absl::Seconds(5));
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());

  // Both due later, oldest first; the expired lease frees the first.
  absl::StatusOr<std::vector<Delivery>> both = store_->ClaimDeliveries(
      "w2", 10, absl::Seconds(10), t0_ + absl::Seconds(30));
  ASSERT_TRUE(both.ok());
  ASSERT_EQ(both->size(), 2u);
  EXPECT_EQ((*both)[0].event, "job.progress");
  EXPECT_EQ((*both)[1].event, "job.completed");

  // A retry: not due until its next attempt.
  completed.state = DeliveryState::kPending;
  completed.attempts = 1;
  completed.last_error = "HTTP 503";
  completed.next_attempt_at = t0_ + absl::Minutes(2);
  ASSERT_TRUE(store_->RecordDelivery(completed).ok());
  absl::StatusOr<Job> job = store_->Get("alice", id, t0_);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->last_delivery.id, completed.id);
  EXPECT_EQ(job->last_delivery.attempts, 1);
  EXPECT_EQ(job->last_delivery.last_error, "HTTP 503");
  EXPECT_EQ(job->last_delivery.state, DeliveryState::kPending);
  none = store_->ClaimDeliveries("w1", 10, absl::Seconds(10),
                                 t0_ + absl::Seconds(119));
  ASSERT_TRUE(none.ok());
  ASSERT_EQ(none->size(), 1u);  // the progress one, its lease over
  EXPECT_EQ((*none)[0].event, "job.progress");
  Delivery progress = (*none)[0];
  progress.state = DeliveryState::kFailed;
  progress.attempts = 5;
  progress.last_error = "gave up";
  ASSERT_TRUE(store_->RecordDelivery(progress).ok());

  absl::StatusOr<std::vector<Delivery>> retry = store_->ClaimDeliveries(
      "w1", 10, absl::Seconds(10), t0_ + absl::Minutes(2));
  ASSERT_TRUE(retry.ok());
  ASSERT_EQ(retry->size(), 1u);
  EXPECT_EQ((*retry)[0].id, completed.id);
  EXPECT_EQ((*retry)[0].attempts, 1);
  completed = (*retry)[0];
  completed.state = DeliveryState::kDelivered;
  completed.attempts = 2;
  completed.last_error = "";
  ASSERT_TRUE(store_->RecordDelivery(completed).ok());
  job = store_->Get("alice", id, t0_);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->last_delivery.state, DeliveryState::kDelivered);
  EXPECT_EQ(job->last_delivery.attempts, 2);
  none = store_->ClaimDeliveries("w1", 10, absl::Seconds(10),
                                 t0_ + absl::Hours(1) - absl::Seconds(1));
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(*none, IsEmpty());
}

TEST_P(JobStoreConformance, ClaimDeliveriesHonoursMax) {
  std::string id = CreateJob("alice", t0_);
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Minutes(1), t0_).ok());
  for (int i = 0; i < 3; ++i) {
    Commit commit{id, "r1",
                  {}, std::nullopt,
                  "", MakeDelivery("job.progress", absl::StrCat(i)),
                  t0_};
    ASSERT_TRUE(store_->CommitResults(commit).ok());
  }
  absl::StatusOr<std::vector<Delivery>> two =
      store_->ClaimDeliveries("w1", 2, absl::Seconds(10), t0_);
  ASSERT_TRUE(two.ok());
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[0].body, "0");
  EXPECT_EQ((*two)[1].body, "1");
  absl::StatusOr<std::vector<Delivery>> rest =
      store_->ClaimDeliveries("w2", 2, absl::Seconds(10), t0_);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_EQ((*rest)[0].body, "2");
}

// --- expiry and Sweep
// ----------------------------------------------------------

TEST_P(JobStoreConformance, AnExpiredJobIsNotFound) {
  std::string id = CreateJob("alice", t0_);
  ASSERT_TRUE(store_->Cancel("alice", id, t0_).ok());  // expires t0_ + 1 h
  absl::Time before = t0_ + absl::Hours(1) - absl::Seconds(1);
  absl::Time after = t0_ + absl::Hours(1) + absl::Seconds(1);
  EXPECT_TRUE(store_->Get("alice", id, before).ok());
  EXPECT_EQ(store_->Get("alice", id, after).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Results("alice", id, -1, 10, 0, after).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Events("alice", id, 0, 10, after).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Cancel("alice", id, after).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<JobPage> page =
      store_->List("alice", std::nullopt, "", 10, after);
  ASSERT_TRUE(page.ok());
  EXPECT_THAT(page->jobs, IsEmpty());
  page = store_->List("alice", std::nullopt, "", 10, before);
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->jobs.size(), 1u);
}

TEST_P(JobStoreConformance, SweepDeletesExpiredTerminalJobsInBoundedBatches) {
  std::vector<std::string> expired;
  for (int i = 0; i < 3; ++i) {
    std::string id = CreateJob("alice", t0_ + absl::Seconds(i));
    expired.push_back(id);
  }
  absl::StatusOr<std::vector<Job>> claimed =
      store_->Claim("r1", 3, absl::Minutes(1), t0_);
  ASSERT_TRUE(claimed.ok());
  ASSERT_EQ(claimed->size(), 3u);
  for (const std::string& id : expired) {
    Commit commit{id,           "r1", {Row(0, "a"), Row(1, "b")},
                  std::nullopt, "",   MakeDelivery("job.progress", "{}"),
                  t0_};
    ASSERT_TRUE(store_->CommitResults(commit).ok());
    ASSERT_TRUE(store_
                    ->Finish(id, "r1", State::kSucceeded, absl::OkStatus(),
                             std::nullopt, t0_)
                    .ok());
  }
  // Terminal but not yet expired (a longer ttl), and a running job.
  NewJob keep = MakeJob("alice", t0_ + absl::Seconds(10));
  keep.ttl = absl::Hours(48);
  ASSERT_TRUE(store_->Create(keep, {}).ok());
  ASSERT_TRUE(store_->Cancel("alice", keep.id, t0_ + absl::Seconds(10)).ok());
  std::string running = CreateJob("alice", t0_ + absl::Seconds(11));
  ASSERT_TRUE(store_->Claim("r1", 1, absl::Hours(100), t0_).ok());

  absl::Time later = t0_ + absl::Hours(2);
  absl::StatusOr<int> swept = store_->Sweep(later, 2);
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(*swept, 2);
  swept = store_->Sweep(later, 2);
  ASSERT_TRUE(swept.ok());
  EXPECT_EQ(*swept, 1);
  swept = store_->Sweep(later, 2);
  ASSERT_TRUE(swept.ok());
  EXPECT_EQ(*swept, 0);
  for (const std::string& id : expired) {
    absl::StatusOr<std::vector<int64_t>> indexes = store_->ResultIndexes(id);
    ASSERT_TRUE(indexes.ok());
    EXPECT_THAT(*indexes, IsEmpty());
  }
  absl::StatusOr<std::vector<Delivery>> deliveries =
      store_->ClaimDeliveries("w", 10, absl::Seconds(1), later);
  ASSERT_TRUE(deliveries.ok());
  EXPECT_THAT(*deliveries, IsEmpty());
  EXPECT_TRUE(store_->Get("alice", keep.id, later).ok());
  absl::StatusOr<Job> still = store_->Get("alice", running, later);
  ASSERT_TRUE(still.ok());
  EXPECT_EQ(still->state, State::kRunning);
}

}  // namespace fetchd::jobs::testing
