// Trace context through a real fetchd (server/rpc/trace_context.h): a
// caller's W3C traceparent and x-request-id land in the RPC's log line, and
// with --propagate_trace its origin requests carry a child traceparent.
// Malformed values are ignored, never an error.
#include "server/rpc/trace_context.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "server/log/log.h"
#include "tests/support/recording_origin.h"
#include "tests/support/subprocess.h"
#include "tests/support/test_server.h"

namespace fetchd::rpc {
namespace {

using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::Lines;
using ::fetchd::testing::QueryEscape;
using ::fetchd::testing::RecordingOrigin;
using ::fetchd::testing::TestConfig;
using ::fetchd::testing::TestServer;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

constexpr char kTraceparent[] =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
constexpr char kChildPattern[] =
    "00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01";
constexpr char kLogged[] =
    R"("trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7")";

TEST(ValidRequestIdTest, PrintableAsciiUpToTheLimit) {
  EXPECT_TRUE(ValidRequestId("f81d4fae-7dec-11d0-a765-00a0c91e6bf6"));
  EXPECT_TRUE(ValidRequestId("a b~!"));
  EXPECT_TRUE(ValidRequestId(std::string(kMaxRequestIdBytes, 'r')));
  EXPECT_FALSE(ValidRequestId(""));
  EXPECT_FALSE(ValidRequestId(std::string(kMaxRequestIdBytes + 1, 'r')));
  EXPECT_FALSE(ValidRequestId("a\nb"));
  EXPECT_FALSE(ValidRequestId("a\tb"));
  EXPECT_FALSE(ValidRequestId("caf\xc3\xa9"));
}

// A fetchd logging to a file, and an origin that records headers.
class TraceContextTest : public ::testing::Test {
 protected:
  struct Run {
    grpc::Status status;
    std::vector<std::string> log;          // the log's lines
    std::vector<std::string> traceparent;  // per origin request, "" = none
  };

  // One BatchFetch of /ok, with `metadata`; the RPC's status, the log and
  // what the origin saw.
  Run BatchFetch(
      const std::vector<std::pair<std::string, std::string>>& metadata,
      bool propagate = true,
      const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    return WithServer(propagate, [&](v1::Fetch::Stub& stub) {
      v1::BatchFetchRequest request;
      v1::FetchItem* item = request.add_items();
      item->set_url(origin_.Url("/ok"));
      for (const auto& [name, value] : headers) {
        v1::Header* h = item->add_headers();
        h->set_name(name);
        h->set_value(value);
      }
      auto context = ContextWithTimeout(kEventTimeout);
      for (const auto& [key, value] : metadata) {
        context->AddMetadata(key, value);
      }
      v1::BatchFetchResponse response;
      grpc::Status status = stub.BatchFetch(context.get(), request, &response);
      if (status.ok()) {
        EXPECT_EQ(response.results(0).http_status(), 200);
      }
      return status;
    });
  }

  template <typename Call>
  Run WithServer(bool propagate, Call call) {
    ::fetchd::testing::TempFile out;
    Run run;
    {
      log::Logger logger({.level = log::Level::kInfo, .out = out.get()});
      ServerConfig config = TestConfig();
      config.logger = &logger;
      config.fetch.propagate_trace = propagate;
      TestServer server(config);
      EXPECT_TRUE(server.ok());
      if (!server.ok()) return run;
      auto stub = v1::Fetch::NewStub(server.NewChannel());
      run.status = call(*stub);
    }  // server, then logger: every line is written
    run.log = Lines(out.Text());
    for (const auto& seen : origin_.seen()) {
      auto it = seen.headers.find("traceparent");
      run.traceparent.push_back(it == seen.headers.end() ? "" : it->second);
    }
    return run;
  }

