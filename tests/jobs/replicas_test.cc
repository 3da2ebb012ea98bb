// Jobs across replicas: fetchd processes sharing one real PostgreSQL
// (a private server started by the test), killed and restarted.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/synchronization/mutex.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "fetchd/v1/jobs.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/fetchd_process.h"
#include "tests/support/jobs_client.h"
#include "tests/support/origin.h"
#include "tests/support/postgres_server.h"
#include "tests/support/test_server.h"

namespace fetchd::testing {
namespace {

using grpc::health::v1::HealthCheckResponse;

class ReplicasTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FETCHD_REQUIRE_POSTGRES();
    auto server = PostgresServer::Create();
    ASSERT_TRUE(server.ok()) << server.status();
    postgres_ = *std::move(server);
  }

  std::vector<std::string> Flags(const std::string& extra = "") const {
    std::vector<std::string> flags = {
        "--job_store=" + postgres_->conninfo(), "--job_lease=3s",
        "--job_poll_interval=100ms", "--drain_delay=0",
        // The origin is on loopback; nothing else is fetched.
        "--allow_cidrs=127.0.0.0/8"};
    if (!extra.empty()) flags.push_back(extra);
    return flags;
  }

  static std::unique_ptr<v1::Jobs::Stub> Jobs(const FetchdProcess& fetchd) {
    return v1::Jobs::NewStub(grpc::CreateChannel(
        fetchd.address(), grpc::InsecureChannelCredentials()));
  }

  v1::SubmitRequest SlowBatch(int items, int delay_ms, int concurrency) {
    v1::SubmitRequest request;
    request.mutable_batch_fetch()->set_max_concurrency(concurrency);
    for (int i = 0; i < items; ++i) {
      request.mutable_batch_fetch()->add_items()->set_url(
          origin_.Url(absl::StrCat("/delay/", delay_ms, "?i=", i)));
    }
    return request;
  }

  std::unique_ptr<PostgresServer> postgres_;
  Origin origin_;
};

// Replica A takes a job and is SIGKILLed; replica B finishes it, and a
// watcher on B saw the progress.
TEST_F(ReplicasTest, AnotherReplicaFinishesAKilledReplicasJob) {
  constexpr int kItems = 1500;
  auto a = std::make_unique<FetchdProcess>(FETCHD_PATH, Flags());
  ASSERT_TRUE(a->ok());
  auto stub_a = Jobs(*a);
  v1::SubmitResponse submitted;
  ASSERT_TRUE(stub_a
                  ->Submit(ContextWithTimeout(kEventTimeout).get(),
                           SlowBatch(kItems, 30, 16), &submitted)
                  .ok());
  const std::string id = submitted.job().id();
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::Job> job = GetJob(*stub_a, id);
        return job.ok() && job->counts().done() >= kItems / 5;
      },
      kEventTimeout, "replica A committed a fifth"));

  // B starts while A holds the job: it cannot take it before A's lease
  // ends.
  FetchdProcess b(FETCHD_PATH, Flags());
  ASSERT_TRUE(b.ok());
  auto stub_b = Jobs(b);
  absl::StatusOr<v1::Job> before = GetJob(*stub_b, id);
  ASSERT_TRUE(before.ok()) << before.status();  // B sees A's job
  EXPECT_EQ(before->state(), v1::JOB_STATE_RUNNING);

  // A watcher on B, from the start.
  absl::Mutex mu;
  std::vector<v1::WatchResponse> events;
  grpc::Status watch_end;
  grpc::ClientContext watch_context;
  watch_context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  std::thread watcher([&] {
    v1::WatchRequest request;
    request.set_id(id);
    auto reader = stub_b->Watch(&watch_context, request);
    v1::WatchResponse event;
    while (reader->Read(&event)) {
      absl::MutexLock lock(&mu);
      events.push_back(event);
    }
    watch_end = reader->Finish();
  });
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::MutexLock lock(&mu);
        return !events.empty();
      },
      kEventTimeout, "the watcher's first event"));

  a->process().Signal(SIGKILL);
  ASSERT_TRUE(a->process().Wait(kEventTimeout).ok());
  a.reset();

  watcher.join();
  ASSERT_TRUE(watch_end.ok()) << watch_end.error_message();
  absl::StatusOr<v1::Job> job = GetJob(*stub_b, id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(job->counts().done(), kItems);
  EXPECT_EQ(job->attempts(), 2);
  {
    absl::MutexLock lock(&mu);
    ASSERT_GE(events.size(), 3u);
    EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED);
    // Progress made by B after the kill reached B's watcher, in order.
    int64_t last_done = -1;
    int progress_after_kill = 0;
    for (size_t i = 0; i < events.size(); ++i) {
      if (i > 0) {
        EXPECT_GT(events[i].seq(), events[i - 1].seq());
      }
      EXPECT_GE(events[i].counts().done(), last_done);
      last_done = events[i].counts().done();
      if (events[i].state() == v1::JOB_STATE_RUNNING &&
          events[i].counts().done() > before->counts().done()) {
        ++progress_after_kill;
      }
    }
    EXPECT_GE(progress_after_kill, 2);
  }
  // AllResults fails on an index seen twice.
  EXPECT_EQ(AllResults(*stub_b, id, 1000).size(), static_cast<size_t>(kItems));
}

