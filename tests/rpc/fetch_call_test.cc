// Fetch.BatchFetch and Fetch.StreamBatchFetch through a real fetchd on a
// loopback port, against the real test origin.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

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
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

constexpr int kOk = 0;
constexpr int kDeadline = static_cast<int>(absl::StatusCode::kDeadlineExceeded);
constexpr int kNotFound = static_cast<int>(absl::StatusCode::kNotFound);
constexpr int kInvalid = static_cast<int>(absl::StatusCode::kInvalidArgument);
constexpr int kExhausted =
    static_cast<int>(absl::StatusCode::kResourceExhausted);
constexpr int kPrecondition =
    static_cast<int>(absl::StatusCode::kFailedPrecondition);

class FetchCallTest : public ::testing::Test {
 protected:
  explicit FetchCallTest(ServerConfig config = TestConfig())
      : server_(config) {}
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    stub_ = v1::Fetch::NewStub(server_.NewChannel());
  }
  v1::FetchItem* Add(v1::BatchFetchRequest& req, const std::string& path) {
    v1::FetchItem* item = req.add_items();
    item->set_url(path.rfind("http", 0) == 0 ? path : origin_.Url(path));
    return item;
  }
  grpc::Status Batch(const v1::BatchFetchRequest& req,
                     v1::BatchFetchResponse* resp,
                     absl::Duration timeout = kEventTimeout) {
    return stub_->BatchFetch(ContextWithTimeout(timeout).get(), req, resp);
  }
  // Reads the whole stream; returns its status.
  grpc::Status Stream(const v1::BatchFetchRequest& req,
                      std::vector<v1::FetchResult>* out) {
    auto context = ContextWithTimeout(kEventTimeout);
    auto reader = stub_->StreamBatchFetch(context.get(), AsStream(req));
    v1::StreamBatchFetchResponse r;
    while (reader->Read(&r)) out->push_back(r.result());
    return reader->Finish();
  }

  Origin origin_;
  TestServer server_;
  std::unique_ptr<v1::Fetch::Stub> stub_;
};

