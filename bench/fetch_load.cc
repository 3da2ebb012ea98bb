// fetch_load: drives BatchFetch the way a calling service would. Splits
// --n URLs of ORIGIN/items/{1..10000}.json into --rpcs BatchFetch RPCs, sends
// them all at once (async stub, one CompletionQueue), and reports items/s
// from the first send to the last answer.
//
//   fetch_load --target=127.0.0.1:50051 --base=http://127.0.0.1:18080
//              --n=20000 --rpcs=1 --concurrency=64
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "bench/cancel_probe.h"
#include "fetchd/v1/fetch.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "fetchd address");
ABSL_FLAG(std::string, base, "http://127.0.0.1:18080", "origin base URL");
ABSL_FLAG(int, n, 20000, "URLs in all");
ABSL_FLAG(int, rpcs, 1, "BatchFetch RPCs the URLs are split into");
ABSL_FLAG(int, concurrency, 64, "max_concurrency of each RPC");
ABSL_FLAG(bool, drop_body, false, "ask fetchd not to return bodies");
ABSL_FLAG(std::string, label, "fetchd", "first column of the output line");
ABSL_FLAG(int, cancel_probes, 0,
          "instead of load: this many times, stream a batch of --cancel_items "
          "URLs to a local origin that accepts and never answers, cancel the "
          "RPC once every request has arrived, and report how long fetchd "
          "takes to close all of those connections");
ABSL_FLAG(int, cancel_items, 50, "transfers in flight per cancel probe");
ABSL_FLAG(std::string, token, "",
          "bearer token sent with every RPC (fetchd --auth_tokens_file)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM file of the CA that signed fetchd's certificate: TLS to the "
          "gRPC port instead of plaintext");

namespace {

struct Call {
  grpc::ClientContext context;
  fetchd::v1::BatchFetchResponse response;
  grpc::Status status;
  std::unique_ptr<
      grpc::ClientAsyncResponseReader<fetchd::v1::BatchFetchResponse>>
      reader;
};

using Clock = fetchd::bench::Clock;

int CancelProbes(fetchd::v1::Fetch::Stub* stub, int probes, int items) {
  const auto times =
      fetchd::bench::RunCancelProbes<fetchd::v1::StreamBatchFetchResponse>(
          probes, items, [&](int port, grpc::ClientContext* context) {
            fetchd::v1::StreamBatchFetchRequest request;
            for (int i = 0; i < items; ++i) {
              request.add_items()->set_url(
                  absl::StrCat("http://127.0.0.1:", port, "/hang/", i));
            }
            request.set_max_concurrency(items);
            return stub->StreamBatchFetch(context, request);
          });
  if (!times.has_value()) return 1;
  std::printf(
      "%s cancel_probes=%d items=%d all_transfers_closed_p50_ms=%.2f "
      "max_ms=%.2f\n",
      absl::GetFlag(FLAGS_label).c_str(), probes, items, times->p50_ms,
      times->max_ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_n);
  const int rpcs = std::max(1, absl::GetFlag(FLAGS_rpcs));
  const std::string base = absl::GetFlag(FLAGS_base);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (const std::string ca = absl::GetFlag(FLAGS_tls_ca); !ca.empty()) {
    std::ifstream in(ca);
    std::stringstream pem;
    pem << in.rdbuf();
    if (!in) {
      std::fprintf(stderr, "fetch_load: cannot read --tls_ca=%s\n", ca.c_str());
      return 2;
    }
    credentials = grpc::SslCredentials({.pem_root_certs = pem.str()});
  }
  auto stub = fetchd::v1::Fetch::NewStub(grpc::CreateCustomChannel(
      absl::GetFlag(FLAGS_target), credentials, args));
  const std::string authorization =
      absl::GetFlag(FLAGS_token).empty()
          ? ""
          : absl::StrCat("Bearer ", absl::GetFlag(FLAGS_token));
  if (const int probes = absl::GetFlag(FLAGS_cancel_probes); probes > 0) {
    return CancelProbes(stub.get(), probes,
                        std::max(1, absl::GetFlag(FLAGS_cancel_items)));
  }

  // Build every request before the clock starts.
  std::vector<fetchd::v1::BatchFetchRequest> requests(rpcs);
  for (int i = 0; i < n; ++i) {
    fetchd::v1::BatchFetchRequest& r = requests[i % rpcs];
    r.add_items()->set_url(
        absl::StrCat(base, "/items/", i % 10000 + 1, ".json"));
  }
  for (auto& r : requests) {
    r.set_max_concurrency(absl::GetFlag(FLAGS_concurrency));
    r.set_drop_body(absl::GetFlag(FLAGS_drop_body));
  }
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<Call>> calls;
  const auto start = std::chrono::steady_clock::now();
  for (auto& r : requests) {
    auto call = std::make_unique<Call>();
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::minutes(5));
    if (!authorization.empty()) {
      call->context.AddMetadata("authorization", authorization);
    }
    call->reader = stub->AsyncBatchFetch(&call->context, r, &cq);
    call->reader->Finish(&call->response, &call->status, call.get());
    calls.push_back(std::move(call));
  }
  int64_t ok = 0, failed = 0, bytes = 0;
  std::string first_error;
  for (int i = 0; i < rpcs; ++i) {
    void* tag;
    bool got;
    if (!cq.Next(&tag, &got)) break;
    auto* call = static_cast<Call*>(tag);
    if (!call->status.ok()) {
      if (first_error.empty()) first_error = call->status.error_message();
      continue;
    }
    for (const auto& result : call->response.results()) {
      if (result.error().code() == 0 && result.http_status() == 200) {
        ++ok;
        bytes += result.body_bytes();
      } else {
        ++failed;
        if (first_error.empty()) first_error = result.error().message();
      }
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  cq.Shutdown();
  void* tag;
  bool got;
  while (cq.Next(&tag, &got)) {
  }
  std::printf(
      "%s n=%d rpcs=%d c=%d ok=%lld failed=%lld bytes=%lld %.3f s %.0f "
      "req/s%s%s\n",
      absl::GetFlag(FLAGS_label).c_str(), n, rpcs,
      absl::GetFlag(FLAGS_concurrency), static_cast<long long>(ok),
      static_cast<long long>(failed), static_cast<long long>(bytes), seconds,
      n / seconds,
      first_error.empty() ? "" : " first_error=", first_error.c_str());
  return ok == n ? 0 : 1;
}
