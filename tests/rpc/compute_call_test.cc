// Compute.Run through a real fetchd on a loopback port.
#include "server/rpc/compute_call.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/escaping.h"
#include "fetchd/v1/compute.grpc.pb.h"
#include "tests/support/test_server.h"

namespace fetchd::rpc {
namespace {

using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::PendingCall;
using ::fetchd::testing::SqrtSumRequest;
using ::fetchd::testing::TestConfig;
using ::fetchd::testing::TestServer;
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

constexpr int64_t kForever = ::fetchd::testing::kEndlessN;

class ComputeCallTest : public ::testing::Test {
 protected:
  explicit ComputeCallTest(rpc::ServerConfig config = TestConfig())
      : server_(config) {}
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    stub_ = v1::Compute::NewStub(server_.NewChannel());
  }
  grpc::Status Run(const v1::RunRequest& request, v1::RunResponse* response,
                   absl::Duration timeout = kEventTimeout) {
    return stub_->Run(ContextWithTimeout(timeout).get(), request, response);
  }
  bool Idle() {
    auto s = server_.server().worker_stats();
    return s.running == 0 && s.queued == 0;
  }

  TestServer server_;
  std::unique_ptr<v1::Compute::Stub> stub_;
};

TEST_F(ComputeCallTest, SqrtSumReturnsValueAndTimings) {
  v1::RunResponse response;
  const absl::Time before = absl::Now();
  grpc::Status status = Run(SqrtSumRequest(1'000'000), &response);
  const absl::Duration elapsed = absl::Now() - before;
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(response.value_case(), v1::RunResponse::kSqrtSum);
  EXPECT_NEAR(response.sqrt_sum(), 666666166.4588221, 1e-5);
  ASSERT_TRUE(response.has_run_time());
  ASSERT_TRUE(response.has_queue_wait());
  EXPECT_TRUE(response.run_time().seconds() > 0 ||
              response.run_time().nanos() > 0);
  // Both happened inside the RPC, as the client timed it.
  auto duration = [](const google::protobuf::Duration& d) {
    return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  };
  EXPECT_LE(duration(response.queue_wait()) + duration(response.run_time()),
            elapsed);
}

TEST_F(ComputeCallTest, Sha256ChainAndCountPrimes) {
  v1::RunRequest request;
  request.mutable_sha256_chain()->set_data("abc");
  request.mutable_sha256_chain()->set_rounds(2);
  v1::RunResponse response;
  ASSERT_TRUE(Run(request, &response).ok());
  EXPECT_EQ(absl::BytesToHexString(response.sha256_chain()),
            "4f8b42c22dd3729b519ba6f68d2da7cc5b2d606d05daed5ad5128cc03e6c6358");

  request.mutable_count_primes()->set_limit(1'000'000);
  ASSERT_TRUE(Run(request, &response).ok());
  ASSERT_EQ(response.value_case(), v1::RunResponse::kCountPrimes);
  EXPECT_EQ(response.count_primes(), 78498);
}

TEST_F(ComputeCallTest, InvalidArgumentsNameTheFieldAndServingContinues) {
  struct Case {
    v1::RunRequest request;
    const char* expect;
  };
  std::vector<Case> cases;
  cases.push_back({v1::RunRequest(), "kernel is not set"});
  cases.push_back({SqrtSumRequest(-1), "sqrt_sum.n"});
  cases.push_back({SqrtSumRequest(1'000'000'000'000'001), "--max_compute_n"});
  v1::RunRequest r;
  r.mutable_sha256_chain()->set_rounds(0);
  cases.push_back({r, "sha256_chain.rounds"});
  r.mutable_sha256_chain()->set_rounds(1);
  r.mutable_sha256_chain()->set_data(std::string((1 << 20) + 1, 'x'));
  cases.push_back({r, "--max_compute_data_bytes"});
  r.mutable_count_primes()->set_limit(-7);
  cases.push_back({r, "count_primes.limit"});
  for (const Case& c : cases) {
    v1::RunResponse response;
    grpc::Status status = Run(c.request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.expect;
    EXPECT_THAT(status.error_message(), HasSubstr(c.expect));
  }
  v1::RunResponse response;
  EXPECT_TRUE(Run(SqrtSumRequest(10), &response).ok());
  EXPECT_TRUE(WaitFor([&] { return Idle(); }, kEventTimeout, "an idle pool"));
}

TEST_F(ComputeCallTest, RequestAboveMaxRequestBytesIsResourceExhausted) {
  v1::RunRequest request;
  request.mutable_sha256_chain()->set_data(std::string(5 << 20, 'x'));
  request.mutable_sha256_chain()->set_rounds(1);
  v1::RunResponse response;
  grpc::Status status = Run(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(Run(SqrtSumRequest(10), &response).ok());
}

TEST_F(ComputeCallTest, DeadlineMidKernelIsDeadlineExceededAndFreesWorker) {
  v1::RunResponse response;
  grpc::Status status =
      Run(SqrtSumRequest(kForever), &response, absl::Milliseconds(300));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The kernel would run for hours: the worker frees only if it stopped.
  EXPECT_TRUE(
      WaitFor([&] { return Idle(); }, absl::Seconds(2), "the worker to stop"));
}

TEST_F(ComputeCallTest, ManyConcurrentCallsAllAnswered) {
  constexpr int kCalls = 64;
  std::vector<std::unique_ptr<PendingCall>> calls;
  for (int i = 0; i < kCalls; ++i) {
    calls.push_back(
        std::make_unique<PendingCall>(stub_.get(), SqrtSumRequest(i)));
  }
  for (int i = 0; i < kCalls; ++i) {
    ASSERT_TRUE(calls[i]->Wait().ok()) << i;
    double want = 0;
    for (int k = 0; k < i; ++k) want += std::sqrt(k);
    EXPECT_NEAR(calls[i]->response().sqrt_sum(), want, 1e-9 * (want + 1));
  }
}

// One worker and no queue: the pool is easy to fill.
class SingleWorkerTest : public ComputeCallTest {
 protected:
  static rpc::ServerConfig Config() {
    rpc::ServerConfig c = TestConfig();
    c.workers = 1;
    c.max_queued_tasks = 1;
    return c;
  }
  SingleWorkerTest() : ComputeCallTest(Config()) {}
};

TEST_F(SingleWorkerTest, ClientCancelFreesTheWorkerForTheNextCall) {
  PendingCall long_call(stub_.get(), SqrtSumRequest(kForever));
  ASSERT_TRUE(
      WaitFor([&] { return server_.server().worker_stats().running == 1; },
              kEventTimeout, "the long kernel to start"));
  long_call.Cancel();
  EXPECT_EQ(long_call.Wait().error_code(), grpc::StatusCode::CANCELLED);
  // The kernel would run for hours: the worker frees only if it stopped.
  EXPECT_TRUE(
      WaitFor([&] { return Idle(); }, absl::Seconds(2), "the worker to stop"));
  // The only worker is free: a short call runs at once.
  v1::RunResponse response;
  grpc::Status status = Run(SqrtSumRequest(100), &response, absl::Seconds(5));
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_LT(response.queue_wait().seconds(), 1);
}

TEST_F(SingleWorkerTest, FullQueueIsResourceExhaustedNamingTheLimit) {
  PendingCall running(stub_.get(), SqrtSumRequest(kForever));
  ASSERT_TRUE(
      WaitFor([&] { return server_.server().worker_stats().running == 1; },
              kEventTimeout, "the first kernel to start"));
  PendingCall queued(stub_.get(), SqrtSumRequest(kForever));
  ASSERT_TRUE(
      WaitFor([&] { return server_.server().worker_stats().queued == 1; },
              kEventTimeout, "the second kernel to queue"));
  v1::RunResponse response;
  grpc::Status status = Run(SqrtSumRequest(1), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_queued_tasks=1"));
  running.Cancel();
  queued.Cancel();
  EXPECT_EQ(running.Wait().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(queued.Wait().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(WaitFor([&] { return Idle(); }, kEventTimeout, "an idle pool"));
  EXPECT_TRUE(Run(SqrtSumRequest(1), &response).ok());
}

// #16: --max_compute_time ends a call with no client deadline, and every
// kernel at its size cap stops promptly when it does.
class MaxComputeTimeTest : public ComputeCallTest {
 protected:
  static ServerConfig Config() {
    ServerConfig c = TestConfig();
    c.kernel_limits = compute::KernelLimits{};  // the default caps
    c.kernel_limits.max_time = absl::Milliseconds(200);
    return c;
  }
  MaxComputeTimeTest() : ComputeCallTest(Config()) {}
};

TEST_F(MaxComputeTimeTest, KernelsAtTheirCapsEndAtTheServerDeadline) {
  const compute::KernelLimits caps;
  std::vector<v1::RunRequest> requests(3);
  requests[0].mutable_sqrt_sum()->set_n(caps.max_n);
  requests[1].mutable_count_primes()->set_limit(caps.max_n);
  requests[2].mutable_sha256_chain()->set_data(
      std::string(caps.max_data_bytes, 'x'));
  requests[2].mutable_sha256_chain()->set_rounds(caps.max_rounds);
  for (const v1::RunRequest& request : requests) {
    // No deadline from the client: only the server's can end it.
    grpc::ClientContext context;
    v1::RunResponse response;
    const absl::Time start = absl::Now();
    grpc::Status status = stub_->Run(&context, request, &response);
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
        << request.ShortDebugString().substr(0, 80);
    EXPECT_THAT(status.error_message(), HasSubstr("--max_compute_time=200ms"));
    EXPECT_GE(took, absl::Milliseconds(200));
    EXPECT_LT(took, absl::Seconds(3));  // the kernel polled its token
    EXPECT_TRUE(
        WaitFor([&] { return Idle(); }, kEventTimeout, "the worker to stop"));
  }
}

TEST_F(MaxComputeTimeTest, ShortWorkAndTheCallersEarlierDeadlineAreUnchanged) {
  v1::RunResponse response;
  EXPECT_TRUE(Run(SqrtSumRequest(1000), &response).ok());
  v1::RunRequest big;
  big.mutable_sha256_chain()->set_data("x");
  big.mutable_sha256_chain()->set_rounds(100'000'000);
  auto context = ContextWithTimeout(absl::Milliseconds(50));
  grpc::Status status = stub_->Run(context.get(), big, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_THAT(status.error_message(), ::testing::Not(HasSubstr("--max")));
}

TEST_F(MaxComputeTimeTest, RoundsPastTheCapAreRefusedUpFront) {
  v1::RunRequest request;
  request.mutable_sha256_chain()->set_data("x");
  request.mutable_sha256_chain()->set_rounds(10'000'000'000);  // the issue's
  v1::RunResponse response;
  grpc::Status status = Run(request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("sha256_chain.rounds"));
  EXPECT_THAT(status.error_message(), HasSubstr("--max_compute_rounds"));
}

}  // namespace
}  // namespace fetchd::rpc
