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
#include "fetchd/v1/jobs.grpc.pb.h"
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

  absl::StatusOr<v1::RunResponse> Compute(const v1::RunRequest& request) const;
  // Streams the batch; `on_result` runs once per result as it arrives.
  // Returns the RPC's status. `timeout` overrides options().timeout.
  absl::Status StreamBatchFetch(
      const v1::StreamBatchFetchRequest& request, absl::Duration timeout,
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

  // Jobs (fetchd --job_store). Each is one RPC with options().timeout, and
  // errors as the server gave them (NOT_FOUND for an unknown, expired,
  // deleted or another identity's job). Submit is not retried on
  // UNAVAILABLE (it is not idempotent without a key); the others are.
  absl::StatusOr<v1::SubmitResponse> SubmitJob(
      const v1::SubmitRequest& request) const;
  absl::StatusOr<v1::Job> GetJob(const std::string& id) const;
  absl::StatusOr<v1::Job> CancelJob(const std::string& id) const;
  absl::Status DeleteJob(const std::string& id) const;
  absl::StatusOr<v1::ListResponse> ListJobs(
      const v1::ListRequest& request) const;
  absl::StatusOr<v1::ListResultsResponse> ListJobResults(
      const v1::ListResultsRequest& request) const;
  // Streams the job's events (from_seq as in WatchRequest) until the job
  // ends; `on_event` runs once per event. `timeout` bounds the whole watch.
  absl::Status WatchJob(
      const std::string& id, int64_t from_seq, absl::Duration timeout,
      absl::FunctionRef<void(const v1::WatchResponse&)> on_event) const;
  // Pages through ListResults from the start: `on_result` runs once per
  // result, in item order. Stops after the last result of a terminal job,
  // or, while the job runs, at the end of the results stored so far.
  // `state` (optional) gets the job's state as the last page was read.
  absl::Status ForEachJobResult(
      const std::string& id,
      absl::FunctionRef<void(const v1::JobResult&)> on_result,
      v1::JobState* state = nullptr) const;
  // The Jobs stub and a context as the methods above use (deadline, token),
  // for RPCs this class does not wrap.
  v1::Jobs::Stub& jobs_stub() const { return *jobs_; }
  std::unique_ptr<grpc::ClientContext> NewContext(absl::Duration timeout,
                                                  bool with_token = true) const;

 private:
  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Compute::Stub> compute_;
  std::unique_ptr<v1::Fetch::Stub> fetch_;
  std::unique_ptr<v1::Jobs::Stub> jobs_;
  std::shared_ptr<grpc::Channel> health_channel_;  // connects on first use
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// "sqrt_sum(n=10) = 19.306000526 (queue 12µs, run 3µs)"
std::string FormatComputeHuman(const v1::RunRequest& request,
                               const v1::RunResponse& response);
// One JSON object, no trailing newline: {"kernel":"sqrt_sum","n":10,
// "value":19.3..,"queue_wait_us":12,"run_time_us":3}
std::string FormatComputeJson(const v1::RunRequest& request,
                              const v1::RunResponse& response);
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

// Jobs. JobStateName(JOB_STATE_RUNNING) = "RUNNING"; ParseJobState reads
// "running" or "RUNNING" (INVALID_ARGUMENT naming the states otherwise).
std::string JobStateName(v1::JobState state);
absl::StatusOr<v1::JobState> ParseJobState(const std::string& name);
// True for SUCCEEDED, FAILED and CANCELLED.
bool IsTerminal(v1::JobState state);
// The Job message as one line of JSON (protobuf's mapping: proto field
// names, every field printed, int64 as strings).
std::string FormatJobJson(const v1::Job& job);
// A few "name  value" lines (no trailing newline): id, kind, state, counts,
// times, error, webhook delivery.
std::string FormatJobHuman(const v1::Job& job);
// One line for job list: "j_..  SUCCEEDED  batch_fetch  51/51 done, 1
// failed, 1.2 KiB  created 2026-..".
std::string FormatJobLine(const v1::Job& job);
// One watch event: "seq 3  RUNNING  12/50 done, 1 failed, 4.0 KiB", or a
// JSON object with seq, state, total, done, failed, bytes, time and, for a
// FAILED or CANCELLED event, code and error.
std::string FormatWatchEventHuman(const v1::WatchResponse& event);
std::string FormatWatchEventJson(const v1::WatchResponse& event);
// One job result as fetchctl prints it: a fetch result as FormatFetch*, a
// page as FormatPage*, a compute value as "count_primes = 25  (...)" or
// {"index":0,"kernel":..,"value":..}, an error as "CODE: message" or
// {"index":i,"code":..,"error":..}.
std::string FormatJobResultHuman(const v1::JobResult& result);
std::string FormatJobResultJson(const v1::JobResult& result);

// {"code":"DEADLINE_EXCEEDED","message":"..."}
std::string FormatErrorJson(const absl::Status& status);

}  // namespace fetchd::client

#endif  // FETCHD_CLIENT_CLIENT_H_