TEST_F(FetchCallTest, BatchFetchAnswersEveryItemInRequestOrder) {
  v1::BatchFetchRequest req;
  Add(req, "/json");
  Add(req, "/status/404");
  Add(req, "/html/title")->mutable_process()->mutable_html_title();
  req.add_response_headers("Content-Type");
  v1::BatchFetchResponse resp;
  grpc::Status status = Batch(req, &resp);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(resp.results_size(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(resp.results(i).index(), i);
  EXPECT_EQ(resp.results(0).error().code(), kOk);
  EXPECT_EQ(resp.results(0).http_status(), 200);
  EXPECT_EQ(resp.results(0).body(), R"({"a":{"b":[1,2,{"c":"x"}]},"n":null})");
  EXPECT_EQ(resp.results(0).body_bytes(), 36);
  EXPECT_EQ(resp.results(0).url(), origin_.Url("/json"));
  ASSERT_EQ(resp.results(0).headers_size(), 1);
  EXPECT_EQ(resp.results(0).headers(0).name(), "content-type");
  EXPECT_EQ(resp.results(0).attempts(), 1);
  EXPECT_GT(resp.results(0).timings().total_us(), 0);
  const v1::Timings& t = resp.results(0).timings();
  EXPECT_GE(t.total_us(), t.first_byte_us());
  // dns, connect and tls are phases before the first byte.
  EXPECT_LE(t.dns_us() + t.connect_us() + t.tls_us(), t.first_byte_us());
  EXPECT_EQ(resp.results(1).error().code(), kNotFound);
  EXPECT_EQ(resp.results(1).http_status(), 404);
  EXPECT_EQ(resp.results(2).processed(), "Hello & welcome");
}

TEST_F(FetchCallTest, StreamBatchFetchSendsEachResultAsItCompletes) {
  v1::BatchFetchRequest req;
  Add(req, "/delay/300");
  Add(req, "/json");
  req.set_max_concurrency(2);
  std::vector<v1::FetchResult> results;
  grpc::Status status = Stream(req, &results);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].index(), 1u);  // the fast one first
  EXPECT_EQ(results[1].index(), 0u);
  EXPECT_EQ(results[1].body(), "delayed");
  // The origin's 300 ms are in the delayed item's timings.
  EXPECT_GE(results[1].timings().first_byte_us(), 300'000);
  EXPECT_GE(results[1].timings().total_us(),
            results[1].timings().first_byte_us());
}

TEST_F(FetchCallTest, RequestLevelErrorsNameTheFieldAndTheLimit) {
  struct Case {
    v1::BatchFetchRequest req;
    grpc::StatusCode code;
    const char* text;
  };
  std::vector<Case> cases;
  cases.push_back({v1::BatchFetchRequest(), grpc::INVALID_ARGUMENT, "items"});
  v1::BatchFetchRequest r;
  Add(r, "/json");
  r.set_max_concurrency(5000);
  cases.push_back({r, grpc::INVALID_ARGUMENT, "--max_concurrency"});
  r.set_max_concurrency(0);
  r.mutable_retry()->set_max_attempts(99);
  cases.push_back({r, grpc::INVALID_ARGUMENT, "retry.max_attempts"});
  r.clear_retry();
  r.set_max_body_bytes(int64_t{1} << 40);
  cases.push_back({r, grpc::INVALID_ARGUMENT, "--max_body_bytes"});
  r.set_max_body_bytes(0);
  r.set_max_redirects(99);
  cases.push_back({r, grpc::INVALID_ARGUMENT, "--max_redirects"});
  for (const Case& c : cases) {
    v1::BatchFetchResponse resp;
    grpc::Status status = Batch(c.req, &resp);
    EXPECT_EQ(status.error_code(), c.code) << c.text;
    EXPECT_THAT(status.error_message(), HasSubstr(c.text));
    std::vector<v1::FetchResult> streamed;
    EXPECT_EQ(Stream(c.req, &streamed).error_code(), c.code) << c.text;
  }
  EXPECT_EQ(origin_.requests(), 0);
}

class SmallLimitsTest : public FetchCallTest {
 protected:
  static ServerConfig Config() {
    ServerConfig c = TestConfig();
    c.fetch.max_batch_items = 3;
    c.fetch.max_response_bytes = 1500;
    c.fetch.process_inline_max_bytes = 10;  // process everything on the pool
    return c;
  }
  SmallLimitsTest() : FetchCallTest(Config()) {}
};

TEST_F(SmallLimitsTest, TooManyItemsIsResourceExhausted) {
  v1::BatchFetchRequest req;
  for (int i = 0; i < 4; ++i) Add(req, "/json");
  v1::BatchFetchResponse resp;
  grpc::Status status = Batch(req, &resp);
  EXPECT_EQ(status.error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_THAT(status.error_message(), HasSubstr("--max_batch_items"));
}

TEST_F(SmallLimitsTest, BodiesPastTheResponseBudgetAreDropped) {
  v1::BatchFetchRequest req;
  for (int i = 0; i < 3; ++i) Add(req, "/bytes/1000");
  v1::BatchFetchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  int kept = 0, dropped = 0;
  for (const auto& r : resp.results()) {
    EXPECT_EQ(r.body_bytes(), 1000);
    if (r.error().code() == kOk) {
      ++kept;
      EXPECT_EQ(r.body().size(), 1000u);
    } else {
      ++dropped;
      EXPECT_EQ(r.error().code(), kExhausted);
      EXPECT_THAT(r.error().message(), HasSubstr("--max_response_bytes"));
      EXPECT_TRUE(r.body().empty());
    }
  }
  EXPECT_EQ(kept, 1);
  EXPECT_EQ(dropped, 2);
}

TEST_F(SmallLimitsTest, ProcessorsRunOnTheWorkerPoolForBigBodies) {
  v1::BatchFetchRequest req;
  Add(req, "/html/title")->mutable_process()->mutable_html_title();
  Add(req, "/json")
      ->mutable_process()
      ->mutable_json_pointer()
      ->set_pointer("/a/b/2/c");
  Add(req, "/json")->mutable_process()->mutable_sha256();
  req.set_drop_body(true);
  v1::BatchFetchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  EXPECT_EQ(resp.results(0).processed(), "Hello & welcome");
  EXPECT_EQ(resp.results(1).processed(), "\"x\"");
  EXPECT_EQ(resp.results(2).processed().size(), 64u);
  for (const auto& r : resp.results()) {
    EXPECT_EQ(r.error().code(), kOk) << r.error().message();
    EXPECT_TRUE(r.body().empty());  // drop_body
    EXPECT_GT(r.body_bytes(), 0);
  }
}

TEST_F(FetchCallTest, ItemErrorsLoseNothingElse) {
  v1::BatchFetchRequest req;
  Add(req, "ftp://127.0.0.1/x");
  Add(req, "/json")
      ->mutable_process()
      ->mutable_json_pointer()
      ->set_pointer("no-slash");
  Add(req, "/json")->mutable_timeout()->set_seconds(-1);
  Add(req, "/html/title")->mutable_process()->mutable_json_validate();
  Add(req, "/json")
      ->mutable_process()
      ->mutable_json_pointer()
      ->set_pointer("/a/zz");
  Add(req, "/json");
  v1::BatchFetchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 6);
  EXPECT_EQ(resp.results(0).error().code(), kInvalid);
  EXPECT_THAT(resp.results(0).error().message(), HasSubstr("url"));
  EXPECT_EQ(resp.results(1).error().code(), kInvalid);
  EXPECT_THAT(resp.results(1).error().message(),
              HasSubstr("process.json_pointer"));
  EXPECT_EQ(resp.results(2).error().code(), kInvalid);
  EXPECT_THAT(resp.results(2).error().message(), HasSubstr("timeout"));
  EXPECT_EQ(resp.results(3).error().code(), kPrecondition);
  EXPECT_EQ(resp.results(3).http_status(), 200);  // the fetch itself worked
  EXPECT_EQ(resp.results(4).error().code(), kNotFound);
  EXPECT_EQ(resp.results(5).error().code(), kOk);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(resp.results(i).index(), i);
    EXPECT_FALSE(resp.results(i).url().empty()) << i;
  }
  EXPECT_EQ(origin_.requests(), 3);  // only the valid items were fetched
}

