// fetchctl as a user runs it: the real binary against a real fetchd.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>

#include "absl/strings/match.h"
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
using ::testing::Not;

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
  // Within a command: the message, then that command's usage.
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"compute"},
           {"compute", "sqrt_sum"},
           {"compute", "nope", "--n=1"},
           {"compute", "sha256_chain", "--data_hex=zz"}}) {
    ProcessResult r = Fetchctl(args);
    EXPECT_EQ(r.exit_code, 2) << ::testing::PrintToString(args) << r.err;
    EXPECT_THAT(r.err, HasSubstr("Usage: fetchctl compute sqrt_sum N"));
    EXPECT_THAT(r.err, HasSubstr("fetchctl help compute"));
    EXPECT_THAT(r.err, Not(HasSubstr("fetchctl pages")));  // compute's only
  }
}

// A run that must fail with one line on stderr and exit code 2.
void ExpectOneLineUsageError(const std::vector<std::string>& args,
                             const std::string& says) {
  std::vector<std::string> argv = {FETCHCTL_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = RunProcess(argv, absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 2) << ::testing::PrintToString(args) << r->err;
  EXPECT_EQ(Lines(r->err).size(), 1u) << r->err;
  EXPECT_THAT(r->err, HasSubstr(says));
  EXPECT_EQ(r->out, "");
}

TEST(FetchctlHelpTest, UnknownCommandsAndFlagsAreOneLineAndExitTwo) {
  ExpectOneLineUsageError(
      {}, "no command given (commands: compute, health, fetch, pages, job");
  ExpectOneLineUsageError({"frobnicate"}, "unknown command \"frobnicate\"");
  ExpectOneLineUsageError({"help", "frobnicate"},
                          "unknown command \"frobnicate\"");
  ExpectOneLineUsageError({"frobnicate", "--help"},
                          "unknown command \"frobnicate\"");
  ExpectOneLineUsageError({"help", "fetch", "pages"}, "one COMMAND at most");
  ExpectOneLineUsageError({"--bogus", "health"}, "unknown flag --bogus");
  ExpectOneLineUsageError({"fetch", "--concurrency=many"}, "--concurrency");
}

// What each command's help must name: its own flags.
const std::map<std::string, std::vector<std::string>>& CommandFlags() {
  static const auto* flags =
      new std::map<std::string, std::vector<std::string>>{
          {"compute",
           {"--n=", "--limit=", "--data=", "--data_hex=", "--rounds="}},
          {"health", {"--service="}},
          {"fetch",
           {"--urls_file=", "--batch_size=", "--concurrency=", "--retries=",
            "--item_timeout=", "--process=", "--out_dir=", "--stream="}},
          {"pages",
           {"--strategy=", "--param=", "--cursor_pointer=", "--items_pointer=",
            "--items ", "--max_pages=", "--prefetch=", "--resume=",
            "--stop_status=", "--retries=", "--item_timeout=", "--process="}},
          {"job",
           {"--key=", "--ttl=", "--webhook=", "--webhook_secret=",
            "--webhook_secret_id=", "--webhook_progress", "--drop_body",
            "--from_seq=", "--out_dir=", "--state=", "--limit="}},
      };
  return *flags;
}

const std::vector<std::string>& GlobalFlags() {
  static const auto* flags = new std::vector<std::string>{
      "--addr=",     "--timeout=", "--json",       "--tls_ca=",
      "--tls_cert=", "--tls_key=", "--token_file="};
  return *flags;
}

// Not Abseil's listing: no source paths, no "Flags from", none of absl's
// own flags.
void ExpectFetchctlsOwnText(const std::string& text) {
  EXPECT_THAT(text, Not(HasSubstr(".cc")));
  EXPECT_THAT(text, Not(HasSubstr("Flags from")));
  EXPECT_THAT(text, Not(HasSubstr("--flagfile")));
  EXPECT_THAT(text, Not(HasSubstr("--helpfull")));
  // Every flag of fetchctl's sources is in a command's section.
  EXPECT_THAT(text, Not(HasSubstr("Other flags")));
}

TEST(FetchctlHelpTest, HelpGroupsTheFlagsByCommandWithExamples) {
  for (const char* flag : {"--help", "-h", "--helpfull", "--helpshort"}) {
    auto r = RunProcess({FETCHCTL_PATH, flag}, absl::Seconds(30));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->exit_code, 0) << flag << r->err;
    EXPECT_EQ(r->err, "");
    const std::string& text = r->out;
    ExpectFetchctlsOwnText(text);
    size_t section = text.find("Global flags");
    ASSERT_NE(section, std::string::npos) << text;
    for (const std::string& global : GlobalFlags()) {
      EXPECT_NE(text.find("  " + global, section), std::string::npos) << global;
    }
    // Each command's section, in order: its flags, then examples of it.
    for (const std::string command :
         {"compute", "health", "fetch", "pages", "job"}) {
      const size_t at = text.find("\n" + command + ": ", section);
      ASSERT_NE(at, std::string::npos) << command;
      const size_t examples = text.find("\nExamples:\n", at);
      ASSERT_NE(examples, std::string::npos) << command;
      const std::string part = text.substr(at, examples - at);
      for (const std::string& flag : CommandFlags().at(command)) {
        EXPECT_THAT(part, HasSubstr("  " + flag)) << command;
      }
      const size_t end = text.find("\n\n", examples + 1);
      EXPECT_THAT(text.substr(examples, end - examples),
                  HasSubstr("fetchctl " + command))
          << command << ": examples of it follow";
      section = examples;
    }
    EXPECT_THAT(text, HasSubstr("Exit codes: 0 success"));
  }
}

