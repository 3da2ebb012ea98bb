// The Jobs service end to end: a real fetchd (in-process, gRPC on
// loopback) with a real SQLite store in a temp dir, and a real HTTP origin.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "fetchd/v1/jobs.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/jobs/webhook.h"
#include "tests/support/certs.h"
#include "tests/support/fetchd_process.h"
#include "tests/support/jobs_client.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"
#include "tests/support/webhook_receiver.h"

namespace fetchd::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kAliceToken[] = "alice-token-0123456789abcdef";
constexpr char kBobToken[] = "bob-token-0123456789abcdefgh";

class JobsTest : public ::testing::Test {
 protected:
  rpc::ServerConfig JobsConfig() {
    rpc::ServerConfig config = TestConfig();
    config.jobs.store = absl::StrCat("sqlite:", dir_.File("jobs.db"));
    config.jobs.poll_interval = absl::Milliseconds(50);
    config.jobs.lease = absl::Seconds(3);
    return config;
  }
  rpc::ServerConfig TwoIdentityConfig() {
    rpc::ServerConfig config = JobsConfig();
    const std::string tokens = dir_.File("tokens");
    EXPECT_TRUE(
        WriteFileAtomically(tokens, absl::StrCat("alice ", kAliceToken,
                                                 "\nbob ", kBobToken, "\n"))
            .ok());
    config.auth_tokens_file = tokens;
    return config;
  }

  static std::unique_ptr<grpc::ClientContext> Context(
      const char* token = nullptr) {
    auto context = ContextWithTimeout(kEventTimeout);
    if (token != nullptr) {
      context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
    }
    return context;
  }

  // A batch of `n` items: /bytes/{10+i}.
  v1::SubmitRequest Batch(int n) {
    v1::SubmitRequest request;
    for (int i = 0; i < n; ++i) {
      request.mutable_batch_fetch()->add_items()->set_url(
          origin_.Url(absl::StrCat("/bytes/", 10 + i)));
    }
    return request;
  }

  v1::Job Submit(v1::Jobs::Stub& stub, const v1::SubmitRequest& request,
                 const char* token = nullptr) {
    v1::SubmitResponse response;
    grpc::Status status = stub.Submit(Context(token).get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.job();
  }

  // Watches until the stream ends; the events seen.
  std::vector<v1::WatchResponse> WatchAll(v1::Jobs::Stub& stub,
                                          const std::string& id,
                                          int64_t from_seq = 0,
                                          grpc::Status* end = nullptr,
                                          const char* token = nullptr) {
    v1::WatchRequest request;
    request.set_id(id);
    request.set_from_seq(from_seq);
    auto context = Context(token);
    auto reader = stub.Watch(context.get(), request);
    std::vector<v1::WatchResponse> events;
    v1::WatchResponse event;
    while (reader->Read(&event)) events.push_back(event);
    grpc::Status status = reader->Finish();
    if (end != nullptr) *end = status;
    return events;
  }

  v1::Job Get(v1::Jobs::Stub& stub, const std::string& id) {
    absl::StatusOr<v1::Job> job = GetJob(stub, id);
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? *job : v1::Job();
  }

  TempDir dir_;
  Origin origin_;
};

TEST_F(JobsTest, BatchRunsToTheEndAndResultsPageInItemOrder) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitRequest request = Batch(50);
  request.mutable_batch_fetch()->add_items()->set_url(
      origin_.Url("/status/404"));
  const v1::Job job = Submit(*stub, request);
  EXPECT_EQ(job.state(), v1::JOB_STATE_QUEUED);
  EXPECT_EQ(job.kind(), v1::JOB_KIND_BATCH_FETCH);
  EXPECT_EQ(job.counts().total(), 51);
  EXPECT_TRUE(job.id().starts_with("j_")) << job.id();

