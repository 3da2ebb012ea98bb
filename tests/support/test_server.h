// Test support: a real fetchd started in-process on an ephemeral loopback
// port, and condition waits with deadlines (never bare sleeps).
#ifndef FETCHD_TESTS_SUPPORT_TEST_SERVER_H_
#define FETCHD_TESTS_SUPPORT_TEST_SERVER_H_

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "fetchd/v1/compute.grpc.pb.h"
#include "fetchd/v1/compute.pb.h"
#include "fetchd/v1/fetch.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "server/rpc/rpc.h"

namespace fetchd::testing {

// How long a test waits for something it expects to happen promptly (a
// condition, a notification, an RPC's answer, a child process's exit)
// before it fails. Generous, for loaded CI machines: a passing test never
// waits this long, so it costs nothing; only a failure takes it.
inline constexpr absl::Duration kEventTimeout = absl::Seconds(30);

// Polls `condition` until it holds or `timeout` passes; the failure names
// `what`. Use as EXPECT_TRUE(WaitFor(...)).
::testing::AssertionResult WaitFor(const std::function<bool()>& condition,
                                   absl::Duration timeout,
                                   const std::string& what);

// A config for tests: 127.0.0.1:0, two CQ threads, two workers, the
// address guard open (--allow_private_networks: the test origin is on
// loopback) inside a LoopbackOnly harness.
rpc::ServerConfig TestConfig();

// Starts fetchd in-process; shut down (grace 0) on destruction.
class TestServer {
 public:
  explicit TestServer(rpc::ServerConfig config = TestConfig());

  // Whether Start succeeded; tests ASSERT_TRUE(server.ok()) first.
  bool ok() const { return server_ != nullptr; }
  rpc::Server& server() { return *server_; }
  std::string address() const;
  std::shared_ptr<grpc::Channel> NewChannel() const;
  void Shutdown(absl::Duration grace) { server_->Shutdown(grace); }

 private:
  std::unique_ptr<rpc::Server> server_;
};

// A sqrt_sum size that runs for hours: only a cancel, deadline or shutdown
// ends it (TestConfig allows it).
inline constexpr int64_t kEndlessN = 10'000'000'000'000;

// A Compute.Run request for sqrt_sum(n).
v1::RunRequest SqrtSumRequest(int64_t n);

// A client context whose deadline is `timeout` from now.
std::unique_ptr<grpc::ClientContext> ContextWithTimeout(absl::Duration timeout);

// The same batch as a StreamBatchFetchRequest (the two share their fields).
v1::StreamBatchFetchRequest AsStream(const v1::BatchFetchRequest& request);

// Health.Check for the whole server on `channel` (5 s deadline): the
// status it reports, or UNKNOWN when the call fails; `status` (optional)
// receives the call's status.
grpc::health::v1::HealthCheckResponse::ServingStatus CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel,
    grpc::Status* status = nullptr);
// The same for one service by name ("fetchd.v1.Fetch"; "" = the server).
grpc::health::v1::HealthCheckResponse::ServingStatus CheckHealth(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& service,
    grpc::Status* status = nullptr);

// A Compute.Run in flight on its own thread, cancellable; the destructor
// waits for it to end.
class PendingCall {
 public:
  struct Options {
    absl::Duration timeout = absl::Seconds(60);  // each attempt's deadline
    // Sends the request again while the server answers RESOURCE_EXHAUSTED:
    // for a server with one worker and no queue, where a probe may hold the
    // worker when this call arrives.
    bool retry_while_exhausted = false;
  };

  PendingCall(v1::Compute::Stub* stub, v1::RunRequest request)
      : PendingCall(stub, std::move(request), Options()) {}
  PendingCall(v1::Compute::Stub* stub, v1::RunRequest request, Options options);
  ~PendingCall();
  PendingCall(const PendingCall&) = delete;
  PendingCall& operator=(const PendingCall&) = delete;

  // Cancels the attempt in flight and any retry.
  void Cancel() ABSL_LOCKS_EXCLUDED(mu_);
  // Waits for the call to end; its status.
  const grpc::Status& Wait();
  // Valid after Wait().
  const v1::RunResponse& response() const { return response_; }

 private:
  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* attempt_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Written by the thread; read after it is joined.
  grpc::Status status_;
  v1::RunResponse response_;
  std::thread thread_;  // last: starts once the rest is constructed
};

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_TEST_SERVER_H_
