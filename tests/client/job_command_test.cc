// fetchctl job as a user runs it: the real fetchctl binary against a real
// fetchd (in-process, with a real SQLite job store in a temp dir) and the
// real test origin.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/client.h"
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
using ::testing::StartsWith;

rpc::ServerConfig JobsConfig(const std::string& db) {
  rpc::ServerConfig config = ::fetchd::testing::TestConfig();
  config.jobs.store = absl::StrCat("sqlite:", db);
  config.jobs.poll_interval = absl::Milliseconds(50);
  return config;
}

class JobCommandTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ok()); }

  ProcessResult Fetchctl(std::vector<std::string> args) {
    args.insert(args.begin(), {FETCHCTL_PATH, "--addr=" + server_.address()});
    auto result = RunProcess(args, absl::Seconds(60));
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : ProcessResult{};
  }
  // Submits and returns the id it printed (one line).
  std::string Submit(std::vector<std::string> args) {
    args.insert(args.begin(), {"job", "submit"});
    ProcessResult r = Fetchctl(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(Lines(r.out).size(), 1u) << r.out;
    return Lines(r.out).empty() ? "" : Lines(r.out)[0];
  }
  std::string UrlsFile(const std::vector<std::string>& urls) {
    const std::string path = dir_.File("urls.txt");
    std::ofstream(path) << absl::StrJoin(urls, "\n") << "\n";
    return path;
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  ::fetchd::testing::TempDir dir_;
  ::fetchd::testing::Origin origin_;  // outlives fetchd's connections to it
  TestServer server_{JobsConfig(dir_.File("jobs.db"))};
};

TEST_F(JobCommandTest, SubmitWatchAndResultsOfABatchFromAUrlsFile) {
  constexpr int kItems = 7;
  std::vector<std::string> urls;
  for (int i = 0; i < kItems; ++i) {
    urls.push_back(origin_.Url(absl::StrCat("/bytes/", 10 + i)));
  }
  const std::string id =
      Submit({"fetch", "--urls_file=" + UrlsFile(urls), "--concurrency=2"});
  EXPECT_THAT(id, StartsWith("j_"));

  // Not a terminal: one line per event, the last one SUCCEEDED.
  ProcessResult watch = Fetchctl({"job", "watch", id});
  EXPECT_EQ(watch.exit_code, 0) << watch.err;
  const std::vector<std::string> events = Lines(watch.out);
  ASSERT_FALSE(events.empty());
  for (const std::string& line : events) EXPECT_THAT(line, StartsWith("seq "));
  EXPECT_THAT(events.back(), HasSubstr("SUCCEEDED  7/7 done, 0 failed, 91 B"));
  EXPECT_EQ(watch.out.find('\r'), std::string::npos);

  // --json: the same events, seq increasing.
  watch = Fetchctl({"--json", "job", "watch", id, "--from_seq=1"});
  EXPECT_EQ(watch.exit_code, 0) << watch.err;
  int64_t seq = 1;
  for (const std::string& line : Lines(watch.out)) {
    const auto event = nlohmann::json::parse(line);
    EXPECT_GT(event["seq"].get<int64_t>(), seq);
    seq = event["seq"].get<int64_t>();
  }
  EXPECT_EQ(nlohmann::json::parse(Lines(watch.out).back())["state"],
            "SUCCEEDED");

  ProcessResult results = Fetchctl({"job", "results", id});
  EXPECT_EQ(results.exit_code, 0) << results.err;
  const std::vector<std::string> lines = Lines(results.out);
  ASSERT_EQ(lines.size(), static_cast<size_t>(kItems)) << results.out;
  for (int i = 0; i < kItems; ++i) {
    EXPECT_THAT(lines[i],
                StartsWith(absl::StrCat("200 ", urls[i], "  ", 10 + i, " B")));
  }
  EXPECT_THAT(results.err, HasSubstr("7 results, 0 failed; job SUCCEEDED"));

  results = Fetchctl({"--json", "job", "results", id});
  EXPECT_EQ(results.exit_code, 0) << results.err;
  ASSERT_EQ(Lines(results.out).size(), static_cast<size_t>(kItems));
  for (int i = 0; i < kItems; ++i) {
    const auto json = nlohmann::json::parse(Lines(results.out)[i]);
    EXPECT_EQ(json["index"], i);
    EXPECT_EQ(json["url"], urls[i]);
    EXPECT_EQ(json["code"], "OK");
    EXPECT_EQ(json["bytes"], 10 + i);
  }

  const std::string out = dir_.File("bodies");
  std::filesystem::create_directories(out);
  results = Fetchctl({"job", "results", id, "--out_dir=" + out});
  EXPECT_EQ(results.exit_code, 0) << results.err;
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(out)) {
    names.push_back(entry.path().filename());
  }
  std::sort(names.begin(), names.end());
  EXPECT_THAT(names, ::testing::ElementsAre("0", "1", "2", "3", "4", "5", "6"));
  for (int i = 0; i < kItems; ++i) {
    EXPECT_EQ(Read(absl::StrCat(out, "/", i)), std::string(10 + i, 'x'));
  }
  EXPECT_EQ(origin_.requests(), kItems);  // results come from the store
}