  grpc::Status end;
  std::vector<v1::WatchResponse> events = WatchAll(*stub, job.id(), 0, &end);
  ASSERT_TRUE(end.ok()) << end.error_message();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().state(), v1::JOB_STATE_SUCCEEDED);
  for (size_t i = 1; i < events.size(); ++i) {
    EXPECT_GT(events[i].seq(), events[i - 1].seq());
  }

  const v1::Job done = Get(*stub, job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(done.counts().done(), 51);
  EXPECT_EQ(done.counts().failed(), 1);
  int64_t bytes = 0;
  for (int i = 0; i < 50; ++i) bytes += 10 + i;
  bytes += std::string("status 404").size();
  EXPECT_EQ(done.counts().bytes(), bytes);
  EXPECT_TRUE(done.has_finished_at());
  EXPECT_GT(done.expires_at().seconds(), done.finished_at().seconds());
  EXPECT_EQ(done.attempts(), 1);

  int pages = 0;
  std::vector<v1::JobResult> results = AllResults(*stub, job.id(), 20, &pages);
  ASSERT_EQ(results.size(), 51u);
  EXPECT_EQ(pages, 3);
  for (int i = 0; i < 51; ++i) {
    EXPECT_EQ(results[i].index(), i);
    ASSERT_TRUE(results[i].has_fetch());
    EXPECT_EQ(results[i].fetch().index(), static_cast<uint32_t>(i));
  }
  EXPECT_EQ(results[7].fetch().body(), std::string(17, 'x'));
  EXPECT_EQ(results[50].fetch().http_status(), 404);
  EXPECT_EQ(results[50].fetch().error().code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(JobsTest, ResultsPagesAreCutByBytesButHoldAtLeastOne) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitRequest request;
  for (int i = 0; i < 4; ++i) {
    request.mutable_batch_fetch()->add_items()->set_url(
        origin_.Url("/bytes/5000"));
  }
  const v1::Job job = Submit(*stub, request);
  WatchAll(*stub, job.id());
  v1::ListResultsRequest list;
  list.set_id(job.id());
  list.set_max_bytes(1000);  // less than one result
  v1::ListResultsResponse response;
  ASSERT_TRUE(stub->ListResults(Context().get(), list, &response).ok());
  ASSERT_EQ(response.results_size(), 1);
  EXPECT_EQ(response.results(0).index(), 0);
  EXPECT_FALSE(response.next_page_token().empty());
  list.set_max_bytes(12000);  // two results
  list.set_page_token(response.next_page_token());
  ASSERT_TRUE(stub->ListResults(Context().get(), list, &response).ok());
  ASSERT_EQ(response.results_size(), 2);
  EXPECT_EQ(response.results(0).index(), 1);
  EXPECT_EQ(response.results(1).index(), 2);
  EXPECT_EQ(response.state(), v1::JOB_STATE_SUCCEEDED);

  list.set_page_token("not-a-token");
  grpc::Status bad = stub->ListResults(Context().get(), list, &response);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("page_token"));
}

TEST_F(JobsTest, IdempotencyKeyGivesBackTheSameJobOrAlreadyExists) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitRequest request = Batch(3);
  request.set_idempotency_key("order-42");
  v1::SubmitResponse first, second, other;
  ASSERT_TRUE(stub->Submit(Context().get(), request, &first).ok());
  ASSERT_TRUE(stub->Submit(Context().get(), request, &second).ok());
  EXPECT_TRUE(first.created());
  EXPECT_FALSE(second.created());
  EXPECT_EQ(first.job().id(), second.job().id());

  v1::SubmitRequest changed = Batch(4);
  changed.set_idempotency_key("order-42");
  grpc::Status conflict = stub->Submit(Context().get(), changed, &other);
  EXPECT_EQ(conflict.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(conflict.error_message(), HasSubstr("order-42"));

  request.set_idempotency_key(std::string(257, 'k'));
  grpc::Status too_long = stub->Submit(Context().get(), request, &other);
  EXPECT_EQ(too_long.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_long.error_message(), HasSubstr("idempotency_key"));
}

