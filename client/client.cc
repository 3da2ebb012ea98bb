#include "client/client.h"

#include <grpcpp/grpcpp.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace fetchd::client {
namespace {

absl::Status ToAbslStatus(const grpc::Status& status) {
  // grpc::StatusCode and absl::StatusCode share the canonical code values.
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", what, "=", path, ": ", strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::shared_ptr<grpc::ChannelCredentials> Credentials(
    const ClientOptions& options) {
  if (!options.tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = options.tls_ca_pem;
  ssl.pem_cert_chain = options.tls_cert_pem;
  ssl.pem_private_key = options.tls_key_pem;
  return grpc::SslCredentials(ssl);
}

// The client's own service config (DNS supplies none). gRPC retries an
// attempt only while it has received nothing from the server.
// healthCheckConfig turns on client-side health checking: the channel keeps
// a grpc.health.v1.Health/Watch stream open to each replica and round_robin
// picks only replicas that answer SERVING, so a draining fetchd (NOT_SERVING
// for --drain_delay) stops getting calls as soon as it says so. A server
// without the health service counts as healthy.
constexpr char kServiceConfigRoundRobin[] = R"({
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""}
})";
constexpr char kServiceConfigWithRetries[] = R"({
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""},
  "methodConfig": [{
    "name": [{"service": "fetchd.v1.Compute"}, {"service": "fetchd.v1.Fetch"},
             {"service": "grpc.health.v1.Health"},
             {"service": "fetchd.v1.Jobs", "method": "Get"},
             {"service": "fetchd.v1.Jobs", "method": "Watch"},
             {"service": "fetchd.v1.Jobs", "method": "Cancel"},
             {"service": "fetchd.v1.Jobs", "method": "List"},
             {"service": "fetchd.v1.Jobs", "method": "ListResults"},
             {"service": "fetchd.v1.Jobs", "method": "Delete"}],
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

absl::Status LoadTlsFiles(const std::string& ca_file,
                          const std::string& cert_file,
                          const std::string& key_file, ClientOptions* options) {
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert and --tls_key go together: give both or neither");
  }
  for (auto [file, flag, pem] :
       {std::tuple{&ca_file, "--tls_ca", &options->tls_ca_pem},
        std::tuple{&cert_file, "--tls_cert", &options->tls_cert_pem},
        std::tuple{&key_file, "--tls_key", &options->tls_key_pem}}) {
    if (file->empty()) continue;
    absl::StatusOr<std::string> text = ReadFile(*file, flag);
    if (!text.ok()) return text.status();
    *pem = *std::move(text);
    options->tls = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path, "--token_file");
  if (!text.ok()) return text.status();
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_file=", path, " holds no token"));
  }
  return token;
}

// NOTE: the token goes in as plain metadata, not call credentials: gRPC
// sends call credentials only over a secure channel, and a plaintext
// fetchd with tokens (behind a TLS-terminating mesh) must work too.
std::unique_ptr<grpc::ClientContext> Client::NewContext(absl::Duration timeout,
                                                        bool with_token) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  if (with_token && !options_.token.empty()) {
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", options_.token));
  }
  return context;
}

Client::Client(ClientOptions options)
    : options_(std::move(options)),
      channel_(grpc::CreateCustomChannel(options_.target, Credentials(options_),
                                         ClientChannelArguments(options_))),
      compute_(v1::Compute::NewStub(channel_)),
      fetch_(v1::Fetch::NewStub(channel_)),
      jobs_(v1::Jobs::NewStub(channel_)),
      health_channel_(grpc::CreateCustomChannel(
          options_.target, Credentials(options_),
          [this] {
            grpc::ChannelArguments args = ClientChannelArguments(options_);
            args.SetInt(GRPC_ARG_INHIBIT_HEALTH_CHECKING, 1);
            return args;
          }())),
      health_(grpc::health::v1::Health::NewStub(health_channel_)) {}

