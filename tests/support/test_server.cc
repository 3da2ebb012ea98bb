#include "tests/support/test_server.h"

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "tests/support/loopback_harness.h"

namespace fetchd::testing {

::testing::AssertionResult WaitFor(const std::function<bool()>& condition,
                                   absl::Duration timeout,
                                   const std::string& what) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!condition()) {
    if (absl::Now() >= deadline) {
      return ::testing::AssertionFailure()
             << "timed out after " << absl::FormatDuration(timeout)
             << " waiting for " << what;
    }
    absl::SleepFor(absl::Milliseconds(1));  // polling interval, not a wait
  }
  return ::testing::AssertionSuccess();
}

rpc::ServerConfig TestConfig() {
  rpc::ServerConfig config;
  config.listen = "127.0.0.1:0";
  config.cq_threads = 2;
  config.workers = 2;
  config.max_queued_tasks = 64;
  // Lets tests run kernels that only a stop ends (1e13 terms: hours).
  config.kernel_limits.max_n = 1'000'000'000'000'000;
  // The test origin is on loopback: open the guard, and keep every
  // connection on loopback whatever it says (the traffic rule).
  config.fetch.address_guard.allow_private_networks = true;
  config.fetch.wrap_address_policy = [](fetch::AddressPolicy guard) {
    return LoopbackOnly(std::move(guard));
  };
  return config;
}

TestServer::TestServer(rpc::ServerConfig config) {
  auto server = rpc::Server::Start(std::move(config));
  EXPECT_TRUE(server.ok()) << server.status();
  if (server.ok()) server_ = *std::move(server);
}

std::string TestServer::address() const {
  return absl::StrCat("127.0.0.1:", server_->port());
}

std::shared_ptr<grpc::Channel> TestServer::NewChannel() const {
  return grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
}

v1::RunRequest SqrtSumRequest(int64_t n) {
  v1::RunRequest request;
  request.mutable_sqrt_sum()->set_n(n);
  return request;
}

v1::StreamBatchFetchRequest AsStream(const v1::BatchFetchRequest& request) {
  v1::StreamBatchFetchRequest stream;
  stream.ParseFromString(request.SerializeAsString());
  return stream;
}

std::unique_ptr<grpc::ClientContext> ContextWithTimeout(
    absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

grpc::health::v1::HealthCheckResponse::ServingStatus CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, grpc::Status* status) {
  return CheckHealth(channel, "", status);
}

grpc::health::v1::HealthCheckResponse::ServingStatus CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
    grpc::Status* status) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status result = grpc::health::v1::Health::NewStub(channel)->Check(
      ContextWithTimeout(absl::Seconds(5)).get(), request, &response);
  if (status != nullptr) *status = result;
  return result.ok() ? response.status()
                     : grpc::health::v1::HealthCheckResponse::UNKNOWN;
}

PendingCall::PendingCall(v1::Compute::Stub* stub, v1::RunRequest request,
                         Options options)
    : thread_([this, stub, request = std::move(request), options] {
        do {
          auto context = ContextWithTimeout(options.timeout);
          {
            absl::MutexLock lock(&mu_);
            if (cancelled_) {
              status_ = grpc::Status(grpc::StatusCode::CANCELLED,
                                     "cancelled between attempts");
              return;
            }
            attempt_ = context.get();
          }
          response_.Clear();
          status_ = stub->Run(context.get(), request, &response_);
          absl::MutexLock lock(&mu_);
          attempt_ = nullptr;
        } while (options.retry_while_exhausted &&
                 status_.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
      }) {}

PendingCall::~PendingCall() {
  if (thread_.joinable()) thread_.join();
}

void PendingCall::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  // A context cancelled before its call starts cancels the call at start.
  if (attempt_ != nullptr) attempt_->TryCancel();
}

const grpc::Status& PendingCall::Wait() {
  if (thread_.joinable()) thread_.join();
  return status_;
}

}  // namespace fetchd::testing