TEST_F(FetchCallTest, DeadlineReturnsFinishedItemsAndExpiresTheRest) {
  v1::BatchFetchRequest req;
  Add(req, "/json");
  Add(req, "/delay/10000");
  v1::BatchFetchResponse resp;
  grpc::Status status = Batch(req, &resp, absl::Milliseconds(600));
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(resp.results(0).error().code(), kOk);
  EXPECT_EQ(resp.results(1).error().code(), kDeadline);
}

TEST_F(FetchCallTest, RetriesReportTheirAttempts) {
  v1::BatchFetchRequest req;
  Add(req, "/flaky/rpc1/2");
  req.mutable_retry()->set_max_attempts(3);
  req.mutable_retry()->mutable_initial_backoff()->set_nanos(10'000'000);
  req.mutable_retry()->set_no_jitter(true);
  v1::BatchFetchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  EXPECT_EQ(resp.results(0).error().code(), kOk);
  EXPECT_EQ(resp.results(0).attempts(), 3);
  EXPECT_EQ(resp.results(0).body(), "finally");
}

TEST_F(FetchCallTest, FailFastMakesTheFirstFailureTheRpcStatus) {
  v1::BatchFetchRequest req;
  Add(req, "/delay/10000");
  Add(req, "/status/500");
  req.set_fail_fast(true);
  v1::BatchFetchResponse resp;
  grpc::Status status = Batch(req, &resp);
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("item 1"));
  EXPECT_THAT(status.error_message(), HasSubstr("/status/500"));

  std::vector<v1::FetchResult> streamed;
  status = Stream(req, &streamed);
  EXPECT_EQ(status.error_code(), grpc::UNAVAILABLE);
  ASSERT_EQ(streamed.size(), 1u);  // the failure, nothing after it
  EXPECT_EQ(streamed[0].index(), 1u);
}

// Streams cancelled by their clients while the I/O thread finishes them:
// the final op may complete and the call be deleted at any moment after it
// is started (ASan watches for use after free).
TEST_F(FetchCallTest, CancellingStreamsWhileTheyFinishIsSafe) {
  std::vector<std::jthread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 40; ++i) {
        v1::BatchFetchRequest req;
        for (int k = 0; k < 4; ++k) Add(req, "/json");
        auto context = ContextWithTimeout(kEventTimeout);
        auto reader = stub_->StreamBatchFetch(context.get(), AsStream(req));
        v1::StreamBatchFetchResponse r;
        if ((i + c) % 2 == 0) reader->Read(&r);
        context->TryCancel();
        while (reader->Read(&r)) {
        }
        reader->Finish();
      }
    });
  }
  clients.clear();  // joins
  // Still serving.
  v1::BatchFetchRequest next;
  Add(next, "/json");
  v1::BatchFetchResponse resp;
  EXPECT_TRUE(Batch(next, &resp).ok());
}