TEST(FetchctlHelpTest, CommandHelpShowsThatCommandsFlags) {
  for (const auto& [command, flags] : CommandFlags()) {
    auto by_help =
        RunProcess({FETCHCTL_PATH, "help", command}, absl::Seconds(30));
    // "--addr VALUE": the value is not taken for the command.
    auto by_flag =
        RunProcess({FETCHCTL_PATH, "--addr", "127.0.0.1:1", command, "--help"},
                   absl::Seconds(30));
    ASSERT_TRUE(by_help.ok() && by_flag.ok());
    EXPECT_EQ(by_help->exit_code, 0) << by_help->err;
    EXPECT_EQ(by_flag->exit_code, 0) << by_flag->err;
    EXPECT_EQ(by_help->out, by_flag->out) << command;
    const std::string& text = by_help->out;
    ExpectFetchctlsOwnText(text);
    EXPECT_TRUE(absl::StartsWith(text, command + ": ")) << text;
    const size_t examples = text.find("\nExamples:\n  ");
    ASSERT_NE(examples, std::string::npos) << text;
    const size_t end = text.find("\n\n", examples + 1);
    EXPECT_THAT(text.substr(examples, end - examples),
                HasSubstr("fetchctl " + command));
    for (const std::string& flag : flags) {
      EXPECT_THAT(text, HasSubstr("  " + flag)) << command;
    }
    for (const std::string& global : GlobalFlags()) {
      EXPECT_THAT(text, HasSubstr("  " + global)) << command;
    }
    // Another command's flags are not listed (those it shares aside).
    for (const auto& [other, other_flags] : CommandFlags()) {
      for (const std::string& flag : other_flags) {
        if (std::find(flags.begin(), flags.end(), flag) != flags.end()) {
          continue;
        }
        EXPECT_THAT(text, Not(HasSubstr("\n  " + flag)))
            << command << " shows " << other << "'s " << flag;
      }
    }
  }
  // A command's -h wins over running it: nothing is sent.
  auto r = RunProcess({FETCHCTL_PATH, "--addr=127.0.0.1:1", "health", "-h"},
                      absl::Seconds(30));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_TRUE(absl::StartsWith(r->out, "health: ")) << r->out;
}

TEST(FetchctlHelpTest, VersionIsOneLine) {
  auto r = RunProcess({FETCHCTL_PATH, "--version"}, absl::Seconds(30));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 0);
  EXPECT_THAT(r->out, ::testing::MatchesRegex("fetchctl [0-9.]+\n"));
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

TEST_F(FetchctlTest, FetchStreamedOrBatchedPrintsTheSameResults) {
  const std::string list = ::testing::TempDir() + "/fetchctl_modes.txt";
  {
    std::ofstream out(list);
    for (int i = 0; i < 25; ++i) {
      out << origin_.Url(i % 5 == 4 ? "/status/404"
                                    : "/bytes/" + std::to_string(i))
          << "\n";
    }
  }
  // Per mode: the lines by index, without the time (it differs).
  auto run = [&](const std::string& mode) {
    ProcessResult r = Fetchctl({"--json", "fetch", "--urls_file=" + list,
                                "--batch_size=10", "--stream=" + mode});
    EXPECT_EQ(r.exit_code, 1) << mode << r.err;  // 5 items are 404
    EXPECT_THAT(r.err, HasSubstr("20 ok, 5 failed")) << mode;
    std::vector<int> order;
    std::map<int, nlohmann::json> by_index;
    for (const std::string& line : Lines(r.out)) {
      auto json = nlohmann::json::parse(line);
      json.erase("elapsed_ms");
      order.push_back(json["index"].get<int>());
      by_index[order.back()] = json;
    }
    return std::pair(order, by_index);
  };
  const auto [batch_order, batched] = run("never");
  const auto [stream_order, streamed] = run("always");
  const auto [auto_order, automatic] = run("auto");  // no terminal: batched
  ASSERT_EQ(batched.size(), 25u);
  EXPECT_EQ(batched, streamed);
  EXPECT_EQ(batched, automatic);
  // Batched results come in item order, across the three RPCs too.
  std::vector<int> in_order(25);
  std::iota(in_order.begin(), in_order.end(), 0);
  EXPECT_EQ(batch_order, in_order);
  EXPECT_EQ(auto_order, in_order);
  EXPECT_EQ(batched.at(4)["code"], "NOT_FOUND");
  EXPECT_EQ(batched.at(3)["bytes"], 3);
  EXPECT_EQ(batched.at(24)["url"], origin_.Url("/status/404"));
  EXPECT_EQ(origin_.requests(), 75);

  ProcessResult bad = Fetchctl({"fetch", origin_.Url("/json"), "--stream=x"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err,
              HasSubstr("--stream=x is not one of auto, always, never"));
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
