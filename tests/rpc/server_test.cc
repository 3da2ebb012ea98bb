// The server as a whole: standard services, start-up errors, shutdown.
#include <gmock/gmock.h>
#include <google/protobuf/descriptor.pb.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <thread>

#include "fetchd/v1/compute.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.pb.h"
#include "server/rpc/rpc.h"
#include "tests/support/test_server.h"

namespace fetchd::rpc {
namespace {

namespace reflection = ::grpc::reflection::v1alpha;

using ::fetchd::testing::CheckHealth;
using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::SqrtSumRequest;
using ::fetchd::testing::TestConfig;
using ::fetchd::testing::TestServer;
using ::fetchd::testing::WaitFor;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::Contains;
using ::testing::HasSubstr;

TEST(ServerTest, HealthIsServingWhileUp) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  grpc::Status status;
  EXPECT_EQ(CheckHealth(channel, &status), HealthCheckResponse::SERVING);
  EXPECT_TRUE(status.ok()) << status.error_message();
}

// Every service answers health checks by its own name (gRPC's health
// protocol); an unknown name is NOT_FOUND; a drain turns them all
// NOT_SERVING, and a Watch sees it.
TEST(ServerTest, HealthAnswersPerServiceAndDrainTurnsAllNotServing) {
  TestServer server;  // no job store: no Jobs service
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  for (const char* name : {"", "fetchd.v1.Fetch", "fetchd.v1.Compute"}) {
    grpc::Status status;
    EXPECT_EQ(CheckHealth(channel, name, &status), HealthCheckResponse::SERVING)
        << "'" << name << "': " << status.error_message();
  }
  for (const char* name : {"fetchd.v1.Jobs", "fetchd.v1.Nope", "Fetch"}) {
    grpc::Status status;
    CheckHealth(channel, name, &status);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << name;
  }

  // A Watch on Fetch, as a client with healthCheckConfig holds one.
  auto health = ::grpc::health::v1::Health::NewStub(channel);
  auto watch_context = ContextWithTimeout(kEventTimeout);
  ::grpc::health::v1::HealthCheckRequest watch_request;
  watch_request.set_service("fetchd.v1.Fetch");
  auto watch = health->Watch(watch_context.get(), watch_request);
  HealthCheckResponse seen;
  ASSERT_TRUE(watch->Read(&seen));
  EXPECT_EQ(seen.status(), HealthCheckResponse::SERVING);

  server.server().StartDraining();
  for (const char* name : {"", "fetchd.v1.Fetch", "fetchd.v1.Compute"}) {
    EXPECT_EQ(CheckHealth(channel, name), HealthCheckResponse::NOT_SERVING)
        << "'" << name << "'";
  }
  ASSERT_TRUE(watch->Read(&seen));
  EXPECT_EQ(seen.status(), HealthCheckResponse::NOT_SERVING);
  // Still serving RPCs while draining: only the health status changed.
  auto stub = v1::Compute::NewStub(channel);
  v1::RunResponse response;
  EXPECT_TRUE(stub->Run(ContextWithTimeout(kEventTimeout).get(),
                        SqrtSumRequest(10), &response)
                  .ok());
  watch_context->TryCancel();
  (void)watch->Finish();
}

// The reflection stream as grpcurl drives it, one request and one response
// at a time, through a generic stub.
class ReflectionStream {
 public:
  explicit ReflectionStream(std::shared_ptr<grpc::Channel> channel)
      : stub_(std::move(channel)),
        context_(ContextWithTimeout(absl::Seconds(10))) {
    call_ = stub_.PrepareCall(
        context_.get(),
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq_);
    call_->StartCall(this);
    Await();
  }
  ~ReflectionStream() {
    call_->WritesDone(this);
    Await();
    grpc::Status status;
    call_->Finish(&status, this);
    Await();
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }

  bool Ask(const reflection::ServerReflectionRequest& request,
           reflection::ServerReflectionResponse* response) {
    const std::string bytes = request.SerializeAsString();
    grpc::Slice slice(bytes);
    grpc::ByteBuffer out(&slice, 1);
    call_->Write(out, this);
    if (!Await()) return false;
    grpc::ByteBuffer in;
    call_->Read(&in, this);
    if (!Await()) return false;
    std::vector<grpc::Slice> slices;
    if (!in.Dump(&slices).ok()) return false;
    std::string joined;
    for (const auto& s : slices) {
      joined.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
    return response->ParseFromString(joined);
  }

 private:
  bool Await() {
    void* tag;
    bool ok = false;
    return cq_.Next(&tag, &ok) && ok;
  }
  grpc::GenericStub stub_;
  std::unique_ptr<grpc::ClientContext> context_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
};

TEST(ServerTest, ReflectionListsAndDescribesTheServices) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  ReflectionStream stream(server.NewChannel());
  reflection::ServerReflectionRequest request;
  reflection::ServerReflectionResponse response;

  request.set_list_services("");
  ASSERT_TRUE(stream.Ask(request, &response));
  std::vector<std::string> names;
  for (const auto& s : response.list_services_response().service()) {
    names.push_back(s.name());
  }
  EXPECT_THAT(names, Contains("fetchd.v1.Compute"));
  EXPECT_THAT(names, Contains("grpc.health.v1.Health"));

