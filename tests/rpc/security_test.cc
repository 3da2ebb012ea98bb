// The gRPC port's security through a real in-process fetchd: TLS, mTLS and
// the identity it gives, certificate reload, bearer tokens on every kind of
// call, Health without one, and reflection behind the check. Certificates
// are made at test time (tests/support/certs.h).
#include "server/rpc/security.h"

#include <gmock/gmock.h>
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fetchd/v1/compute.grpc.pb.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "server/rpc/rpc.h"
#include "tests/support/certs.h"
#include "tests/support/origin.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_server.h"

namespace fetchd::rpc {
namespace {

using ::fetchd::testing::AsStream;
using ::fetchd::testing::CertAndKey;
using ::fetchd::testing::CertOptions;
using ::fetchd::testing::CheckHealth;
using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::SqrtSumRequest;
using ::fetchd::testing::TempDir;
using ::fetchd::testing::TempFile;
using ::fetchd::testing::TestCa;
using ::fetchd::testing::TestConfig;
using ::fetchd::testing::TestServer;
using ::fetchd::testing::WaitFor;
using ::fetchd::testing::WriteFileAtomically;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kAliceToken[] = "alice-token-0123456789abcdef";
constexpr char kBobToken[] = "bob-token-0123456789abcdef";

std::string Write(const TempDir& dir, const std::string& name,
                  const std::string& text) {
  const std::string path = dir.File(name);
  EXPECT_TRUE(WriteFileAtomically(path, text).ok());
  return path;
}

CertAndKey ServerCert(const TestCa& ca, const std::string& cn = "localhost") {
  return ca.Issue({.common_name = cn,
                   .dns_names = {"localhost"},
                   .ip_addresses = {"127.0.0.1"}});
}

std::shared_ptr<grpc::Channel> TlsChannel(const std::string& address,
                                          const std::string& ca_pem,
                                          const CertAndKey* client = nullptr) {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ca_pem;
  if (client != nullptr) {
    ssl.pem_cert_chain = client->cert_pem;
    ssl.pem_private_key = client->key_pem;
  }
  // A fresh subchannel pool: every channel makes its own connection, so a
  // new handshake sees the certificate the server holds now.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(address, grpc::SslCredentials(ssl), args);
}

grpc::Status RunSqrtSum(const std::shared_ptr<grpc::Channel>& channel,
                        const std::string& token = "",
                        std::string* server_cn = nullptr) {
  auto context = ContextWithTimeout(absl::Seconds(5));
  if (!token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }
  v1::RunResponse response;
  grpc::Status status = v1::Compute::NewStub(channel)->Run(
      context.get(), SqrtSumRequest(10), &response);
  if (server_cn != nullptr && context->auth_context() != nullptr) {
    auto cn = context->auth_context()->FindPropertyValues("x509_common_name");
    *server_cn = cn.empty() ? "" : std::string(cn[0].data(), cn[0].size());
  }
  return status;
}

class TlsTest : public ::testing::Test {
 protected:
  rpc::ServerConfig TlsConfig(const CertAndKey& cert) {
    rpc::ServerConfig config = TestConfig();
    config.tls.cert = Write(dir_, "server.pem", cert.cert_pem);
    config.tls.key = Write(dir_, "server.key", cert.key_pem);
    return config;
  }
  TempDir dir_;
  TestCa ca_{"server CA"};
};

TEST_F(TlsTest, HandshakeWithTheRightCaSucceeds) {
  TestServer server(TlsConfig(ServerCert(ca_)));
  ASSERT_TRUE(server.ok());
  auto channel = TlsChannel(server.address(), ca_.cert_pem());
  grpc::Status status = RunSqrtSum(channel);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(CheckHealth(channel),
            grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(TlsTest, AWrongCaOrPlaintextFails) {
  TestServer server(TlsConfig(ServerCert(ca_)));
  ASSERT_TRUE(server.ok());
  TestCa other("another CA");
  EXPECT_EQ(
      RunSqrtSum(TlsChannel(server.address(), other.cert_pem())).error_code(),
      grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(RunSqrtSum(server.NewChannel()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsTest, MismatchedOrMissingFilesAreStartErrors) {
  rpc::ServerConfig config = TlsConfig(ServerCert(ca_));
  config.tls.key = Write(dir_, "other.key", ServerCert(ca_).key_pem);
  auto server = Server::Start(config);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("is not the key of"));
  config = TlsConfig(ServerCert(ca_));
  config.tls.client_ca = dir_.File("missing.pem");
  server = Server::Start(config);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("--tls_client_ca"));
}

TEST_F(TlsTest, ACertificateReplacedOnDiskIsServedToNewConnections) {
  rpc::ServerConfig config = TlsConfig(ServerCert(ca_, "first"));
  config.tls_reload_interval = absl::Seconds(1);
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  std::string cn;
  ASSERT_TRUE(
      RunSqrtSum(TlsChannel(server.address(), ca_.cert_pem()), "", &cn).ok());
  EXPECT_EQ(cn, "first");
  // A rotation as cert-manager does it: a new key and certificate, here
  // even from a new CA, each file replaced atomically.
  TestCa next_ca("next CA");
  const CertAndKey next = ServerCert(next_ca, "second");
  ASSERT_TRUE(WriteFileAtomically(config.tls.key, next.key_pem).ok());
  ASSERT_TRUE(WriteFileAtomically(config.tls.cert, next.cert_pem).ok());
  absl::Time next_try = absl::InfinitePast();
  EXPECT_TRUE(WaitFor(
      [&] {
        // A handshake every 50 ms, not every poll: each failure logs.
        if (absl::Now() < next_try) return false;
        next_try = absl::Now() + absl::Milliseconds(50);
        return RunSqrtSum(TlsChannel(server.address(), next_ca.cert_pem()), "",
                          &cn)
                   .ok() &&
               cn == "second";
      },
      kEventTimeout, "the new certificate on a new connection"));
  // The old CA no longer vouches for the server.
  EXPECT_FALSE(RunSqrtSum(TlsChannel(server.address(), ca_.cert_pem())).ok());
}

class MtlsTest : public TlsTest {
 protected:
  rpc::ServerConfig MtlsConfig() {
    rpc::ServerConfig config = TlsConfig(ServerCert(ca_));
    config.tls.client_ca = Write(dir_, "clients.pem", client_ca_.cert_pem());
    config.logger = &logger_;
    return config;
  }
  TestCa client_ca_{"client CA"};
  TempFile log_file_;
  log::Logger logger_{{.out = log_file_.get()}};
};

TEST_F(MtlsTest, AClientWithoutACertificateOrWithAStrangerIsRefused) {
  TestServer server(MtlsConfig());
  ASSERT_TRUE(server.ok());
  EXPECT_EQ(
      RunSqrtSum(TlsChannel(server.address(), ca_.cert_pem())).error_code(),
      grpc::StatusCode::UNAVAILABLE);
  TestCa stranger("stranger CA");
  const CertAndKey foreign =
      stranger.Issue({.common_name = "mallory", .client = true});
  EXPECT_EQ(RunSqrtSum(TlsChannel(server.address(), ca_.cert_pem(), &foreign))
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(MtlsTest, TheVerifiedSubjectIsTheCallersIdentity) {
  TestServer server(MtlsConfig());
  ASSERT_TRUE(server.ok());
  const CertAndKey client =
      client_ca_.Issue({.common_name = "billing-service", .client = true});
  auto channel = TlsChannel(server.address(), ca_.cert_pem(), &client);
  grpc::Status status = RunSqrtSum(channel);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(log_file_.Text(),
                                 R"("identity":"billing-service")");
      },
      kEventTimeout, "the RPC's log line with the subject"));
}

class TokenTest : public ::testing::Test {
 protected:
  rpc::ServerConfig TokenConfig() {
    rpc::ServerConfig config = TestConfig();
    config.auth_tokens_file =
        Write(dir_, "tokens",
              absl::StrCat("# test tokens\nalice ", kAliceToken, "\n"));
    config.auth_tokens_poll_interval = absl::Milliseconds(20);
    config.logger = &logger_;
    return config;
  }
  TempDir dir_;
  TempFile log_file_;
  log::Logger logger_{{.out = log_file_.get()}};
};

TEST_F(TokenTest, RightWrongAndMissingTokens) {
  TestServer server(TokenConfig());
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  grpc::Status ok = RunSqrtSum(channel, kAliceToken);
  EXPECT_TRUE(ok.ok()) << ok.error_message();
  grpc::Status wrong = RunSqrtSum(channel, kBobToken);
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.error_message(), Not(HasSubstr(kBobToken)));
  EXPECT_EQ(RunSqrtSum(channel).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Not a bearer header at all.
  auto context = ContextWithTimeout(absl::Seconds(5));
  context->AddMetadata("authorization", kAliceToken);
  v1::RunResponse response;
  EXPECT_EQ(v1::Compute::NewStub(channel)
                ->Run(context.get(), SqrtSumRequest(10), &response)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(WaitFor(
      [&] {
        const std::string log = log_file_.Text();
        return absl::StrContains(log, R"("identity":"alice","code":"OK")") &&
               absl::StrContains(
                   log, R"("identity":"anonymous","code":"UNAUTHENTICATED")");
      },
      kEventTimeout, "log lines naming the caller"));
}

TEST_F(TokenTest, NothingRunsWithoutAToken) {
  ::fetchd::testing::Origin origin;
  TestServer server(TokenConfig());
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  // A kernel that would run for hours comes back at once.
  v1::RunResponse response;
  EXPECT_EQ(v1::Compute::NewStub(channel)
                ->Run(ContextWithTimeout(absl::Seconds(5)).get(),
                      SqrtSumRequest(::fetchd::testing::kEndlessN), &response)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(server.server().worker_stats().running, 0);
  // Unary and streaming fetches and page walks never reach the origin.
  auto fetch = v1::Fetch::NewStub(channel);
  v1::BatchFetchRequest batch;
  batch.add_items()->set_url(origin.Url("/"));
  v1::BatchFetchResponse batch_response;
  EXPECT_EQ(fetch
                ->BatchFetch(ContextWithTimeout(absl::Seconds(5)).get(), batch,
                             &batch_response)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  {
    auto context = ContextWithTimeout(absl::Seconds(5));
    auto reader = fetch->StreamBatchFetch(context.get(), AsStream(batch));
    v1::StreamBatchFetchResponse result;
    EXPECT_FALSE(reader->Read(&result));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    auto context = ContextWithTimeout(absl::Seconds(5));
    v1::FetchPagesRequest pages;
    pages.mutable_first()->set_url(origin.Url("/"));
    auto reader = fetch->FetchPages(context.get(), pages);
    v1::FetchPagesResponse page;
    EXPECT_FALSE(reader->Read(&page));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(origin.requests(), 0);
  // The control: with the token the same batch does reach the origin.
  auto context = ContextWithTimeout(absl::Seconds(5));
  context->AddMetadata("authorization", absl::StrCat("Bearer ", kAliceToken));
  grpc::Status status =
      fetch->BatchFetch(context.get(), batch, &batch_response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(origin.requests(), 1);
  // The calls re-armed: an authenticated one still works on every CQ.
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(RunSqrtSum(channel, kAliceToken).ok());
  }
}

TEST_F(TokenTest, HealthNeedsNoToken) {
  TestServer server(TokenConfig());
  ASSERT_TRUE(server.ok());
  grpc::Status status;
  EXPECT_EQ(CheckHealth(server.NewChannel(), &status),
            grpc::health::v1::HealthCheckResponse::SERVING)
      << status.error_message();
}

TEST_F(TokenTest, TheFileIsReloadedWhenItChangesAndOnReload) {
  rpc::ServerConfig config = TokenConfig();
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  ASSERT_TRUE(RunSqrtSum(channel, kAliceToken).ok());
  // Changed on disk: seen by the watcher.
  ASSERT_TRUE(WriteFileAtomically(config.auth_tokens_file,
                                  absl::StrCat("bob ", kBobToken, "\n"))
                  .ok());
  EXPECT_TRUE(WaitFor([&] { return RunSqrtSum(channel, kBobToken).ok(); },
                      kEventTimeout, "bob's token to be accepted"));
  EXPECT_EQ(RunSqrtSum(channel, kAliceToken).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // A bad file keeps the tokens in force.
  ASSERT_TRUE(
      WriteFileAtomically(config.auth_tokens_file, "bob tooshort\n").ok());
  absl::Status reload = server.server().Reload();
  EXPECT_THAT(reload.message(), HasSubstr(":1: the token is shorter"));
  EXPECT_TRUE(RunSqrtSum(channel, kBobToken).ok());
  EXPECT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(log_file_.Text(),
                                 R"("event":"auth_tokens_reload_failed")");
      },
      kEventTimeout, "the failed reload in the log"));
}

// The reflection stream as grpcurl opens it, with one question.
grpc::Status AskReflection(
    const std::shared_ptr<grpc::Channel>& channel, const std::string& token,
    const grpc::reflection::v1alpha::ServerReflectionRequest& request,
    grpc::reflection::v1alpha::ServerReflectionResponse* response) {
  auto context = ContextWithTimeout(absl::Seconds(5));
  if (!token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  auto stream = stub->ServerReflectionInfo(context.get());
  stream->Write(request);
  stream->WritesDone();
  stream->Read(response);
  return stream->Finish();
}

TEST_F(TokenTest, ReflectionOnlyForAuthenticatedCallers) {
  TestServer server(TokenConfig());
  ASSERT_TRUE(server.ok());
  auto channel = server.NewChannel();
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  EXPECT_EQ(AskReflection(channel, "", request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(response.list_services_response().service_size(), 0);
  EXPECT_EQ(AskReflection(channel, kBobToken, request, &response).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status status = AskReflection(channel, kAliceToken, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GE(response.list_services_response().service_size(), 3);

  // grpcurl's other questions: a file by name, with its dependencies, and
  // an unknown symbol.
  request.set_file_by_filename("fetchd/v1/fetch.proto");
  ASSERT_TRUE(AskReflection(channel, kAliceToken, request, &response).ok());
  EXPECT_GE(response.file_descriptor_response().file_descriptor_proto_size(),
            2);
  // Every listed service can be described (grpcurl describe).
  for (const char* service :
       {"fetchd.v1.Compute", "fetchd.v1.Fetch", "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection"}) {
    request.set_file_containing_symbol(service);
    ASSERT_TRUE(AskReflection(channel, kAliceToken, request, &response).ok());
    EXPECT_GE(response.file_descriptor_response().file_descriptor_proto_size(),
              1)
        << service;
  }
  request.set_file_containing_symbol("fetchd.v1.NoSuchThing");
  ASSERT_TRUE(AskReflection(channel, kAliceToken, request, &response).ok());
  EXPECT_EQ(response.error_response().error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST(ReflectionFlagTest, FalseTurnsReflectionOff) {
  rpc::ServerConfig config = TestConfig();
  config.reflection = false;
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  EXPECT_EQ(
      AskReflection(server.NewChannel(), "", request, &response).error_code(),
      grpc::StatusCode::UNIMPLEMENTED);
}

}  // namespace
}  // namespace fetchd::rpc