TEST_F(FetchCallTest, ClientCancelStopsEveryTransfer) {
  v1::BatchFetchRequest req;
  for (int i = 0; i < 4; ++i) Add(req, "/delay/10000");
  auto context = ContextWithTimeout(kEventTimeout);
  auto reader = stub_->StreamBatchFetch(context.get(), AsStream(req));
  ASSERT_TRUE(WaitFor([&] { return origin_.in_progress() == 4; }, kEventTimeout,
                      "four requests at the origin"));
  context->TryCancel();
  v1::StreamBatchFetchResponse r;
  while (reader->Read(&r)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::CANCELLED);
  // The server is free again and still serves.
  v1::BatchFetchRequest next;
  Add(next, "/json");
  v1::BatchFetchResponse resp;
  EXPECT_TRUE(Batch(next, &resp).ok());
  EXPECT_EQ(resp.results(0).error().code(), kOk);
}

// #16: 400 KB of [[[...]]] with json_pointer "" crashed fetchd (a recursive
// serializer); 2.2 MB of nested <div> held a worker for minutes. Both items
// now fail alone, fast, and the server keeps serving.
TEST_F(FetchCallTest, HostileBodiesFailTheirItemOnly) {
  v1::BatchFetchRequest req;
  Add(req, "/deep/json/200000")
      ->mutable_process()
      ->mutable_json_pointer()
      ->set_pointer("");
  Add(req, "/deep/json/200000")->mutable_process()->mutable_json_validate();
  Add(req, "/deep/html/440000")->mutable_process()->mutable_html_title();
  Add(req, "/json")
      ->mutable_process()
      ->mutable_json_pointer()
      ->set_pointer("/a/b/2/c");
  v1::BatchFetchResponse resp;
  const absl::Time start = absl::Now();
  grpc::Status status = Batch(req, &resp);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_LT(absl::Now() - start, kEventTimeout);
  ASSERT_EQ(resp.results_size(), 4);
  for (int i : {0, 1}) {
    EXPECT_EQ(resp.results(i).error().code(), kPrecondition) << i;
    EXPECT_THAT(resp.results(i).error().message(), HasSubstr("levels")) << i;
    EXPECT_EQ(resp.results(i).body_bytes(), 400'000) << i;
  }
  EXPECT_EQ(resp.results(2).error().code(), kNotFound)
      << resp.results(2).error().message();
  EXPECT_EQ(resp.results(3).error().code(), kOk);
  EXPECT_EQ(resp.results(3).processed(), "\"x\"");
  // Still serving.
  v1::BatchFetchRequest again;
  Add(again, "/json");
  v1::BatchFetchResponse again_resp;
  ASSERT_TRUE(Batch(again, &again_resp).ok());
  EXPECT_EQ(again_resp.results(0).error().code(), kOk);
}

class TinyProcessBudgetTest : public FetchCallTest {
 protected:
  static ServerConfig Config() {
    ServerConfig c = TestConfig();
    c.fetch.max_process_time = absl::Nanoseconds(1);
    return c;
  }
  TinyProcessBudgetTest() : FetchCallTest(Config()) {}
};

TEST_F(TinyProcessBudgetTest, ProcessorsPastTheBudgetAreResourceExhausted) {
  v1::BatchFetchRequest req;
  Add(req, "/deep/html/100000")->mutable_process()->mutable_html_title();
  Add(req, "/json");  // no processor: unaffected
  v1::BatchFetchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  ASSERT_EQ(resp.results_size(), 2);
  EXPECT_EQ(resp.results(0).error().code(), kExhausted);
  EXPECT_THAT(resp.results(0).error().message(),
              HasSubstr("--max_process_time"));
  EXPECT_EQ(resp.results(1).error().code(), kOk);
}

// --- The memory budget (--memory_budget_bytes) ----------------------------

class MemoryBudgetTest : public FetchCallTest {
 protected:
  static constexpr int64_t kBudget = 1 << 20;
  static ServerConfig Config() {
    ServerConfig c = TestConfig();
    c.fetch.memory_budget_bytes = kBudget;
    return c;
  }
  MemoryBudgetTest() : FetchCallTest(Config()) {}
  const memory::Budget& budget() { return server_.server().memory_budget(); }
  ::testing::AssertionResult AllBytesBack() {
    return WaitFor([&] { return budget().reserved() == 0; }, kEventTimeout,
                   "the memory budget's bytes back to 0");
  }
};

TEST_F(MemoryBudgetTest, AStreamOfMoreThanTheBudgetSucceedsItemByItem) {
  // 16 x 200 KB: three times the budget, each of which fits alone.
  v1::BatchFetchRequest req;
  for (int i = 0; i < 16; ++i) Add(req, "/bytes/200000");
  std::vector<v1::FetchResult> results;
  grpc::Status status = Stream(req, &results);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(results.size(), 16u);
  for (const auto& r : results) {
    EXPECT_EQ(r.error().code(), kOk) << r.error().message();
    EXPECT_EQ(r.body().size(), 200000u);
  }
  EXPECT_LE(budget().peak(), kBudget);
  EXPECT_TRUE(AllBytesBack());
}

TEST_F(MemoryBudgetTest, ABodyLargerThanTheBudgetIsResourceExhausted) {
  v1::BatchFetchRequest req;
  Add(req, "/bytes/3000000");
  Add(req, "/json");
  v1::BatchFetchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  EXPECT_EQ(resp.results(0).error().code(), kExhausted);
  EXPECT_THAT(resp.results(0).error().message(),
              HasSubstr("memory budget of 1048576 bytes is spent"));
  EXPECT_EQ(resp.results(1).error().code(), kOk);
  EXPECT_LE(budget().peak(), kBudget);
  EXPECT_TRUE(AllBytesBack());
}

TEST_F(MemoryBudgetTest, QueuedStreamMessagesHoldTheirBytesUntilWritten) {
  // A reader that does not read: results queue in the call, and their
  // bytes stay reserved until gRPC has written them. The reader's window
  // stays at gRPC's first 64 KB (no BDP probing to widen it), so the
  // first 150 KB message cannot be written while nobody reads.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto stub = v1::Fetch::NewStub(grpc::CreateCustomChannel(
      server_.address(), grpc::InsecureChannelCredentials(), args));
  v1::BatchFetchRequest req;
  for (int i = 0; i < 4; ++i) Add(req, "/bytes/150000");
  auto context = ContextWithTimeout(kEventTimeout);
  auto reader = stub->StreamBatchFetch(context.get(), AsStream(req));
  ASSERT_TRUE(WaitFor([&] { return budget().reserved() >= 3 * 150000; },
                      kEventTimeout, "three queued results reserved"));
  EXPECT_LE(budget().reserved(), kBudget);
  int read = 0;
  v1::StreamBatchFetchResponse r;
  while (reader->Read(&r)) {
    EXPECT_EQ(r.result().body().size(), 150000u);
    ++read;
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(read, 4);
  EXPECT_TRUE(AllBytesBack());
}

