// libfetchd_client: a thin C++ wrapper over fetchd's generated stubs, and
// the output formats fetchctl prints.
//
// Client is thread-safe (one channel, shared). Errors come back as
// absl::Status with the gRPC code carried over 1:1.
#ifndef FETCHD_CLIENT_CLIENT_H_
#define FETCHD_CLIENT_CLIENT_H_

#include <grpcpp/support/channel_arguments.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "fetchd/v1/compute.grpc.pb.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace fetchd::client {

struct ClientOptions {
  // Any gRPC target. With several addresses, e.g.
  // dns:///fetchd-headless.fetchd.svc.cluster.local:50051 (a headless
  // Service) or ipv4:10.0.0.1:50051,10.0.0.2:50051, RPCs are spread over
  // all of them round robin.
  std::string target = "127.0.0.1:50051";
  absl::Duration timeout = absl::Seconds(5);  // per-RPC deadline
  // An RPC that fails UNAVAILABLE before any response (a replica went away)
  // is sent again, to another replica, up to 4 attempts in all. A batch
  // whose items POST may then run twice: turn it off for those.
  bool retry_unavailable = true;

  // TLS to fetchd (fetchd --tls_cert): on when `tls` is set. PEM contents;
  // LoadTlsFiles fills them from files.
  bool tls = false;
  std::string tls_ca_pem;    // roots fetchd's certificate must chain to;
                             // empty: the system's roots
  std::string tls_cert_pem;  // mTLS (fetchd --tls_client_ca): the client's
  std::string tls_key_pem;   // certificate chain and its private key
  // Sent as "authorization: Bearer TOKEN" with every RPC but Health (fetchd
  // --auth_tokens_file), over TLS or plaintext alike; empty: none.
  std::string token;
};

// Reads the PEM files named by fetchctl's --tls_ca, --tls_cert and
// --tls_key into `options` and turns TLS on when any is given; "" skips
// one. INVALID_ARGUMENT naming the flag for an unreadable file, or for one
// of --tls_cert and --tls_key without the other.
absl::Status LoadTlsFiles(const std::string& ca_file,
                          const std::string& cert_file,
                          const std::string& key_file, ClientOptions* options);

// The token in `path` (surrounding whitespace removed); INVALID_ARGUMENT
// naming the file when it cannot be read or holds no token.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// The channel arguments the client uses: round_robin over every address
// the target resolves to, client-side health checking (a replica that
// reports NOT_SERVING, e.g. draining, gets no new calls), the UNAVAILABLE
// retry policy when asked, and no cap on response size (batch responses can
// be large).
grpc::ChannelArguments ClientChannelArguments(const ClientOptions& options);

class Client {
 public:
  explicit Client(ClientOptions options);

  absl::StatusOr<v1::ComputeResponse> Compute(
      const v1::ComputeRequest& request) const;
  // Streams the batch; `on_result` runs once per result as it arrives.
  // Returns the RPC's status. `timeout` overrides options().timeout.
  absl::Status StreamBatchFetch(
      const v1::BatchFetchRequest& request, absl::Duration timeout,
      absl::FunctionRef<void(const v1::FetchResult&)> on_result) const;
  // Walks the pages; `on_page` runs once per page as it arrives. The walk
  // stops early (CANCELLED) once `stop` returns true; it is polled every
  // 20 ms from another thread, so it must be thread-safe.
  absl::Status FetchPages(const v1::FetchPagesRequest& request,
                          absl::Duration timeout,
                          absl::FunctionRef<void(const v1::Page&)> on_page,
                          const std::function<bool()>& stop) const;
  // The serving status of `service` ("" = the whole server). Asked over a
  // channel of its own without client-side health checking, so a draining
  // replica answers NOT_SERVING instead of being skipped.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service) const;

 private:
  // A context with the deadline, and the token when there is one.
  std::unique_ptr<grpc::ClientContext> NewContext(absl::Duration timeout,
                                                  bool with_token = true) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Compute::Stub> compute_;
  std::unique_ptr<v1::Fetch::Stub> fetch_;
  std::shared_ptr<grpc::Channel> health_channel_;  // connects on first use
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// "sqrt_sum(n=10) = 19.306000526 (queue 12µs, run 3µs)"
std::string FormatComputeHuman(const v1::ComputeRequest& request,
                               const v1::ComputeResponse& response);
// One JSON object, no trailing newline: {"kernel":"sqrt_sum","n":10,
// "value":19.3..,"queue_wait_us":12,"run_time_us":3}
std::string FormatComputeJson(const v1::ComputeRequest& request,
                              const v1::ComputeResponse& response);
// One fetch result: a human line, or a JSON object with index, url,
// status, code, attempts, bytes, elapsed_ms, processed, error.
std::string FormatFetchHuman(const v1::FetchResult& result);
std::string FormatFetchJson(const v1::FetchResult& result);

// "page 3  200 http://...  812 B  1.2 ms", or the FetchJson object plus
// index, items (a count) and resume_token.
std::string FormatPageHuman(const v1::Page& page);
std::string FormatPageJson(const v1::Page& page);
// {"page":3,"item":<the item's JSON>}
std::string FormatPageItemJson(const v1::Page& page, const std::string& item);

// {"code":"DEADLINE_EXCEEDED","message":"..."}
std::string FormatErrorJson(const absl::Status& status);

}  // namespace fetchd::client

#endif  // FETCHD_CLIENT_CLIENT_H_
