// Upstream TLS through the real engine: local HTTPS origins whose CA is made
// at test time (tests/support/certs.h), verification always on,
// --upstream_ca_file, TLS failures as UNAVAILABLE naming the reason, and
// HTTP/2 multiplexing against an h2 origin (nghttpd).
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/fetch/fetch.h"
#include "tests/support/certs.h"
#include "tests/support/recording_origin.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_server.h"

namespace fetchd::fetch {
namespace {

using ::fetchd::testing::CertAndKey;
using ::fetchd::testing::CertOptions;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::RecordingOrigin;
using ::fetchd::testing::TempDir;
using ::fetchd::testing::TestCa;
using ::fetchd::testing::WaitFor;
using ::fetchd::testing::WriteFileAtomically;
using ::testing::HasSubstr;

std::vector<FetchResult> RunAll(Engine& engine, std::vector<FetchSpec> specs) {
  std::vector<FetchResult> results(specs.size());
  absl::Notification done;
  engine.Submit(
      std::move(specs), {.max_concurrency = 128},
      [&](size_t i, FetchResult result) { results[i] = std::move(result); },
      [&] { done.Notify(); });
  EXPECT_TRUE(done.WaitForNotificationWithTimeout(kEventTimeout));
  return results;
}

FetchResult FetchOne(Engine& engine, const std::string& url) {
  FetchSpec spec;
  spec.url = url;
  spec.retry.max_attempts = 3;  // a certificate problem is not retried
  spec.retry.initial_backoff = absl::Milliseconds(10);
  return std::move(RunAll(engine, {spec})[0]);
}

CertOptions Loopback() {
  CertOptions options;
  options.dns_names = {"localhost"};
  options.ip_addresses = {"127.0.0.1"};
  return options;
}

class UpstreamTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(WriteFileAtomically(ca_file_, ca_.cert_pem()).ok());
  }

  std::unique_ptr<Engine> Start(const std::string& ca_file) {
    Engine::Options options;
    options.upstream_ca_file = ca_file;
    auto engine = Engine::Start(std::move(options));
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }

  TestCa ca_;
  TempDir dir_;
  const std::string ca_file_ = dir_.File("ca.pem");
};

TEST_F(UpstreamTlsTest, TheRightCaSucceeds) {
  RecordingOrigin origin(ca_.Issue(Loopback()));
  ASSERT_TRUE(origin.ok());
  auto engine = Start(ca_file_);
  ASSERT_NE(engine, nullptr);
  FetchResult r = FetchOne(*engine, origin.Url("/ok"));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.body, "ok");
  EXPECT_GT(r.timings.tls, absl::ZeroDuration());
  EXPECT_EQ(origin.seen().size(), 1u);
}

TEST_F(UpstreamTlsTest, AnUnknownCaFailsUnavailableNamingTheReason) {
  RecordingOrigin origin(ca_.Issue(Loopback()));
  ASSERT_TRUE(origin.ok());
  // The system bundle alone, and a bundle of another CA: neither trusts it.
  TestCa other("another test CA");
  const std::string other_file = dir_.File("other.pem");
  ASSERT_TRUE(WriteFileAtomically(other_file, other.cert_pem()).ok());
  for (const std::string& ca_file : {std::string(), other_file}) {
    SCOPED_TRACE(ca_file);
    auto engine = Start(ca_file);
    ASSERT_NE(engine, nullptr);
    FetchResult r = FetchOne(*engine, origin.Url("/ok"));
    EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(r.status.message(), HasSubstr("SSL certificate problem"));
    EXPECT_THAT(r.status.message(), HasSubstr("local issuer certificate"));
    EXPECT_EQ(r.attempts, 1);
  }
  EXPECT_TRUE(origin.seen().empty());  // no request went out
}

TEST_F(UpstreamTlsTest, AWrongHostNameFailsUnavailableNamingTheReason) {
  CertOptions options;
  options.common_name = "other.example";
  options.dns_names = {"other.example"};
  RecordingOrigin origin(ca_.Issue(options));
  ASSERT_TRUE(origin.ok());
  auto engine = Start(ca_file_);
  ASSERT_NE(engine, nullptr);
  FetchResult r = FetchOne(*engine, origin.Url("/ok"));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status.message(),
              HasSubstr("no alternative certificate subject name matches"));
  EXPECT_EQ(r.attempts, 1);
  EXPECT_TRUE(origin.seen().empty());
}

