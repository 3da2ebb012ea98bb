// The SSRF guard through a real fetchd (in-process) and the real engine:
// on by default in ServerConfig, its options, IDNA hosts, bad entries.
// Every server here keeps TestConfig's LoopbackOnly harness: whatever the
// guard says, no connection leaves loopback.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd::rpc {
namespace {

using ::fetchd::testing::AsStream;
using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::Origin;
using ::fetchd::testing::TestConfig;
using ::fetchd::testing::TestServer;
using ::testing::HasSubstr;

constexpr int kOk = 0;
constexpr int kDenied = static_cast<int>(absl::StatusCode::kPermissionDenied);
constexpr int kInvalid = static_cast<int>(absl::StatusCode::kInvalidArgument);

// TestConfig with the guard as fetchd ships it (closed), plus `edit`.
ServerConfig GuardedConfig(
    const std::function<void(ServerConfig&)>& edit = nullptr) {
  ServerConfig config = TestConfig();
  config.fetch.address_guard = ServerConfig().fetch.address_guard;
  if (edit) edit(config);
  return config;
}

class GuardRpcTest : public ::testing::Test {
 protected:
  std::unique_ptr<v1::Fetch::Stub> Stub(const TestServer& server) {
    return v1::Fetch::NewStub(server.NewChannel());
  }
  v1::BatchFetchRequest Request(const std::vector<std::string>& urls) {
    v1::BatchFetchRequest req;
    for (const std::string& url : urls) req.add_items()->set_url(url);
    req.mutable_retry()->set_max_attempts(3);
    req.mutable_retry()->mutable_initial_backoff()->set_nanos(1'000'000);
    return req;
  }
  v1::BatchFetchResponse Batch(const TestServer& server,
                               const std::vector<std::string>& urls) {
    v1::BatchFetchResponse resp;
    grpc::Status status = Stub(server)->BatchFetch(
        ContextWithTimeout(kEventTimeout).get(), Request(urls), &resp);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return resp;
  }
  Origin origin_;
};

TEST_F(GuardRpcTest, TheGuardIsOnInADefaultServerConfig) {
  const ServerConfig defaults;
  EXPECT_FALSE(defaults.fetch.address_guard.allow_private_networks);
  EXPECT_TRUE(defaults.fetch.address_guard.allow_cidrs.empty());
  TestServer server(GuardedConfig());
  ASSERT_TRUE(server.ok());
  v1::BatchFetchResponse resp = Batch(
      server, {origin_.Url("/json"),
               absl::StrCat("http://2130706433:", origin_.port(), "/json")});
  ASSERT_EQ(resp.results_size(), 2);
  for (const v1::FetchResult& r : resp.results()) {
    EXPECT_EQ(r.error().code(), kDenied) << r.error().message();
    EXPECT_THAT(r.error().message(),
                HasSubstr("refused to connect to 127.0.0.1 for host "
                          "\"127.0.0.1\": a loopback address"));
    EXPECT_EQ(r.attempts(), 1);  // not retried
    EXPECT_EQ(r.http_status(), 0);
    EXPECT_TRUE(r.body().empty());
  }
  // Streamed and walked the same way.
  auto context = ContextWithTimeout(kEventTimeout);
  auto reader = Stub(server)->StreamBatchFetch(
      context.get(), AsStream(Request({origin_.Url("/json")})));
  v1::StreamBatchFetchResponse streamed;
  ASSERT_TRUE(reader->Read(&streamed));
  EXPECT_EQ(streamed.result().error().code(), kDenied);
  EXPECT_TRUE(reader->Finish().ok());
  v1::FetchPagesRequest walk;
  walk.mutable_first()->set_url(origin_.Url("/pn/a?page=1&last=3"));
  walk.mutable_page_number();
  auto walk_context = ContextWithTimeout(kEventTimeout);
  auto pages = Stub(server)->FetchPages(walk_context.get(), walk);
  v1::FetchPagesResponse page;
  EXPECT_FALSE(pages->Read(&page));
  grpc::Status walked = pages->Finish();
  EXPECT_EQ(walked.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(walked.error_message(), HasSubstr("loopback"));
  EXPECT_EQ(origin_.requests(), 0);
}

TEST_F(GuardRpcTest, AllowCidrsAndDenyCidrsInTheServerConfig) {
  TestServer server(GuardedConfig([](ServerConfig& c) {
    c.fetch.address_guard.allow_cidrs = {"127.0.0.0/8"};
    c.fetch.address_guard.deny_cidrs = {"127.0.0.2/32"};
  }));
  ASSERT_TRUE(server.ok());
  Origin denied("127.0.0.2");
  v1::BatchFetchResponse resp =
      Batch(server, {origin_.Url("/json"), denied.Url("/json")});
  ASSERT_EQ(resp.results_size(), 2);
  EXPECT_EQ(resp.results(0).error().code(), kOk)
      << resp.results(0).error().message();
  EXPECT_EQ(resp.results(1).error().code(), kDenied);
  EXPECT_THAT(resp.results(1).error().message(),
              HasSubstr("--deny_cidrs entry 127.0.0.2/32"));
  EXPECT_EQ(denied.requests(), 0);
}

TEST_F(GuardRpcTest, HostRulesInTheServerConfig) {
  const int port = origin_.port();
  TestServer server(GuardedConfig([port](ServerConfig& c) {
    c.fetch.address_guard.allow_private_networks = true;
    c.fetch.address_guard.allow_hosts = {"*.api.test"};
    c.fetch.address_guard.deny_hosts = {"admin.api.test"};
    c.fetch.engine.resolve = {
        absl::StrCat("v1.api.test:", port, ":127.0.0.1"),
        absl::StrCat("admin.api.test:", port, ":127.0.0.1")};
  }));
  ASSERT_TRUE(server.ok());
  v1::BatchFetchResponse resp =
      Batch(server, {absl::StrCat("http://v1.api.test:", port, "/json"),
                     absl::StrCat("http://admin.api.test:", port, "/json"),
                     origin_.Url("/json")});
  ASSERT_EQ(resp.results_size(), 3);
  EXPECT_EQ(resp.results(0).error().code(), kOk);
  EXPECT_EQ(resp.results(1).error().code(), kDenied);
  EXPECT_THAT(resp.results(1).error().message(), HasSubstr("--deny_hosts"));
  EXPECT_EQ(resp.results(2).error().code(), kDenied);
  EXPECT_THAT(resp.results(2).error().message(),
              HasSubstr("\"127.0.0.1\": it is not on --allow_hosts"));
  EXPECT_EQ(origin_.requests(), 1);
}

TEST_F(GuardRpcTest, InternationalNamesAreFetchedAsPunycode) {
  const int port = origin_.port();
  ServerConfig config = TestConfig();
  config.fetch.engine.resolve = {
      absl::StrCat("xn--bcher-kva.test:", port, ":127.0.0.1")};
  TestServer idn(config);
  ASSERT_TRUE(idn.ok());
  v1::BatchFetchResponse resp = Batch(idn, {absl::StrCat("http://b\xc3\xbc"
                                                         "cher.test:",
                                                         port, "/json"),
                                            "http://\xe2\x98\x83.test/"});
  ASSERT_EQ(resp.results_size(), 2);
  EXPECT_EQ(resp.results(0).error().code(), kOk)
      << resp.results(0).error().message();
  EXPECT_EQ(resp.results(0).final_url(),
            absl::StrCat("http://xn--bcher-kva.test:", port, "/json"));
  EXPECT_EQ(resp.results(1).error().code(), kInvalid);
  EXPECT_THAT(resp.results(1).error().message(),
              HasSubstr("url host is not a valid international domain name"));
  EXPECT_EQ(origin_.requests(), 1);
}

TEST_F(GuardRpcTest, BadGuardEntriesStopTheServerNamingTheFlag) {
  ServerConfig config = TestConfig();
  config.fetch.address_guard.allow_cidrs = {"10.0.0.0/40"};
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(config);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(),
              HasSubstr("--allow_cidrs entry \"10.0.0.0/40\""));
  config = TestConfig();
  config.fetch.address_guard.deny_hosts = {"*.*.example"};
  server = Server::Start(config);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("--deny_hosts"));
  config = TestConfig();
  config.fetch.engine.proxy = "proxy.internal:3128";
  server = Server::Start(config);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("--upstream_proxy"));
}

}  // namespace
}  // namespace fetchd::rpc
