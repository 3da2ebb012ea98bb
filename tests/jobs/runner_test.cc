// The job runner's crash safety: fetchd as a child process, SIGKILLed in
// the middle of a job and started again on the same SQLite file.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fetchd/v1/jobs.grpc.pb.h"
#include "tests/support/certs.h"
#include "tests/support/fetchd_process.h"
#include "tests/support/jobs_client.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd::testing {
namespace {

constexpr int kItems = 3000;
constexpr int kConcurrency = 16;

std::unique_ptr<v1::Jobs::Stub> Connect(const FetchdProcess& fetchd) {
  return v1::Jobs::NewStub(grpc::CreateChannel(
      fetchd.address(), grpc::InsecureChannelCredentials()));
}

// Every committed result by index, as bytes (to compare across a crash).
std::map<int64_t, std::string> Results(v1::Jobs::Stub& stub,
                                       const std::string& id) {
  std::map<int64_t, std::string> results;
  for (const v1::JobResult& result : AllResults(stub, id, 1000)) {
    results.emplace(result.index(), result.SerializeAsString());
  }
  return results;
}

TEST(JobCrashTest, SigkilledReplicaLosesNothingAndDuplicatesNothing) {
  TempDir dir;
  Origin origin;
  const std::vector<std::string> flags = {
      absl::StrCat("--job_store=sqlite:", dir.File("jobs.db")),
      "--job_lease=3s", "--job_poll_interval=100ms",
      // The origin is on loopback; nothing else is fetched.
      "--allow_cidrs=127.0.0.0/8"};
  auto first = std::make_unique<FetchdProcess>(FETCHD_PATH, flags);
  ASSERT_TRUE(first->ok());
  auto stub = Connect(*first);

  v1::SubmitRequest request;
  v1::BatchFetchRequest* batch = request.mutable_batch_fetch();
  batch->set_max_concurrency(kConcurrency);
  for (int i = 0; i < kItems; ++i) {
    batch->add_items()->set_url(origin.Url(absl::StrCat("/delay/30?i=", i)));
  }
  v1::SubmitResponse submitted;
  ASSERT_TRUE(
      stub->Submit(ContextWithTimeout(kEventTimeout).get(), request, &submitted)
          .ok());
  const std::string id = submitted.job().id();

  // Killed somewhere in the middle: some results committed, most not.
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::Job> job = GetJob(*stub, id);
        return job.ok() && job->counts().done() >= kItems / 5;
      },
      kEventTimeout, "a fifth of the items committed"));
  std::map<int64_t, std::string> before = Results(*stub, id);
  ASSERT_GE(before.size(), static_cast<size_t>(kItems / 5));
  ASSERT_LT(before.size(), static_cast<size_t>(kItems));
  first->process().Signal(SIGKILL);
  ASSERT_TRUE(first->process().Wait(kEventTimeout).ok());
  first.reset();

  // The same store: the job is taken again once its lease ends.
  FetchdProcess second(FETCHD_PATH, flags);
  ASSERT_TRUE(second.ok());
  stub = Connect(second);
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::Job> job = GetJob(*stub, id);
        return job.ok() && job->state() == v1::JOB_STATE_SUCCEEDED;
      },
      absl::Seconds(90), "the job finished on the restarted fetchd"));
  absl::StatusOr<v1::Job> job = GetJob(*stub, id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->counts().done(), kItems);
  EXPECT_EQ(job->counts().failed(), 0);
  EXPECT_EQ(job->attempts(), 2);

  std::map<int64_t, std::string> after = Results(*stub, id);
  ASSERT_EQ(after.size(), static_cast<size_t>(kItems));
  EXPECT_EQ(after.begin()->first, 0);
  EXPECT_EQ(after.rbegin()->first, kItems - 1);
  // What was committed before the kill is there, byte for byte.
  for (const auto& [index, bytes] : before) {
    ASSERT_EQ(after[index], bytes) << "result " << index << " changed";
  }
  // At-least-once fetches: only what was in flight or uncommitted at the
  // kill is fetched again, not the whole job.
  EXPECT_GE(origin.requests(), kItems);
  EXPECT_LT(origin.requests(), kItems + kItems / 3);
}

// SIGTERM (a rollout): the job goes back to the queue at once, so the next
// fetchd on the store continues it without waiting for the lease to end.
TEST(JobCrashTest, GracefulStopHandsTheJobOnWithoutWaitingForTheLease) {
  TempDir dir;
  Origin origin;
  const std::vector<std::string> flags = {
      absl::StrCat("--job_store=sqlite:", dir.File("jobs.db")),
      // Longer than the test waits: only a release lets it finish in time.
      "--job_lease=300s", "--job_poll_interval=100ms", "--drain_delay=0",
      "--shutdown_grace=5s", "--allow_cidrs=127.0.0.0/8"};
  auto first = std::make_unique<FetchdProcess>(FETCHD_PATH, flags);
  ASSERT_TRUE(first->ok());
  auto stub = Connect(*first);
  v1::SubmitRequest request;
  request.mutable_batch_fetch()->set_max_concurrency(8);
  for (int i = 0; i < 600; ++i) {
    request.mutable_batch_fetch()->add_items()->set_url(
        origin.Url(absl::StrCat("/delay/40?i=", i)));
  }
  v1::SubmitResponse submitted;
  ASSERT_TRUE(
      stub->Submit(ContextWithTimeout(kEventTimeout).get(), request, &submitted)
          .ok());
  const std::string id = submitted.job().id();
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::Job> job = GetJob(*stub, id);
        return job.ok() && job->counts().done() >= 50;
      },
      kEventTimeout, "50 items committed"));
  first->process().Signal(SIGTERM);
  absl::StatusOr<ProcessResult> exited = first->process().Wait(kEventTimeout);
  ASSERT_TRUE(exited.ok());
  EXPECT_EQ(exited->exit_code, 0);
  first.reset();

  FetchdProcess second(FETCHD_PATH, flags);
  ASSERT_TRUE(second.ok());
  stub = Connect(second);
  ASSERT_TRUE(WaitFor(
      [&] {
        absl::StatusOr<v1::Job> job = GetJob(*stub, id);
        return job.ok() && job->state() == v1::JOB_STATE_SUCCEEDED;
      },
      kEventTimeout, "the job finished well before its 300 s lease"));
  absl::StatusOr<v1::Job> job = GetJob(*stub, id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->counts().done(), 600);
  EXPECT_EQ(job->attempts(), 2);
  EXPECT_EQ(Results(*stub, id).size(), 600u);
}

}  // namespace
}  // namespace fetchd::testing