TEST_F(JobCommandTest, ResultsPageThroughTheStoreInItemOrder) {
  // 6 bodies of 1 MB: more than ListResults' 4 MiB page, so two pages or
  // more; a failing item keeps its place.
  std::vector<std::string> args = {"fetch"};
  for (int i = 0; i < 6; ++i) args.push_back(origin_.Url("/bytes/1000000"));
  args.push_back(origin_.Url("/status/404"));
  const std::string id = Submit(args);
  EXPECT_EQ(Fetchctl({"job", "watch", id}).exit_code, 0);

  const std::string out = dir_.File("big");
  std::filesystem::create_directories(out);
  ProcessResult r =
      Fetchctl({"--json", "job", "results", id, "--out_dir=" + out});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 7u);
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(nlohmann::json::parse(lines[i])["index"], i);
  }
  EXPECT_EQ(nlohmann::json::parse(lines[6])["code"], "NOT_FOUND");
  EXPECT_EQ(nlohmann::json::parse(lines[6])["status"], 404);
  EXPECT_THAT(r.err, HasSubstr("7 results, 1 failed; job SUCCEEDED"));
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(std::filesystem::file_size(absl::StrCat(out, "/", i)), 1000000u);
  }
  EXPECT_FALSE(std::filesystem::exists(out + "/6"));  // failed: no body file
}

TEST_F(JobCommandTest, DropBodyStoresNoBodiesAndOutDirSaysSo) {
  const std::string id =
      Submit({"fetch", origin_.Url("/bytes/20"), "--drop_body"});
  EXPECT_EQ(Fetchctl({"job", "watch", id}).exit_code, 0);
  const std::string out = dir_.File("none");
  std::filesystem::create_directories(out);
  ProcessResult r = Fetchctl({"job", "results", id, "--out_dir=" + out});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("  20 B"));
  EXPECT_THAT(r.err, HasSubstr("1 bodies were not stored"));
  EXPECT_TRUE(std::filesystem::is_empty(out));
}

