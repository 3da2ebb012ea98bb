// fetchctl as a user runs it: the real binary against a real fetchd.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tests/support/certs.h"
#include "tests/support/origin.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_server.h"

namespace fetchd::client {
namespace {

using ::fetchd::testing::Lines;
using ::fetchd::testing::ProcessResult;
using ::fetchd::testing::RunProcess;
using ::fetchd::testing::TestServer;
using ::testing::HasSubstr;

class FetchctlTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ok()); }
  ProcessResult Fetchctl(std::vector<std::string> args) {
    args.insert(args.begin(), {FETCHCTL_PATH, "--addr=" + server_.address()});
    auto result = RunProcess(args, absl::Seconds(30));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : ProcessResult{};
  }
  ::fetchd::testing::Origin origin_;  // outlives fetchd's connections to it
  TestServer server_;
};

TEST_F(FetchctlTest, ComputeSqrtSumHuman) {
  ProcessResult r = Fetchctl({"compute", "sqrt_sum", "--n=4"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sqrt_sum(n=4) = 4.146264369941973 "));
}

TEST_F(FetchctlTest, ComputeJsonIsOneObjectPerLine) {
  ProcessResult r =
      Fetchctl({"--json", "compute", "count_primes", "--limit=1000"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1);
  const auto json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["value"], 168);
  EXPECT_EQ(json["kernel"], "count_primes");

  r = Fetchctl({"--json", "compute", "sha256_chain", "--data_hex=616263"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["value"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(FetchctlTest, RpcFailurePrintsCodeAndMessageAndExitsOne) {
  ProcessResult r = Fetchctl({"compute", "sqrt_sum", "--n=-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("INVALID_ARGUMENT: sqrt_sum.n"));
  EXPECT_EQ(r.out, "");

  r = Fetchctl({"--timeout=200ms", "compute", "sqrt_sum", "--n=10000000000"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("DEADLINE_EXCEEDED"));
}

TEST_F(FetchctlTest, UsageErrorsExitTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {},
           {"compute"},
           {"compute", "sqrt_sum"},
           {"compute", "nope", "--n=1"},
           {"compute", "sha256_chain", "--data_hex=zz"},
           {"frobnicate"}}) {
    ProcessResult r = Fetchctl(args);
    EXPECT_EQ(r.exit_code, 2) << ::testing::PrintToString(args) << r.err;
    EXPECT_THAT(r.err, HasSubstr("Usage"));
  }
}

TEST(FetchctlHelpTest, HelpListsTheFlagsOfEveryCommand) {
  auto r = RunProcess({FETCHCTL_PATH, "--help"}, absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  for (const char* flag :
       {"--addr", "--timeout", "--json", "--n", "--limit", "--data_hex",
        "--service", "--urls_file", "--concurrency", "--retries",
        "--item_timeout", "--process", "--out_dir", "--batch_size"}) {
    EXPECT_THAT(r->out, HasSubstr(flag));
  }
}

TEST_F(FetchctlTest, HealthServing) {
  ProcessResult r = Fetchctl({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "SERVING\n");
}

TEST_F(FetchctlTest, FetchPrintsAJsonLinePerResultAndASummary) {
  ProcessResult r =
      Fetchctl({"--json", "fetch", origin_.Url("/html/title"),
                origin_.Url("/status/404"), "--process=html_title"});
  EXPECT_EQ(r.exit_code, 1) << r.err;  // one item failed
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  std::map<int, nlohmann::json> by_index;
  for (const auto& line : lines) {
    auto json = nlohmann::json::parse(line);
    by_index[json["index"].get<int>()] = json;
  }
  EXPECT_EQ(by_index[0]["code"], "OK");
  EXPECT_EQ(by_index[0]["status"], 200);
  EXPECT_EQ(by_index[0]["processed"], "Hello & welcome");
  EXPECT_EQ(by_index[0]["attempts"], 1);
  EXPECT_GT(by_index[0]["bytes"].get<int>(), 0);
  EXPECT_EQ(by_index[0]["url"], origin_.Url("/html/title"));
  EXPECT_EQ(by_index[1]["code"], "NOT_FOUND");
  EXPECT_EQ(by_index[1]["status"], 404);
  EXPECT_THAT(r.err, HasSubstr("1 ok, 1 failed in"));
}

TEST_F(FetchctlTest, FetchSplitsBatchesAndWritesBodiesAtomically) {
  const std::string dir = ::testing::TempDir() + "/fetchctl_out";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string list = ::testing::TempDir() + "/fetchctl_urls.txt";
  std::ofstream(list) << origin_.Url("/bytes/10") << "\n# a comment\n\n"
                      << origin_.Url("/json") << "\n"
                      << origin_.Url("/bytes/3") << "\n";
  ProcessResult r = Fetchctl(
      {"fetch", "--urls_file=" + list, "--out_dir=" + dir, "--batch_size=2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("3 ok, 0 failed"));
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename());
  }
  std::sort(names.begin(), names.end());
  EXPECT_THAT(names, ::testing::ElementsAre("0", "1", "2"));  // no temp files
  auto read = [&](const std::string& name) {
    std::ifstream in(dir + "/" + name);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(read("0"), std::string(10, 'x'));
  EXPECT_EQ(read("1"), R"({"a":{"b":[1,2,{"c":"x"}]},"n":null})");
  EXPECT_EQ(read("2"), "xxx");  // index 2 came from the second RPC
  EXPECT_EQ(origin_.requests(), 3);
}

TEST_F(FetchctlTest, FetchUsageErrorsExitTwo) {
  EXPECT_EQ(Fetchctl({"fetch"}).exit_code, 2);
  EXPECT_EQ(
      Fetchctl({"fetch", origin_.Url("/json"), "--process=nope"}).exit_code, 2);
  EXPECT_EQ(Fetchctl({"fetch", "--urls_file=/nonexistent/list"}).exit_code, 2);
  EXPECT_EQ(origin_.requests(), 0);
}

TEST_F(FetchctlTest, PagesPrintsEveryItemInOrder) {
  ProcessResult r = Fetchctl(
      {"--json", "pages", origin_.Url("/cursor/a?last=3"), "--strategy=cursor",
       "--param=cursor", "--items_pointer=/data/items", "--items"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 9u);
  EXPECT_EQ(nlohmann::json::parse(lines[0]),
            nlohmann::json::parse(R"({"page":0,"item":"1.1"})"));
  EXPECT_EQ(nlohmann::json::parse(lines[8]),
            nlohmann::json::parse(R"({"page":2,"item":"3.3"})"));
  EXPECT_THAT(r.err, HasSubstr("3 pages, 9 items in "));
}

TEST_F(FetchctlTest, PagesFailurePrintsTheTokenThatResumesTheWalk) {
  const std::string url = origin_.Url("/pn/b?last=5&flaky=3");
  ProcessResult r =
      Fetchctl({"--json", "pages", url, "--items_pointer=/items"});
  EXPECT_EQ(r.exit_code, 1);
  ASSERT_EQ(Lines(r.out).size(), 2u);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE: page 2 ("));
  const size_t at = r.err.find("--resume=");
  ASSERT_NE(at, std::string::npos) << r.err;
  const std::string token =
      r.err.substr(at + 9, r.err.find('\n', at) - (at + 9));
  EXPECT_EQ(nlohmann::json::parse(Lines(r.out)[1])["resume_token"], token);

  r = Fetchctl({"--json", "pages", url, "--items_pointer=/items", "--retries=2",
                "--resume=" + token});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 3u);  // pages 2, 3 and 4: none lost or repeated
  EXPECT_EQ(nlohmann::json::parse(lines[0])["index"], 2);
  EXPECT_EQ(nlohmann::json::parse(lines[0])["url"], url + "&page=3");
  EXPECT_EQ(nlohmann::json::parse(lines[2])["index"], 4);
}

TEST_F(FetchctlTest, PagesInterruptedPrintsTheResumeToken) {
  auto child = ::fetchd::testing::Subprocess::Start(
      {FETCHCTL_PATH, "--addr=" + server_.address(), "--json", "pages",
       origin_.Url("/pn/c?last=100000&delay=20"), "--prefetch=1"});
  ASSERT_TRUE(child.ok()) << child.status();
  ASSERT_TRUE(::fetchd::testing::WaitFor(
      [&] { return origin_.arrivals("c").size() >= 3; }, absl::Seconds(20),
      "a few pages"));
  (*child)->Signal(SIGINT);
  absl::StatusOr<ProcessResult> r = (*child)->Wait(absl::Seconds(20));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 130) << r->err;
  EXPECT_THAT(r->err, HasSubstr("resume with: --resume="));
  const std::vector<std::string> lines = Lines(r->out);
  ASSERT_GE(lines.size(), 2u);
  const auto last = nlohmann::json::parse(lines.back());
  EXPECT_THAT(r->err, HasSubstr(last["resume_token"].get<std::string>()));
}

TEST_F(FetchctlTest, PagesStoppedAtMaxPagesPrintsTheResumeToken) {
  ProcessResult r = Fetchctl({"--json", "pages", origin_.Url("/pn/d?last=5"),
                              "--items_pointer=/items", "--max_pages=2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 2u);
  const auto last = nlohmann::json::parse(lines.back());
  EXPECT_THAT(r.err, HasSubstr("resume with: --resume=" +
                               last["resume_token"].get<std::string>()));
}

TEST_F(FetchctlTest, PagesUsageErrorsExitTwo) {
  EXPECT_EQ(Fetchctl({"pages"}).exit_code, 2);
  EXPECT_EQ(
      Fetchctl({"pages", "http://127.0.0.1:1/", "--strategy=x"}).exit_code, 2);
  EXPECT_EQ(
      Fetchctl({"pages", "http://127.0.0.1:1/", "--stop_status=x"}).exit_code,
      2);
}

TEST(FetchctlNoServerTest, UnreachableServerFailsWithinTimeout) {
  // Port 1 on loopback: nothing listens there.
  auto r = RunProcess(
      {FETCHCTL_PATH, "--addr=127.0.0.1:1", "--timeout=500ms", "health"},
      absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_THAT(r->err, ::testing::AnyOf(HasSubstr("UNAVAILABLE"),
                                       HasSubstr("DEADLINE_EXCEEDED")));
}

// --token_file, FETCHD_TOKEN, --tls_ca, --tls_cert and --tls_key against a
// fetchd that asks for a token and (below) a client certificate.
class FetchctlSecurityTest : public ::testing::Test {
 protected:
  static constexpr char kToken[] = "fetchctl-token-0123456789abcdef";

  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_.File(name);
    EXPECT_TRUE(::fetchd::testing::WriteFileAtomically(path, text).ok());
    return path;
  }
  rpc::ServerConfig Config(bool tls) {
    rpc::ServerConfig config = ::fetchd::testing::TestConfig();
    config.auth_tokens_file =
        Write("tokens", absl::StrCat("ops ", kToken, "\n"));
    if (tls) {
      const auto server_cert =
          ca_.Issue({.common_name = "fetchd", .ip_addresses = {"127.0.0.1"}});
      config.tls = {.cert = Write("server.pem", server_cert.cert_pem),
                    .key = Write("server.key", server_cert.key_pem),
                    .client_ca = Write("clients.pem", client_ca_.cert_pem())};
    }
    return config;
  }
  ProcessResult Run(const std::vector<std::string>& argv) {
    auto result = RunProcess(argv, absl::Seconds(30));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : ProcessResult{};
  }

  ::fetchd::testing::TempDir dir_;
  ::fetchd::testing::TestCa ca_{"server CA"};
  ::fetchd::testing::TestCa client_ca_{"client CA"};
};

TEST_F(FetchctlSecurityTest, TokenFromAFileOrTheEnvironment) {
  TestServer server(Config(/*tls=*/false));
  ASSERT_TRUE(server.ok());
  const std::string addr = "--addr=" + server.address();
  const std::string token_file = Write("my-token", absl::StrCat(kToken, "\n"));
  ProcessResult r = Run({FETCHCTL_PATH, addr, "--token_file=" + token_file,
                         "compute", "sqrt_sum", "--n=4"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sqrt_sum(n=4)"));
  r = Run({"/usr/bin/env", absl::StrCat("FETCHD_TOKEN=", kToken), FETCHCTL_PATH,
           addr, "compute", "sqrt_sum", "--n=4"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = Run({"/usr/bin/env", "-u", "FETCHD_TOKEN", FETCHCTL_PATH, addr, "compute",
           "sqrt_sum", "--n=4"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  r = Run({"/usr/bin/env", "FETCHD_TOKEN=wrong-token-0123456789", FETCHCTL_PATH,
           addr, "compute", "sqrt_sum", "--n=4"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  // Health needs no token.
  r = Run(
      {"/usr/bin/env", "-u", "FETCHD_TOKEN", FETCHCTL_PATH, addr, "health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("SERVING"));
  r = Run(
      {FETCHCTL_PATH, addr, "--token_file=" + dir_.File("missing"), "health"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--token_file"));
}

TEST_F(FetchctlSecurityTest, MutualTls) {
  TestServer server(Config(/*tls=*/true));
  ASSERT_TRUE(server.ok());
  const auto client =
      client_ca_.Issue({.common_name = "fetchctl", .client = true});
  const std::vector<std::string> base = {
      FETCHCTL_PATH, "--addr=" + server.address(),
      "--tls_ca=" + Write("ca.pem", ca_.cert_pem()),
      "--token_file=" + Write("my-token", kToken)};
  const std::string cert = "--tls_cert=" + Write("client.pem", client.cert_pem);
  const std::string key = "--tls_key=" + Write("client.key", client.key_pem);
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> argv = base;
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  };
  ProcessResult r = Run(with({cert, key, "compute", "sqrt_sum", "--n=4"}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("sqrt_sum(n=4)"));
  r = Run(with({cert, key, "health"}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // No client certificate: the handshake fails.
  r = Run(with({"--timeout=2s", "compute", "sqrt_sum", "--n=4"}));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAVAILABLE"));
  // Half a key pair is a usage error.
  r = Run(with({cert, "compute", "sqrt_sum", "--n=4"}));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--tls_cert and --tls_key go together"));
}

}  // namespace
}  // namespace fetchd::client