TEST_F(MemoryBudgetTest, ProcessedOutputAndDroppedBodiesAreAccounted) {
  v1::BatchFetchRequest req;
  Add(req, "/html/title")->mutable_process()->mutable_html_title();
  Add(req, "/bytes/400000");  // 2x (kBodyMemoryFactor) fits 7/8 of 1 MiB
  req.set_drop_body(true);
  v1::BatchFetchResponse resp;
  ASSERT_TRUE(Batch(req, &resp).ok());
  EXPECT_EQ(resp.results(0).processed(), "Hello & welcome");
  EXPECT_EQ(resp.results(1).body_bytes(), 400000);
  EXPECT_TRUE(AllBytesBack());
}

TEST_F(MemoryBudgetTest, CancelledStreamsGiveEveryByteBack) {
  v1::BatchFetchRequest req;
  for (int i = 0; i < 8; ++i) Add(req, "/bytes/200000");
  auto context = ContextWithTimeout(kEventTimeout);
  auto reader = stub_->StreamBatchFetch(context.get(), AsStream(req));
  ASSERT_TRUE(WaitFor([&] { return budget().reserved() > 0; }, kEventTimeout,
                      "bytes reserved"));
  context->TryCancel();
  v1::StreamBatchFetchResponse r;
  while (reader->Read(&r)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::CANCELLED);
  EXPECT_TRUE(AllBytesBack());
}

}  // namespace
}  // namespace fetchd::rpc