  RecordingOrigin origin_;
};

TEST_F(TraceContextTest, TraceAndRequestIdAreLoggedAndTheOriginGetsAChild) {
  const Run run = BatchFetch(
      {{"traceparent", kTraceparent}, {"x-request-id", "req-42 \"q\""}});
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.log.size(), 1u);
  EXPECT_THAT(run.log[0], HasSubstr(R"("method":"Fetch.BatchFetch")"));
  EXPECT_THAT(run.log[0], HasSubstr(kLogged));
  EXPECT_THAT(run.log[0], HasSubstr(R"("request_id":"req-42 \"q\"")"));
  ASSERT_EQ(run.traceparent.size(), 1u);
  EXPECT_THAT(run.traceparent[0], MatchesRegex(kChildPattern));
  // A child: a span of its own, not the caller's.
  EXPECT_THAT(run.traceparent[0], Not(HasSubstr("00f067aa0ba902b7")));
}

TEST_F(TraceContextTest, PropagateTraceFalseSendsNoneButStillLogs) {
  const Run run = BatchFetch({{"traceparent", kTraceparent}},
                             /*propagate=*/false);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.log.size(), 1u);
  EXPECT_THAT(run.log[0], HasSubstr(kLogged));
  EXPECT_THAT(run.log[0], Not(HasSubstr("request_id")));
  EXPECT_EQ(run.traceparent, std::vector<std::string>({""}));
}

TEST_F(TraceContextTest, MalformedValuesAreIgnoredNeverAnError) {
  for (const auto& metadata :
       std::vector<std::vector<std::pair<std::string, std::string>>>{
           // upper-case hex; a request id over the limit
           {{"traceparent",
             "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"},
            {"x-request-id", std::string(kMaxRequestIdBytes + 1, 'r')}},
           // all-zero trace id
           {{"traceparent",
             "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}},
           // two traceparents, two request ids
           {{"traceparent", kTraceparent},
            {"traceparent", kTraceparent},
            {"x-request-id", "a"},
            {"x-request-id", "b"}},
       }) {
    const size_t before = origin_.seen().size();
    const Run run = BatchFetch(metadata);
    ASSERT_TRUE(run.status.ok()) << run.status.error_message();
    ASSERT_EQ(run.log.size(), 1u);
    EXPECT_THAT(run.log[0], HasSubstr(R"("code":"OK")"));
    EXPECT_THAT(run.log[0], Not(HasSubstr("trace_id")));
    EXPECT_THAT(run.log[0], Not(HasSubstr("span_id")));
    EXPECT_THAT(run.log[0], Not(HasSubstr("request_id")));
    ASSERT_EQ(run.traceparent.size(), before + 1);
    EXPECT_EQ(run.traceparent.back(), "");
  }
}

TEST_F(TraceContextTest, WithoutATraceTheLogLineIsAsBefore) {
  const Run run = BatchFetch({});
  ASSERT_EQ(run.log.size(), 1u);
  EXPECT_THAT(run.log[0], MatchesRegex(R"(.*"duration_ms":[0-9.]+\})"));
  EXPECT_EQ(run.traceparent, std::vector<std::string>({""}));
}

// The item's own traceparent header wins: sent as given, not duplicated.
TEST_F(TraceContextTest, AnItemsOwnTraceparentHeaderWins) {
  const std::string own =
      "00-11111111111111111111111111111111-2222222222222222-00";
  const Run run =
      BatchFetch({{"traceparent", kTraceparent}}, true, {{"traceparent", own}});
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  EXPECT_EQ(run.traceparent, std::vector<std::string>({own}));
  EXPECT_THAT(run.log[0], HasSubstr(kLogged));  // the RPC's, in its log
}

// The stream's message type, whatever the proto calls it.
template <typename R>
R MessageOf(grpc::ClientReaderInterface<R>*);

TEST_F(TraceContextTest, EveryPageOfAWalkCarriesAChildSpan) {
  const Run run = WithServer(true, [&](v1::Fetch::Stub& stub) {
    v1::FetchPagesRequest request;
    request.mutable_first()->set_url(
        origin_.Url("/next-to?url=" + QueryEscape(origin_.Url("/last"))));
    request.mutable_cursor()->set_pointer("/next");
    auto context = ContextWithTimeout(kEventTimeout);
    context->AddMetadata("traceparent", kTraceparent);
    auto reader = stub.FetchPages(context.get(), request);
    decltype(MessageOf(reader.get())) message;
    int pages = 0;
    while (reader->Read(&message)) ++pages;
    EXPECT_EQ(pages, 2);
    return reader->Finish();
  });
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.traceparent.size(), 2u);
  EXPECT_THAT(run.traceparent[0], MatchesRegex(kChildPattern));
  EXPECT_THAT(run.traceparent[1], MatchesRegex(kChildPattern));
  EXPECT_NE(run.traceparent[0], run.traceparent[1]);
  ASSERT_EQ(run.log.size(), 1u);
  EXPECT_THAT(run.log[0], HasSubstr(R"("method":"Fetch.FetchPages")"));
  EXPECT_THAT(run.log[0], HasSubstr(kLogged));
}

}  // namespace
}  // namespace fetchd::rpc