absl::StatusOr<v1::RunResponse> Client::Compute(
    const v1::RunRequest& request) const {
  auto context = NewContext(options_.timeout);
  v1::RunResponse response;
  grpc::Status status = compute_->Run(context.get(), request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return response;
}

absl::Status Client::StreamBatchFetch(
    const v1::StreamBatchFetchRequest& request, absl::Duration timeout,
    absl::FunctionRef<void(const v1::FetchResult&)> on_result) const {
  auto context = NewContext(timeout);
  auto reader = fetch_->StreamBatchFetch(context.get(), request);
  v1::StreamBatchFetchResponse response;
  while (reader->Read(&response)) on_result(response.result());
  return ToAbslStatus(reader->Finish());
}

absl::Status Client::FetchPages(
    const v1::FetchPagesRequest& request, absl::Duration timeout,
    absl::FunctionRef<void(const v1::Page&)> on_page,
    const std::function<bool()>& stop) const {
  auto context_holder = NewContext(timeout);
  grpc::ClientContext& context = *context_holder;
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
  v1::FetchPagesResponse response;
  while (reader->Read(&response)) on_page(response.page());
  grpc::Status status = reader->Finish();
  done.Notify();
  watcher.join();
  return ToAbslStatus(status);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus>
Client::Health(const std::string& service) const {
  // Health needs no token (probes have none), so none is sent.
  auto context = NewContext(options_.timeout, /*with_token=*/false);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = health_->Check(context.get(), request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return response.status();
}

absl::StatusOr<v1::SubmitResponse> Client::SubmitJob(
    const v1::SubmitRequest& request) const {
  auto context = NewContext(options_.timeout);
  v1::SubmitResponse response;
  grpc::Status status = jobs_->Submit(context.get(), request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return response;
}

absl::StatusOr<v1::Job> Client::GetJob(const std::string& id) const {
  auto context = NewContext(options_.timeout);
  v1::GetRequest request;
  request.set_id(id);
  v1::GetResponse response;
  grpc::Status status = jobs_->Get(context.get(), request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return std::move(*response.mutable_job());
}

absl::StatusOr<v1::Job> Client::CancelJob(const std::string& id) const {
  auto context = NewContext(options_.timeout);
  v1::CancelRequest request;
  request.set_id(id);
  v1::CancelResponse response;
  grpc::Status status = jobs_->Cancel(context.get(), request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return std::move(*response.mutable_job());
}

absl::Status Client::DeleteJob(const std::string& id) const {
  auto context = NewContext(options_.timeout);
  v1::DeleteRequest request;
  request.set_id(id);
  v1::DeleteResponse response;
  return ToAbslStatus(jobs_->Delete(context.get(), request, &response));
}

absl::StatusOr<v1::ListResponse> Client::ListJobs(
    const v1::ListRequest& request) const {
  auto context = NewContext(options_.timeout);
  v1::ListResponse response;
  grpc::Status status = jobs_->List(context.get(), request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return response;
}

absl::StatusOr<v1::ListResultsResponse> Client::ListJobResults(
    const v1::ListResultsRequest& request) const {
  auto context = NewContext(options_.timeout);
  v1::ListResultsResponse response;
  grpc::Status status = jobs_->ListResults(context.get(), request, &response);
  if (!status.ok()) return ToAbslStatus(status);
  return response;
}

absl::Status Client::WatchJob(
    const std::string& id, int64_t from_seq, absl::Duration timeout,
    absl::FunctionRef<void(const v1::WatchResponse&)> on_event) const {
  auto context = NewContext(timeout);
  v1::WatchRequest request;
  request.set_id(id);
  request.set_from_seq(from_seq);
  auto reader = jobs_->Watch(context.get(), request);
  v1::WatchResponse event;
  while (reader->Read(&event)) on_event(event);
  return ToAbslStatus(reader->Finish());
}

absl::Status Client::ForEachJobResult(
    const std::string& id,
    absl::FunctionRef<void(const v1::JobResult&)> on_result,
    v1::JobState* state) const {
  v1::ListResultsRequest request;
  request.set_id(id);
  while (true) {
    absl::StatusOr<v1::ListResultsResponse> page = ListJobResults(request);
    if (!page.ok()) return page.status();
    if (state != nullptr) *state = page->state();
    for (const v1::JobResult& result : page->results()) on_result(result);
    // While the job runs the token is set even past the last stored
    // result; an empty page means nothing more is there yet.
    if (page->next_page_token().empty() || page->results().empty()) {
      return absl::OkStatus();
    }
    request.set_page_token(page->next_page_token());
  }
}

}  // namespace fetchd::client