TEST_F(JobsTest, AnotherIdentitysJobIsNotFound) {
  TestServer server(TwoIdentityConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  const v1::Job job = Submit(*stub, Batch(2), kAliceToken);
  ASSERT_FALSE(job.id().empty());

  v1::GetRequest get;
  get.set_id(job.id());
  v1::GetResponse got;
  EXPECT_TRUE(stub->Get(Context(kAliceToken).get(), get, &got).ok());
  EXPECT_EQ(stub->Get(Context(kBobToken).get(), get, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::CancelRequest cancel;
  cancel.set_id(job.id());
  v1::CancelResponse cancelled;
  EXPECT_EQ(
      stub->Cancel(Context(kBobToken).get(), cancel, &cancelled).error_code(),
      grpc::StatusCode::NOT_FOUND);
  v1::ListResultsRequest results;
  results.set_id(job.id());
  v1::ListResultsResponse listed;
  EXPECT_EQ(stub->ListResults(Context(kBobToken).get(), results, &listed)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::DeleteRequest del;
  del.set_id(job.id());
  v1::DeleteResponse deleted;
  EXPECT_EQ(stub->Delete(Context(kBobToken).get(), del, &deleted).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::Status watch_end;
  WatchAll(*stub, job.id(), 0, &watch_end, kBobToken);
  EXPECT_EQ(watch_end.error_code(), grpc::StatusCode::NOT_FOUND);

  v1::ListResponse bobs, alices;
  ASSERT_TRUE(
      stub->List(Context(kBobToken).get(), v1::ListRequest(), &bobs).ok());
  EXPECT_EQ(bobs.jobs_size(), 0);
  ASSERT_TRUE(
      stub->List(Context(kAliceToken).get(), v1::ListRequest(), &alices).ok());
  ASSERT_EQ(alices.jobs_size(), 1);
  EXPECT_EQ(alices.jobs(0).id(), job.id());
}

TEST_F(JobsTest, QueueFullIsResourceExhausted) {
  rpc::ServerConfig config = JobsConfig();
  config.jobs.max_jobs_queued = 2;
  config.jobs.max_jobs_running = 1;
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  // Two slow jobs stay QUEUED or RUNNING while the third is refused.
  v1::SubmitRequest slow;
  slow.mutable_batch_fetch()->add_items()->set_url(origin_.Url("/delay/20000"));
  const v1::Job a = Submit(*stub, slow);
  const v1::Job b = Submit(*stub, slow);
  v1::SubmitResponse refused;
  grpc::Status full = stub->Submit(Context().get(), slow, &refused);
  EXPECT_EQ(full.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(full.error_message(), HasSubstr("--max_jobs_queued"));
  // A cancelled job no longer counts.
  v1::CancelRequest cancel;
  cancel.set_id(a.id());
  v1::CancelResponse cancelled;
  ASSERT_TRUE(stub->Cancel(Context().get(), cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.job().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(stub->Submit(Context().get(), slow, &refused).ok());
  cancel.set_id(b.id());
  ASSERT_TRUE(stub->Cancel(Context().get(), cancel, &cancelled).ok());
  cancel.set_id(refused.job().id());
  ASSERT_TRUE(stub->Cancel(Context().get(), cancel, &cancelled).ok());
}

TEST_F(JobsTest, LateWatcherGetsTheCurrentStateAndFromSeqResumes) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  const v1::Job job = Submit(*stub, Batch(30));
  std::vector<v1::WatchResponse> live = WatchAll(*stub, job.id());
  ASSERT_FALSE(live.empty());
  const v1::Job done = Get(*stub, job.id());
  ASSERT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED);

  // Late: one event, the current (terminal) state, then the end.
  grpc::Status end;
  std::vector<v1::WatchResponse> late = WatchAll(*stub, job.id(), 0, &end);
  ASSERT_TRUE(end.ok());
  ASSERT_EQ(late.size(), 1u);
  EXPECT_EQ(late[0].state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(late[0].seq(), done.seq());
  EXPECT_EQ(late[0].counts().done(), 30);

  // From seq 1 (the submit): every later event, in order, to the end.
  std::vector<v1::WatchResponse> replay = WatchAll(*stub, job.id(), 1, &end);
  ASSERT_TRUE(end.ok());
  ASSERT_FALSE(replay.empty());
  EXPECT_EQ(replay.front().seq(), 2);
  EXPECT_EQ(replay.back().seq(), done.seq());
  EXPECT_EQ(replay.back().state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(static_cast<int64_t>(replay.size()), done.seq() - 1);
  EXPECT_EQ(replay.front().state(), v1::JOB_STATE_RUNNING);
}

TEST_F(JobsTest, CancelStopsTheFetchesAndTheWatch) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitRequest slow;
  slow.mutable_batch_fetch()->set_max_concurrency(2);
  for (int i = 0; i < 20; ++i) {
    slow.mutable_batch_fetch()->add_items()->set_url(
        origin_.Url("/delay/20000"));
  }
  const v1::Job job = Submit(*stub, slow);
  ASSERT_TRUE(WaitFor([&] { return origin_.in_progress() == 2; }, kEventTimeout,
                      "two items in flight"));
  v1::CancelRequest cancel;
  cancel.set_id(job.id());
  v1::CancelResponse cancelled;
  ASSERT_TRUE(stub->Cancel(Context().get(), cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.job().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(cancelled.job().error().code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return origin_.in_progress() == 0; }, kEventTimeout,
                      "the transfers stopped"));
  grpc::Status end;
  std::vector<v1::WatchResponse> events = WatchAll(*stub, job.id(), 0, &end);
  ASSERT_TRUE(end.ok());
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].state(), v1::JOB_STATE_CANCELLED);
  // Cancelling a terminal job returns it unchanged.
  ASSERT_TRUE(stub->Cancel(Context().get(), cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.job().state(), v1::JOB_STATE_CANCELLED);
  EXPECT_EQ(origin_.requests(), 2);
}

TEST_F(JobsTest, DeleteAndTtlMakeTheJobNotFound) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  const v1::Job deleted = Submit(*stub, Batch(1));
  v1::DeleteRequest del;
  del.set_id(deleted.id());
  v1::DeleteResponse del_response;
  ASSERT_TRUE(stub->Delete(Context().get(), del, &del_response).ok());
  v1::GetRequest get;
  get.set_id(deleted.id());
  v1::GetResponse got;
  EXPECT_EQ(stub->Get(Context().get(), get, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);
  get.set_id("j_doesnotexist");
  EXPECT_EQ(stub->Get(Context().get(), get, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);

  v1::SubmitRequest short_lived = Batch(1);
  short_lived.mutable_ttl()->set_seconds(1);
  const v1::Job job = Submit(*stub, short_lived);
  WatchAll(*stub, job.id());
  get.set_id(job.id());
  EXPECT_TRUE(WaitFor(
      [&] {
        return stub->Get(Context().get(), get, &got).error_code() ==
               grpc::StatusCode::NOT_FOUND;
      },
      kEventTimeout, "the job expired"));

  v1::SubmitRequest too_long = Batch(1);
  too_long.mutable_ttl()->set_seconds(30 * 24 * 3600);
  v1::SubmitResponse refused;
  grpc::Status status = stub->Submit(Context().get(), too_long, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_job_ttl"));
}

TEST_F(JobsTest, BadWorkIsRefusedAtSubmitNamingTheField) {
  rpc::ServerConfig config = JobsConfig();
  config.jobs.max_job_items = 5;
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitResponse response;
  grpc::Status none =
      stub->Submit(Context().get(), v1::SubmitRequest(), &response);
  EXPECT_EQ(none.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(none.error_message(), HasSubstr("work"));
  grpc::Status big = stub->Submit(Context().get(), Batch(6), &response);
  EXPECT_EQ(big.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(big.error_message(), HasSubstr("--max_job_items"));
  v1::SubmitRequest bad = Batch(1);
  bad.mutable_batch_fetch()->set_max_concurrency(-1);
  grpc::Status invalid = stub->Submit(Context().get(), bad, &response);
  EXPECT_EQ(invalid.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(invalid.error_message(), HasSubstr("batch_fetch."));
  v1::SubmitRequest huge;
  huge.mutable_compute()->mutable_count_primes()->set_limit(
      int64_t{1} << 62);  // past --max_compute_n
  grpc::Status too_big = stub->Submit(Context().get(), huge, &response);
  EXPECT_EQ(too_big.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_big.error_message(), HasSubstr("compute."));
  v1::ListResponse listed;
  ASSERT_TRUE(stub->List(Context().get(), v1::ListRequest(), &listed).ok());
  EXPECT_EQ(listed.jobs_size(), 0);  // nothing half-written
}

TEST_F(JobsTest, WalkJobStoresEveryPageInOrder) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitRequest request;
  v1::FetchPagesRequest* walk = request.mutable_fetch_pages();
  walk->mutable_first()->set_url(origin_.Url("/pn/walkjob?last=7"));
  walk->mutable_page_number()->set_param("page");
  walk->set_items_pointer("/items");
  const v1::Job job = Submit(*stub, request);
  EXPECT_EQ(job.kind(), v1::JOB_KIND_FETCH_PAGES);
  WatchAll(*stub, job.id());
  const v1::Job done = Get(*stub, job.id());
  EXPECT_EQ(done.state(), v1::JOB_STATE_SUCCEEDED) << done.error().message();
  EXPECT_EQ(done.counts().total(), 7);
  std::vector<v1::JobResult> results = AllResults(*stub, job.id(), 3);
  ASSERT_EQ(results.size(), 7u);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(results[i].index(), i);
    ASSERT_TRUE(results[i].has_page());
    EXPECT_EQ(results[i].page().index(), i);
    EXPECT_FALSE(results[i].page().resume_token().empty());
  }
}

TEST_F(JobsTest, ComputeJobStoresItsValue) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitRequest request;
  request.mutable_compute()->mutable_count_primes()->set_limit(100);
  const v1::Job job = Submit(*stub, request);
  EXPECT_EQ(job.kind(), v1::JOB_KIND_COMPUTE);
  WatchAll(*stub, job.id());
  EXPECT_EQ(Get(*stub, job.id()).state(), v1::JOB_STATE_SUCCEEDED);
  std::vector<v1::JobResult> results = AllResults(*stub, job.id(), 10);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].compute().count_primes(), 25);
}

TEST_F(JobsTest, ListFiltersByStateAndPages) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  std::set<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    const v1::Job job = Submit(*stub, Batch(1));
    WatchAll(*stub, job.id());
    ids.insert(job.id());
  }
  v1::ListRequest list;
  list.set_page_size(2);
  list.set_state(v1::JOB_STATE_SUCCEEDED);
  std::set<std::string> seen;
  int pages = 0;
  for (;; ++pages) {
    v1::ListResponse response;
    ASSERT_TRUE(stub->List(Context().get(), list, &response).ok());
    for (const auto& job : response.jobs()) seen.insert(job.id());
    if (response.next_page_token().empty()) break;
    list.set_page_token(response.next_page_token());
    ASSERT_LT(pages, 10);
  }
  EXPECT_EQ(seen, ids);
  list.set_state(v1::JOB_STATE_RUNNING);
  list.clear_page_token();
  v1::ListResponse running;
  ASSERT_TRUE(stub->List(Context().get(), list, &running).ok());
  EXPECT_EQ(running.jobs_size(), 0);
}

TEST_F(JobsTest, HealthServesJobs) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  using grpc::health::v1::HealthCheckResponse;
  for (const char* name :
       {"", "fetchd.v1.Fetch", "fetchd.v1.Compute", "fetchd.v1.Jobs"}) {
    grpc::Status status;
    EXPECT_EQ(CheckHealth(channel, name, &status), HealthCheckResponse::SERVING)
        << "'" << name << "': " << status.error_message();
  }
  // The drain turns Jobs NOT_SERVING too, with every other service.
  server.server().StartDraining();
  for (const char* name :
       {"", "fetchd.v1.Fetch", "fetchd.v1.Compute", "fetchd.v1.Jobs"}) {
    EXPECT_EQ(CheckHealth(channel, name), HealthCheckResponse::NOT_SERVING)
        << "'" << name << "'";
  }
}

TEST_F(JobsTest, MetricsCountJobsAndResults) {
  rpc::ServerConfig config = JobsConfig();
  config.metrics_listen = "127.0.0.1:0";
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  const v1::Job job = Submit(*stub, Batch(12));
  WatchAll(*stub, job.id());
  const int port = server.server().metrics_port();
  EXPECT_EQ(*ScrapeSample(port, "fetchd_jobs_finished_total"), 1);
  EXPECT_EQ(*ScrapeSample(port, "fetchd_job_results_total"), 12);
  EXPECT_EQ(*ScrapeSample(port, "fetchd_jobs_running"), 0);
  EXPECT_EQ(*ScrapeSample(port, "fetchd_job_store_up"), 1);
}

// The webhook as a receiver sees it: signed (checked here the way a
// receiver would), retried after a failure, its delivery shown in Get.
TEST_F(JobsTest, WebhookIsSignedRetriedAndShownInGet) {
  constexpr char kSecret[] = "whsec-0123456789abcdef";
  std::atomic<int> bad_signatures{0};
  WebhookReceiver receiver(
      [&](const WebhookReceiver::Request& request, int index) {
        auto signature = request.headers.find("x-fetchd-signature");
        if (signature == request.headers.end() ||
            !jobs::VerifyWebhookSignature(kSecret, signature->second,
                                          request.body, absl::Now())
                 .ok()) {
          ++bad_signatures;
        }
        return index == 0 ? 500 : 204;  // the first attempt fails
      });
  ASSERT_TRUE(receiver.ok());
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitRequest request = Batch(3);
  request.mutable_webhook()->set_url(receiver.Url("/hooks/fetchd"));
  request.mutable_webhook()->set_secret(kSecret);
  const v1::Job job = Submit(*stub, request);
  WatchAll(*stub, job.id());
  EXPECT_TRUE(WaitFor(
      [&] {
        return Get(*stub, job.id()).webhook().state() ==
               v1::WEBHOOK_DELIVERY_STATE_DELIVERED;
      },
      kEventTimeout, "the webhook delivered"));
  const v1::Job done = Get(*stub, job.id());
  EXPECT_EQ(done.webhook().attempts(), 2);
  EXPECT_EQ(done.webhook().event(), "job.completed");
  EXPECT_EQ(done.webhook().url(), receiver.Url("/hooks/fetchd"));
  std::vector<WebhookReceiver::Request> got = receiver.requests();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(bad_signatures.load(), 0);
  for (const auto& post : got) {
    EXPECT_EQ(post.method, "POST");
    EXPECT_EQ(post.path, "/hooks/fetchd");
    EXPECT_EQ(post.headers.at("x-fetchd-event"), "job.completed");
    EXPECT_THAT(post.body, HasSubstr(R"("type":"job.completed")"));
    EXPECT_THAT(post.body, HasSubstr(job.id()));
    EXPECT_THAT(post.body, ::testing::Not(HasSubstr(kSecret)));
  }
  // A replayed POST with its old signature is refused by a receiver that
  // checks the timestamp.
  EXPECT_FALSE(jobs::VerifyWebhookSignature(
                   kSecret, got[0].headers.at("x-fetchd-signature"),
                   got[0].body, absl::Now() + absl::Minutes(10))
                   .ok());
}

TEST_F(JobsTest, BadWebhookIsRefusedAtSubmit) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitRequest request = Batch(1);
  request.mutable_webhook()->set_url("http://127.0.0.1:1/hook");
  request.mutable_webhook()->set_secret("short");
  v1::SubmitResponse response;
  grpc::Status status = stub->Submit(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("webhook.secret"));
  request.mutable_webhook()->set_secret_id("crm");
  status = stub->Submit(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  request.mutable_webhook()->set_url("ftp://127.0.0.1/hook");
  request.mutable_webhook()->set_secret("0123456789abcdef0123");
  status = stub->Submit(Context().get(), request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("webhook.url"));
}

// While a job runs, the end of what exists so far still has a token: the
// caller polls with it and gets the rest, nothing twice.
TEST_F(JobsTest, ListResultsWhileRunningHandsATokenToPollWith) {
  TestServer server(JobsConfig());
  ASSERT_TRUE(server.ok());
  auto stub = v1::Jobs::NewStub(server.NewChannel());
  v1::SubmitRequest request;
  request.mutable_batch_fetch()->set_max_concurrency(1);
  for (int i = 0; i < 6; ++i) {
    request.mutable_batch_fetch()->add_items()->set_url(
        origin_.Url(i < 3 ? "/bytes/1" : "/delay/300"));
  }
  const v1::Job job = Submit(*stub, request);
  v1::ListResultsRequest list;
  list.set_id(job.id());
  v1::ListResultsResponse response;
  ASSERT_TRUE(stub->ListResults(Context().get(), list, &response).ok());
  EXPECT_NE(response.state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_FALSE(response.next_page_token().empty());  // even with 0 results
  std::vector<int64_t> seen;
  for (const auto& result : response.results()) seen.push_back(result.index());
  ASSERT_TRUE(WaitFor(
      [&] {
        list.set_page_token(response.next_page_token());
        if (!stub->ListResults(Context().get(), list, &response).ok()) {
          return true;  // fails below
        }
        for (const auto& result : response.results()) {
          seen.push_back(result.index());
        }
        return response.next_page_token().empty();
      },
      kEventTimeout, "the last page"));
  EXPECT_EQ(response.state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_EQ(seen, (std::vector<int64_t>{0, 1, 2, 3, 4, 5}));
}

}  // namespace
}  // namespace fetchd::testing
