#include "client/client.h"

#include <grpcpp/grpcpp.h>

#include <thread>

#include "absl/synchronization/notification.h"

namespace fetchd::client {
namespace {

absl::Status ToAbslStatus(const grpc::Status& status) {
  // grpc::StatusCode and absl::StatusCode share the canonical code values.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

// The client's own service config (DNS supplies none). gRPC retries an
// attempt only while it has received nothing from the server.
constexpr char kServiceConfigRoundRobin[] =
    R"({"loadBalancingConfig": [{"round_robin": {}}]})";
constexpr char kServiceConfigWithRetries[] = R"({
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "fetchd.v1.Compute"}, {"service": "fetchd.v1.Fetch"},
             {"service": "grpc.health.v1.Health"}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.05s",
      "maxBackoff": "1s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
})";

}  // namespace

grpc::ChannelArguments ClientChannelArguments(const ClientOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetServiceConfigJSON(options.retry_unavailable
                                ? kServiceConfigWithRetries
                                : kServiceConfigRoundRobin);
  return args;
}

Client::Client(ClientOptions options)
    : options_(std::move(options)),
      channel_(grpc::CreateCustomChannel(options_.target,
                                         grpc::InsecureChannelCredentials(),
                                         ClientChannelArguments(options_))),
      compute_(v1::Compute::NewStub(channel_)),
      fetch_(v1::Fetch::NewStub(channel_)),
      health_(grpc::health::v1::Health::NewStub(channel_)) {}

absl::StatusOr<v1::ComputeResponse> Client::Compute(
    const v1::ComputeRequest& request) const {
  grpc::ClientContext context;
  SetDeadline(&context, options_.timeout);
  v1::ComputeResponse response;
  grpc::Status status = compute_->Run(&context, request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return response;
}

absl::Status Client::StreamBatchFetch(
    const v1::BatchFetchRequest& request, absl::Duration timeout,
    absl::FunctionRef<void(const v1::FetchResult&)> on_result) const {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  auto reader = fetch_->StreamBatchFetch(&context, request);
  v1::FetchResult result;
  while (reader->Read(&result)) on_result(result);
  return ToAbslStatus(reader->Finish());
}

absl::Status Client::FetchPages(
    const v1::FetchPagesRequest& request, absl::Duration timeout,
    absl::FunctionRef<void(const v1::Page&)> on_page,
    const std::function<bool()>& stop) const {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  absl::Notification done;
  // Read() blocks, so a watcher turns `stop` into a cancel.
  std::thread watcher([&] {
    while (!done.WaitForNotificationWithTimeout(absl::Milliseconds(20))) {
      if (stop && stop()) {
        context.TryCancel();
        return;
      }
    }
  });
  auto reader = fetch_->FetchPages(&context, request);
  v1::Page page;
  while (reader->Read(&page)) on_page(page);
  grpc::Status status = reader->Finish();
  done.Notify();
  watcher.join();
  return ToAbslStatus(status);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus>
Client::Health(const std::string& service) const {
  grpc::ClientContext context;
  SetDeadline(&context, options_.timeout);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health_->Check(&context, request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return response.status();
}

}  // namespace fetchd::client