TEST_F(JobCommandTest, KeyGivesBackTheSameJobAndAnotherPayloadIsAlreadyExists) {
  const std::string url = origin_.Url("/bytes/3");
  const std::string first = Submit({"fetch", url, "--key=order-42"});
  ProcessResult again =
      Fetchctl({"job", "submit", "fetch", url, "--key=order-42"});
  EXPECT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(again.out, first + "\n");
  EXPECT_THAT(again.err, HasSubstr("--key=order-42"));

  ProcessResult other =
      Fetchctl({"job", "submit", "fetch", url, url, "--key=order-42"});
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_THAT(other.err, HasSubstr("ALREADY_EXISTS"));
  EXPECT_EQ(other.out, "");

  // --json prints the Job.
  ProcessResult json =
      Fetchctl({"--json", "job", "submit", "fetch", url, "--key=order-42"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto job = nlohmann::json::parse(json.out);
  EXPECT_EQ(job["id"], first);
  EXPECT_EQ(job["idempotency_key"], "order-42");
  EXPECT_EQ(job["kind"], "JOB_KIND_BATCH_FETCH");
}

TEST_F(JobCommandTest, GetCancelWatchListAndDelete) {
  const std::string slow = origin_.Url("/delay/20000");
  const std::string id = Submit(
      {"fetch", slow, slow, "--concurrency=1", "--ttl=1h", "--key=slow-one"});
  ProcessResult get = Fetchctl({"job", "get", id});
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("id        " + id + "\n"));
  EXPECT_THAT(get.out, HasSubstr("kind      batch_fetch\n"));
  EXPECT_THAT(get.out, ::testing::ContainsRegex("state +(QUEUED|RUNNING)\n"));
  EXPECT_THAT(get.out, HasSubstr("/2 done, 0 failed"));
  EXPECT_THAT(get.out, HasSubstr("key       slow-one"));
  EXPECT_THAT(get.out, ::testing::ContainsRegex("created +20[0-9-]+T"));

  get = Fetchctl({"--json", "job", "get", id});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  const auto job = nlohmann::json::parse(get.out);
  EXPECT_EQ(job["id"], id);
  EXPECT_EQ(job["counts"]["total"], "2");  // int64 as a string (proto JSON)

  ProcessResult cancel = Fetchctl({"job", "cancel", id});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.err;
  EXPECT_THAT(cancel.out, StartsWith(id + "  CANCELLED"));

  ProcessResult watch = Fetchctl({"job", "watch", id});
  EXPECT_EQ(watch.exit_code, 1);
  ASSERT_EQ(Lines(watch.out).size(), 1u) << watch.out;  // late: the end state
  EXPECT_THAT(watch.out, HasSubstr("CANCELLED"));
  EXPECT_THAT(watch.err, HasSubstr("job " + id + " CANCELLED: CANCELLED"));

  get = Fetchctl({"job", "get", id});
  EXPECT_THAT(get.out, HasSubstr("error     CANCELLED: "));
  EXPECT_THAT(get.out, HasSubstr("finished  "));

  const std::string done = Submit({"compute", "sqrt_sum", "4"});
  EXPECT_EQ(Fetchctl({"job", "watch", done}).exit_code, 0);
  ProcessResult list = Fetchctl({"job", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  ASSERT_EQ(Lines(list.out).size(), 2u) << list.out;
  EXPECT_THAT(Lines(list.out)[0], StartsWith(done + "  SUCCEEDED"));  // newest
  EXPECT_THAT(Lines(list.out)[1], StartsWith(id + "  CANCELLED"));
  EXPECT_THAT(list.err, HasSubstr("2 jobs"));
  list = Fetchctl({"job", "list", "--state=cancelled"});
  ASSERT_EQ(Lines(list.out).size(), 1u) << list.out;
  EXPECT_THAT(list.out, StartsWith(id));
  list = Fetchctl({"job", "list", "--state=RUNNING"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_EQ(list.out, "");
  list = Fetchctl({"--json", "job", "list", "--limit=1"});
  ASSERT_EQ(Lines(list.out).size(), 1u) << list.out;
  EXPECT_EQ(nlohmann::json::parse(list.out)["id"], done);

  ProcessResult del = Fetchctl({"job", "delete", id});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_EQ(del.out, "deleted " + id + "\n");
  get = Fetchctl({"job", "get", id});
  EXPECT_EQ(get.exit_code, 1);
  EXPECT_THAT(get.err, HasSubstr("NOT_FOUND"));
}

TEST_F(JobCommandTest, ListPagesPastOnePage) {
  // 55 jobs: more than List's default page of 50.
  Client client({.target = server_.address(), .timeout = absl::Seconds(10)});
  std::set<std::string> ids;
  for (int i = 0; i < 55; ++i) {
    v1::SubmitRequest request;
    request.mutable_compute()->mutable_sqrt_sum()->set_n(i + 1);
    auto response = client.SubmitJob(request);
    ASSERT_TRUE(response.ok()) << response.status();
    ids.insert(response->job().id());
  }
  ProcessResult list = Fetchctl({"job", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  std::set<std::string> listed;
  for (const std::string& line : Lines(list.out)) {
    listed.insert(line.substr(0, line.find(' ')));
  }
  EXPECT_EQ(listed, ids);
  EXPECT_EQ(Lines(list.out).size(), 55u);
  list = Fetchctl({"job", "list", "--limit=52"});
  EXPECT_EQ(Lines(list.out).size(), 52u);
}

TEST_F(JobCommandTest, ComputeAndPagesJobs) {
  std::string id = Submit({"compute", "count_primes", "100"});
  EXPECT_EQ(Fetchctl({"job", "watch", id}).exit_code, 0);
  ProcessResult r = Fetchctl({"job", "results", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, StartsWith("count_primes = 25  (queue "));
  r = Fetchctl({"--json", "job", "results", id});
  const auto value = nlohmann::json::parse(r.out);
  EXPECT_EQ(value["kernel"], "count_primes");
  EXPECT_EQ(value["value"], 25);
  EXPECT_EQ(value["index"], 0);

  // The compute command's flags work as well as positional arguments.
  id = Submit({"compute", "sha256_chain", "--data_hex=616263"});
  EXPECT_EQ(Fetchctl({"job", "watch", id}).exit_code, 0);
  r = Fetchctl({"--json", "job", "results", id});
  EXPECT_EQ(nlohmann::json::parse(r.out)["value"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

  id = Submit(
      {"pages", origin_.Url("/pn/jobwalk?last=3"), "--items_pointer=/items"});
  EXPECT_EQ(Fetchctl({"job", "watch", id}).exit_code, 0);
  r = Fetchctl({"job", "results", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const std::vector<std::string> lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(lines[i], StartsWith(absl::StrCat("page ", i, "  200 ")));
  }
  r = Fetchctl({"--json", "job", "results", id});
  ASSERT_EQ(Lines(r.out).size(), 3u);
  EXPECT_EQ(nlohmann::json::parse(Lines(r.out)[2])["index"], 2);
  EXPECT_FALSE(nlohmann::json::parse(Lines(r.out)[2])["resume_token"]
                   .get<std::string>()
                   .empty());
}

TEST_F(JobCommandTest, AFailedWalkWatchExitsOne) {
  // Page 2 answers 500: the walk fails.
  const std::string id =
      Submit({"pages", origin_.Url("/pn/failwalk?last=5&flaky=3"),
              "--items_pointer=/items"});
  ProcessResult watch = Fetchctl({"job", "watch", id});
  EXPECT_EQ(watch.exit_code, 1) << watch.out;
  EXPECT_THAT(Lines(watch.out).back(), HasSubstr("FAILED"));
  EXPECT_THAT(watch.err, HasSubstr("job " + id + " FAILED: "));
}

TEST_F(JobCommandTest, ResultsOfARunningJobStopAtWhatIsStored) {
  // Item 0 finishes at once, item 1 hangs: results prints one and returns.
  const std::string id =
      Submit({"fetch", origin_.Url("/bytes/4"), origin_.Url("/delay/20000"),
              "--concurrency=1"});
  Client client({.target = server_.address(), .timeout = absl::Seconds(10)});
  ASSERT_TRUE(::fetchd::testing::WaitFor(
      [&] {
        absl::StatusOr<v1::Job> job = client.GetJob(id);
        return job.ok() && job->counts().done() == 1;
      },
      ::fetchd::testing::kEventTimeout, "the first result"));
  ProcessResult r = Fetchctl({"job", "results", id});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(Lines(r.out).size(), 1u) << r.out;
  EXPECT_THAT(r.out, StartsWith("200 " + origin_.Url("/bytes/4")));
  EXPECT_THAT(r.err,
              HasSubstr("1 results, 0 failed; job RUNNING (more results to "
                        "come)"));

  // A watch cut by its deadline is an RPC error, with the seq to resume at.
  ProcessResult watch = Fetchctl({"--timeout=300ms", "job", "watch", id});
  EXPECT_EQ(watch.exit_code, 1);
  EXPECT_THAT(watch.err, HasSubstr("DEADLINE_EXCEEDED"));
  EXPECT_THAT(watch.err, HasSubstr("resume with: fetchctl job watch " + id +
                                   " --from_seq="));
  ASSERT_FALSE(Lines(watch.out).empty());
  EXPECT_THAT(Lines(watch.out).back(), HasSubstr("RUNNING  1/2 done"));
  EXPECT_EQ(Fetchctl({"job", "cancel", id}).exit_code, 0);
}

TEST_F(JobCommandTest, UnknownIdIsNotFound) {
  for (const char* sub : {"get", "watch", "results", "cancel", "delete"}) {
    ProcessResult r = Fetchctl({"job", sub, "j_doesnotexist"});
    EXPECT_EQ(r.exit_code, 1) << sub;
    EXPECT_THAT(r.err, HasSubstr("NOT_FOUND")) << sub;
  }
}

TEST_F(JobCommandTest, UsageErrorsAreOneLineAndExitTwo) {
  const std::string url = origin_.Url("/bytes/1");
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"job"},
           {"job", "frobnicate"},
           {"job", "get"},
           {"job", "get", "a", "b"},
           {"job", "list", "extra"},
           {"job", "list", "--state=bogus"},
           {"job", "list", "--limit=0"},
           {"job", "list", "--limit=many"},
           {"job", "list", "--no_such_flag=1"},
           {"job", "watch", "j_x", "--from_seq=-1"},
           {"job", "submit"},
           {"job", "submit", "nope", url},
           {"job", "submit", "fetch"},
           {"job", "submit", "fetch", "--urls_file=/nonexistent/list"},
           {"job", "submit", "fetch", url, "--process=nope"},
           {"job", "submit", "fetch", url, "--retries=-1"},
           {"job", "submit", "fetch", url, "--ttl=-1s"},
           {"job", "submit", "fetch", url, "--ttl=soon"},
           {"job", "submit", "fetch", url, "--webhook_secret=0123456789abcdef"},
           {"job", "submit", "fetch", url, "--webhook=http://127.0.0.1:1/",
            "--webhook_secret=0123456789abcdef", "--webhook_secret_id=a"},
           {"job", "submit", "pages"},
           {"job", "submit", "pages", url, "--strategy=x"},
           {"job", "submit", "compute"},
           {"job", "submit", "compute", "nope"},
           {"job", "submit", "compute", "sqrt_sum"},
           {"job", "submit", "compute", "sqrt_sum", "ten"},
           {"job", "submit", "compute", "sqrt_sum", "1", "2"},
           {"job", "results", "j_x", "--out_dir=/nonexistent/dir"}}) {
    ProcessResult r = Fetchctl(args);
    EXPECT_EQ(r.exit_code, 2) << ::testing::PrintToString(args) << r.err;
    EXPECT_EQ(Lines(r.err).size(), 1u)
        << ::testing::PrintToString(args) << r.err;
    EXPECT_THAT(r.err, StartsWith("fetchctl: "));
    EXPECT_EQ(r.out, "");
  }
  EXPECT_EQ(origin_.requests(), 0);
  ProcessResult list = Fetchctl({"job", "list"});
  EXPECT_EQ(list.out, "");  // nothing was submitted
}

TEST_F(JobCommandTest, WebhookFlagsReachTheJob) {
  // A receiver that is not there: the job still runs, and Get shows the
  // webhook and its delivery.
  const std::string id = Submit(
      {"fetch", origin_.Url("/bytes/5"), "--webhook=http://127.0.0.1:1/hook",
       "--webhook_secret=0123456789abcdef", "--webhook_progress"});
  EXPECT_EQ(Fetchctl({"job", "watch", id}).exit_code, 0);
  ProcessResult get = Fetchctl({"--json", "job", "get", id});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(nlohmann::json::parse(get.out)["webhook"]["url"],
            "http://127.0.0.1:1/hook");
  get = Fetchctl({"job", "get", id});
  EXPECT_THAT(get.out, HasSubstr("webhook   http://127.0.0.1:1/hook"));
}

TEST_F(JobCommandTest, OnATerminalWatchDrawsAProgressBar) {
  // script(1) gives fetchctl a pseudo-terminal for stdout.
  const std::string id = Submit({"fetch", origin_.Url("/bytes/8")});
  const std::string command = absl::StrCat(
      FETCHCTL_PATH, " --addr=", server_.address(), " job watch ", id);
  auto r = RunProcess({"/usr/bin/script", "-qec", command, "/dev/null"},
                      absl::Seconds(60));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 0) << r->out << r->err;
  EXPECT_THAT(r->out, HasSubstr("\r["));
  EXPECT_THAT(r->out, HasSubstr("] 1/1  0 failed"));
  EXPECT_THAT(r->out, HasSubstr("SUCCEEDED  1/1 done, 0 failed, 8 B"));
}

TEST(JobCommandNoJobsTest, AServerWithoutJobsSaysSo) {
  rpc::ServerConfig config = ::fetchd::testing::TestConfig();
  config.jobs.store = "";
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto r = RunProcess(
      {FETCHCTL_PATH, "--addr=" + server.address(), "job", "get", "j_x"},
      absl::Seconds(30));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->exit_code, 1);
  EXPECT_THAT(r->err, HasSubstr("UNIMPLEMENTED"));
}

}  // namespace
}  // namespace fetchd::client