TEST_F(UpstreamTlsTest, AnExpiredCertificateFailsUnavailableNamingTheReason) {
  CertOptions options = Loopback();
  options.not_before = -absl::Hours(48);
  options.not_after = -absl::Hours(1);
  RecordingOrigin origin(ca_.Issue(options));
  ASSERT_TRUE(origin.ok());
  auto engine = Start(ca_file_);
  ASSERT_NE(engine, nullptr);
  FetchResult r = FetchOne(*engine, origin.Url("/ok"));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status.message(), HasSubstr("certificate has expired"));
  EXPECT_TRUE(origin.seen().empty());
}

TEST_F(UpstreamTlsTest, ABadCaFileIsAStartErrorNamingTheFlag) {
  const std::string garbage = dir_.File("garbage.pem");
  ASSERT_TRUE(WriteFileAtomically(garbage, "not a certificate\n").ok());
  const std::string broken = dir_.File("broken.pem");
  ASSERT_TRUE(WriteFileAtomically(broken,
                                  "-----BEGIN CERTIFICATE-----\nAAAA\n"
                                  "-----END CERTIFICATE-----\n")
                  .ok());
  for (const std::string& path :
       {dir_.File("missing.pem"), garbage, broken, dir_.path()}) {
    SCOPED_TRACE(path);
    Engine::Options options;
    options.upstream_ca_file = path;
    auto engine = Engine::Start(std::move(options));
    ASSERT_FALSE(engine.ok());
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(engine.status().message(),
                HasSubstr("--upstream_ca_file=" + path));
  }
}

// A free loopback port for a server that cannot bind port 0 itself.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  close(fd);
  return ntohs(addr.sin_port);
}

bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// 100 concurrent items to one h2 origin share one connection: curl's own
// count of the connections it opened (Engine::Stats::connections).
TEST_F(UpstreamTlsTest, Http2MultiplexesOneHostOnOneConnection) {
  constexpr char kNghttpd[] = "/usr/sbin/nghttpd";
  ASSERT_EQ(access(kNghttpd, X_OK), 0)
      << kNghttpd << " is missing: scripts/deps.sh test installs "
      << "nghttp2-server";
  const CertAndKey leaf = ca_.Issue(Loopback());
  ASSERT_TRUE(WriteFileAtomically(dir_.File("leaf.pem"), leaf.cert_pem).ok());
  ASSERT_TRUE(WriteFileAtomically(dir_.File("leaf.key"), leaf.key_pem).ok());
  ASSERT_TRUE(WriteFileAtomically(dir_.File("page.txt"), "h2 page").ok());
  int port = 0;
  std::unique_ptr<::fetchd::testing::Subprocess> server;
  // The port is free when picked, but another process may take it first.
  for (int tries = 0; tries < 5 && server == nullptr; ++tries) {
    port = FreePort();
    auto started = ::fetchd::testing::Subprocess::Start(
        {kNghttpd, "--address=127.0.0.1", "--htdocs=" + dir_.path(),
         absl::StrCat(port), dir_.File("leaf.key"), dir_.File("leaf.pem")});
    ASSERT_TRUE(started.ok()) << started.status();
    if (WaitFor([&] { return Accepts(port); }, absl::Seconds(10),
                "nghttpd listening")) {
      server = *std::move(started);
    }
  }
  ASSERT_NE(server, nullptr);
  auto engine = Start(ca_file_);
  ASSERT_NE(engine, nullptr);
  const int64_t before = engine->stats().connections;
  std::vector<FetchSpec> specs(100);
  for (FetchSpec& spec : specs) {
    spec.url = absl::StrCat("https://127.0.0.1:", port, "/page.txt");
  }
  auto results = RunAll(*engine, std::move(specs));
  for (const FetchResult& r : results) {
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.body, "h2 page");
    EXPECT_EQ(r.http_version, 20);
  }
  EXPECT_EQ(engine->stats().connections - before, 1);

  // The count is real: concurrent items to an HTTP/1.1 origin (cpp-httplib
  // speaks no h2) need a connection each.
  RecordingOrigin h1(leaf);
  ASSERT_TRUE(h1.ok());
  const int64_t before_h1 = engine->stats().connections;
  std::vector<FetchSpec> h1_specs(6);  // within the origin's 8 threads
  for (FetchSpec& spec : h1_specs) spec.url = h1.Url("/ok");
  for (const FetchResult& r : RunAll(*engine, std::move(h1_specs))) {
    ASSERT_TRUE(r.status.ok()) << r.status;
    EXPECT_EQ(r.http_version, 11);
  }
  EXPECT_GT(engine->stats().connections - before_h1, 1);
}

}  // namespace
}  // namespace fetchd::fetch