// Two replicas get the same idempotency key at the same moment: one job.
TEST_F(ReplicasTest, OneKeySubmittedToTwoReplicasAtOnceMakesOneJob) {
  FetchdProcess a(FETCHD_PATH, Flags());
  FetchdProcess b(FETCHD_PATH, Flags());
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  auto stub_a = Jobs(a);
  auto stub_b = Jobs(b);
  for (int round = 0; round < 10; ++round) {
    v1::SubmitRequest request = SlowBatch(3, 1, 3);
    request.set_idempotency_key(absl::StrCat("key-", round));
    absl::Barrier* barrier = new absl::Barrier(2);
    v1::SubmitResponse from_a, from_b;
    grpc::Status status_a, status_b;
    std::thread ta([&] {
      auto context = ContextWithTimeout(kEventTimeout);
      if (barrier->Block()) delete barrier;
      status_a = stub_a->Submit(context.get(), request, &from_a);
    });
    std::thread tb([&] {
      auto context = ContextWithTimeout(kEventTimeout);
      if (barrier->Block()) delete barrier;
      status_b = stub_b->Submit(context.get(), request, &from_b);
    });
    ta.join();
    tb.join();
    ASSERT_TRUE(status_a.ok()) << status_a.error_message();
    ASSERT_TRUE(status_b.ok()) << status_b.error_message();
    EXPECT_EQ(from_a.job().id(), from_b.job().id()) << "round " << round;
    EXPECT_NE(from_a.created(), from_b.created()) << "round " << round;
  }
  v1::ListRequest list;
  list.set_page_size(100);
  v1::ListResponse listed;
  ASSERT_TRUE(
      stub_a->List(ContextWithTimeout(kEventTimeout).get(), list, &listed)
          .ok());
  EXPECT_EQ(listed.jobs_size(), 10);
}

// PostgreSQL down at run time: Submit is UNAVAILABLE and only Jobs turns
// NOT_SERVING; Fetch and Compute go on; a running job resumes when the
// database is back.
TEST_F(ReplicasTest, PostgresDownTakesOnlyJobsDown) {
  FetchdProcess fetchd(FETCHD_PATH, Flags());
  ASSERT_TRUE(fetchd.ok());
  auto channel =
      grpc::CreateChannel(fetchd.address(), grpc::InsecureChannelCredentials());
  auto jobs = v1::Jobs::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto status_of = [&](const std::string& service) {
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health->Check(
        ContextWithTimeout(absl::Seconds(5)).get(), request, &response);
    return status.ok() ? response.status() : HealthCheckResponse::UNKNOWN;
  };
  EXPECT_EQ(status_of("fetchd.v1.Jobs"), HealthCheckResponse::SERVING);

  v1::SubmitResponse submitted;
  ASSERT_TRUE(jobs->Submit(ContextWithTimeout(kEventTimeout).get(),
                           SlowBatch(300, 20, 4), &submitted)
                  .ok());
  const std::string id = submitted.job().id();
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::Job> job = GetJob(*jobs, id);
        return job.ok() && job->counts().done() > 0;
      },
      kEventTimeout, "the job started"));

  ASSERT_TRUE(postgres_->Stop().ok());
  v1::SubmitResponse refused;
  grpc::Status down = jobs->Submit(ContextWithTimeout(kEventTimeout).get(),
                                   SlowBatch(1, 1, 1), &refused);
  EXPECT_EQ(down.error_code(), grpc::StatusCode::UNAVAILABLE)
      << down.error_message();
  EXPECT_TRUE(WaitFor(
      [&] {
        return status_of("fetchd.v1.Jobs") == HealthCheckResponse::NOT_SERVING;
      },
      kEventTimeout, "Jobs NOT_SERVING"));
  // Only Jobs: the server and its other services stay SERVING.
  EXPECT_EQ(status_of(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(status_of("fetchd.v1.Fetch"), HealthCheckResponse::SERVING);
  EXPECT_EQ(status_of("fetchd.v1.Compute"), HealthCheckResponse::SERVING);
  // Live fetches still work.
  auto fetch = v1::Fetch::NewStub(channel);
  v1::BatchFetchRequest live;
  live.add_items()->set_url(origin_.Url("/bytes/5"));
  v1::BatchFetchResponse fetched;
  grpc::Status live_status = fetch->BatchFetch(
      ContextWithTimeout(kEventTimeout).get(), live, &fetched);
  ASSERT_TRUE(live_status.ok()) << live_status.error_message();
  EXPECT_EQ(fetched.results(0).body(), "xxxxx");

  ASSERT_TRUE(postgres_->Start().ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        return status_of("fetchd.v1.Jobs") == HealthCheckResponse::SERVING;
      },
      kEventTimeout, "Jobs SERVING again"));
  EXPECT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::Job> job = GetJob(*jobs, id);
        return job.ok() && job->state() == v1::JOB_STATE_SUCCEEDED;
      },
      absl::Seconds(60), "the job finished after the outage"));
  absl::StatusOr<v1::Job> job = GetJob(*jobs, id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->counts().done(), 300);
}

}  // namespace
}  // namespace fetchd::testing