  request.set_file_containing_symbol("fetchd.v1.Compute");
  ASSERT_TRUE(stream.Ask(request, &response));
  ASSERT_GE(response.file_descriptor_response().file_descriptor_proto_size(),
            1);
  google::protobuf::FileDescriptorProto file;
  ASSERT_TRUE(file.ParseFromString(
      response.file_descriptor_response().file_descriptor_proto(0)));
  EXPECT_EQ(file.package(), "fetchd.v1");
  ASSERT_EQ(file.service_size(), 1);
  EXPECT_EQ(file.service(0).method(0).name(), "Run");
}

TEST(ServerTest, PortInUseIsAClearError) {
  TestServer first;
  ASSERT_TRUE(first.ok());
  ServerConfig config = TestConfig();
  config.listen = first.address();
  auto second = Server::Start(config);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr(first.address()));
  // gRPC core's error tree, folded to its gist.
  EXPECT_THAT(second.status().message(),
              HasSubstr("bind: Address already in use"));
  // The server that holds the port is untouched.
  EXPECT_EQ(CheckHealth(first.NewChannel()), HealthCheckResponse::SERVING);
}

TEST(ServerTest, InvalidConfigNamesTheFlag) {
  ServerConfig config = TestConfig();
  config.workers = 0;
  auto server = Server::Start(config);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("--workers"));
  config = TestConfig();
  config.cq_threads = -1;
  EXPECT_THAT(ValidateServerConfig(config).message(),
              HasSubstr("--cq_threads"));
  config = TestConfig();
  config.kernel_limits.max_data_bytes = config.max_request_bytes;
  EXPECT_THAT(ValidateServerConfig(config).message(),
              HasSubstr("--max_compute_data_bytes"));
  config = TestConfig();
  config.kernel_limits.max_n = 2'000'000'000'000'000;
  EXPECT_THAT(ValidateServerConfig(config).message(),
              HasSubstr("--max_compute_n"));
  config = TestConfig();
  config.kernel_limits.max_rounds = 0;
  EXPECT_THAT(ValidateServerConfig(config).message(),
              HasSubstr("--max_compute_rounds"));
  config = TestConfig();
  config.kernel_limits.max_time = absl::Seconds(-1);
  EXPECT_THAT(ValidateServerConfig(config).message(),
              HasSubstr("--max_compute_time"));
  config = TestConfig();
  config.fetch.max_process_time = absl::Seconds(-1);
  EXPECT_THAT(ValidateServerConfig(config).message(),
              HasSubstr("--max_process_time"));
  for (int armed : {0, 4097}) {
    config = TestConfig();
    config.armed_calls_per_method = armed;
    EXPECT_THAT(ValidateServerConfig(config).message(),
                HasSubstr("--armed_calls_per_method"));
  }
  EXPECT_TRUE(ValidateServerConfig(TestConfig()).ok());
}

TEST(ServerTest, GracefulShutdownFinishesAnInFlightCall) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  auto stub = v1::Compute::NewStub(channel);
  // ~0.25 s of work here (a few times that under sanitizers).
  constexpr int64_t kN = 300'000'000;
  grpc::Status status;
  v1::RunResponse response;
  std::jthread call([&] {  // joins on every exit path
    status = stub->Run(ContextWithTimeout(absl::Seconds(60)).get(),
                       SqrtSumRequest(kN), &response);
  });
  ASSERT_TRUE(
      WaitFor([&] { return server.server().worker_stats().running == 1; },
              kEventTimeout, "the kernel to start"));
  server.Shutdown(absl::Seconds(60));
  call.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  // Σ√i ≈ (2/3) n^1.5.
  EXPECT_NEAR(response.sqrt_sum() / (2.0 / 3 * std::pow(kN, 1.5)), 1.0, 1e-6);
  // Health and new calls are refused once shut down.
  grpc::Status after;
  EXPECT_NE(CheckHealth(channel, &after), HealthCheckResponse::SERVING);
  EXPECT_FALSE(after.ok());
}

TEST(ServerTest, ShutdownCancelsCallsStillRunningAfterTheGrace) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  auto stub = v1::Compute::NewStub(server.NewChannel());
  grpc::Status status;
  v1::RunResponse response;
  std::jthread call([&] {  // joins on every exit path
    status = stub->Run(ContextWithTimeout(absl::Seconds(60)).get(),
                       SqrtSumRequest(::fetchd::testing::kEndlessN), &response);
  });
  ASSERT_TRUE(
      WaitFor([&] { return server.server().worker_stats().running == 1; },
              kEventTimeout, "the kernel to start"));
  const absl::Time start = absl::Now();
  server.Shutdown(absl::Milliseconds(100));
  // The kernel runs for hours unless the cancel reached it.
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  call.join();
  EXPECT_FALSE(status.ok());
}

TEST(ServerTest, ShutdownIsIdempotentAndSafeWithoutCalls) {
  TestServer server;
  ASSERT_TRUE(server.ok());
  server.Shutdown(absl::Seconds(1));
  server.Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace fetchd::rpc
