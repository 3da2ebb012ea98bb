// Credential headers stay on their origin, through a real fetchd: FetchPages
// next links and resume tokens, and BatchFetch redirects, against two real
// origins on different loopback ports that record the headers they saw.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "tests/support/recording_origin.h"
#include "tests/support/test_server.h"

namespace fetchd::rpc {
namespace {

using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::QueryEscape;
using ::fetchd::testing::RecordingOrigin;
using ::fetchd::testing::TestConfig;
using ::fetchd::testing::TestServer;
using ::testing::HasSubstr;
using ::testing::Not;

void AddCredentials(v1::FetchItem* item) {
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{
           {"Authorization", "Bearer s3cret"},
           {"X-Api-Key", "s3cret-key"},
           {"X-Trace", "t"}}) {
    v1::Header* h = item->add_headers();
    h->set_name(name);
    h->set_value(value);
  }
}

class CrossOriginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    stub_ = v1::Fetch::NewStub(server_.NewChannel());
  }

  // A cursor walk from a's first page to b's last one.
  v1::FetchPagesRequest WalkToB() {
    v1::FetchPagesRequest req;
    req.mutable_first()->set_url(
        a_.Url("/next-to?url=" + QueryEscape(b_.Url("/last"))));
    AddCredentials(req.mutable_first());
    req.mutable_cursor()->set_pointer("/next");
    return req;
  }

  grpc::Status Walk(const v1::FetchPagesRequest& req,
                    std::vector<v1::Page>* out) {
    auto context = ContextWithTimeout(kEventTimeout);
    auto reader = stub_->FetchPages(context.get(), req);
    v1::FetchPagesResponse response;
    while (reader->Read(&response)) out->push_back(response.page());
    return reader->Finish();
  }

  v1::FetchResult FetchRedirectedToB(bool allow) {
    v1::BatchFetchRequest req;
    v1::FetchItem* item = req.add_items();
    item->set_url(a_.Url("/redirect-to?url=" + QueryEscape(b_.Url("/ok"))));
    AddCredentials(item);
    req.set_allow_cross_origin(allow);
    v1::BatchFetchResponse resp;
    auto context = ContextWithTimeout(kEventTimeout);
    grpc::Status status = stub_->BatchFetch(context.get(), req, &resp);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return resp.results_size() == 1 ? resp.results(0) : v1::FetchResult();
  }

  void ExpectBSawNoCredentials() {
    ASSERT_FALSE(b_.seen().empty());
    EXPECT_FALSE(b_.SawHeader("authorization"));
    EXPECT_FALSE(b_.SawHeader("x-api-key"));
    EXPECT_TRUE(b_.SawHeader("x-trace"));
  }

  RecordingOrigin a_, b_;
  TestServer server_;
  std::unique_ptr<v1::Fetch::Stub> stub_;
};

TEST_F(CrossOriginTest, WalkToAnotherOriginIsRefused) {
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(WalkToB(), &pages);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("page 1"));
  EXPECT_THAT(status.error_message(),
              HasSubstr(absl::StrCat("http://127.0.0.1:", a_.port())));
  EXPECT_THAT(status.error_message(),
              HasSubstr(absl::StrCat("http://127.0.0.1:", b_.port())));
  EXPECT_THAT(status.error_message(), Not(HasSubstr("s3cret")));
  EXPECT_EQ(pages.size(), 1u);
  EXPECT_TRUE(b_.seen().empty());
}

TEST_F(CrossOriginTest, AllowCrossOriginWalksOnWithoutCredentials) {
  v1::FetchPagesRequest req = WalkToB();
  req.set_allow_cross_origin(true);
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(pages.size(), 2u);
  EXPECT_EQ(pages[1].result().url(), b_.Url("/last"));
  ExpectBSawNoCredentials();
  EXPECT_TRUE(a_.SawHeader("authorization"));
}

TEST_F(CrossOriginTest, AResumeTokenToAnotherOriginFollowsTheSameRule) {
  v1::FetchPagesRequest req = WalkToB();
  req.set_allow_cross_origin(true);
  req.set_max_pages(1);
  std::vector<v1::Page> pages;
  ASSERT_TRUE(Walk(req, &pages).ok());
  ASSERT_EQ(pages.size(), 1u);
  EXPECT_TRUE(b_.seen().empty());
  // The token points at b: refused without allow_cross_origin...
  v1::FetchPagesRequest resume = WalkToB();
  resume.set_resume_token(pages[0].resume_token());
  std::vector<v1::Page> refused;
  grpc::Status status = Walk(resume, &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(refused.empty());
  EXPECT_TRUE(b_.seen().empty());
  // ...and followed without the credentials with it.
  resume.set_allow_cross_origin(true);
  std::vector<v1::Page> rest;
  status = Walk(resume, &rest);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].index(), 1);
  ExpectBSawNoCredentials();
}

// a -> b -> a/last: the walk stops after b's page; its resume token says
// the walk has left a, so the resumed page back on a (a link b chose) goes
// without the credential headers.
TEST_F(CrossOriginTest, AResumeTokenAfterAnotherOriginKeepsCredentialsOff) {
  const std::string back =
      b_.Url("/next-to?url=" + QueryEscape(a_.Url("/last")));
  v1::FetchPagesRequest req;
  req.mutable_first()->set_url(a_.Url("/next-to?url=" + QueryEscape(back)));
  AddCredentials(req.mutable_first());
  req.mutable_cursor()->set_pointer("/next");
  req.set_allow_cross_origin(true);
  req.set_max_pages(2);
  std::vector<v1::Page> pages;
  ASSERT_TRUE(Walk(req, &pages).ok());
  ASSERT_EQ(pages.size(), 2u);
  ASSERT_EQ(a_.seen().size(), 1u);
  EXPECT_TRUE(a_.SawHeader("authorization"));  // the first page only
  req.set_resume_token(pages[1].resume_token());
  req.clear_max_pages();
  std::vector<v1::Page> rest;
  grpc::Status status = Walk(req, &rest);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].result().url(), a_.Url("/last"));
  const auto seen = a_.seen();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].path, "/last");
  EXPECT_FALSE(seen[1].headers.contains("authorization"));
  EXPECT_FALSE(seen[1].headers.contains("x-api-key"));
  EXPECT_EQ(seen[1].headers.at("x-trace"), "t");
}

TEST_F(CrossOriginTest, BatchItemRedirectedToAnotherOriginFails) {
  v1::FetchResult result = FetchRedirectedToB(/*allow=*/false);
  EXPECT_EQ(result.error().code(),
            static_cast<int>(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_THAT(result.error().message(),
              HasSubstr(absl::StrCat("http://127.0.0.1:", b_.port())));
  EXPECT_THAT(result.error().message(), Not(HasSubstr("s3cret")));
  EXPECT_TRUE(b_.seen().empty());
}

TEST_F(CrossOriginTest, AllowCrossOriginFollowsTheRedirectWithoutCredentials) {
  v1::FetchResult result = FetchRedirectedToB(/*allow=*/true);
  EXPECT_EQ(result.error().code(), 0) << result.error().message();
  EXPECT_EQ(result.body(), "ok");
  EXPECT_EQ(result.final_url(), b_.Url("/ok"));
  ExpectBSawNoCredentials();
}

// --credential_headers replaces X-Api-Key: the configured name is kept on
// its origin, and X-Api-Key is an ordinary header.
TEST(CredentialHeadersConfigTest, TheServersListIsWhatCounts) {
  RecordingOrigin a, b;
  rpc::ServerConfig config = TestConfig();
  config.fetch.engine.credential_headers = {"x-tenant-secret"};
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  auto stub = v1::Fetch::NewStub(server.NewChannel());
  v1::BatchFetchRequest req;
  v1::FetchItem* item = req.add_items();
  item->set_url(a.Url("/redirect-to?url=" + QueryEscape(b.Url("/ok"))));
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, std::string>>{
           {"X-Tenant-Secret", "s3cret"}, {"X-Api-Key", "public"}}) {
    v1::Header* h = item->add_headers();
    h->set_name(name);
    h->set_value(value);
  }
  req.set_allow_cross_origin(true);
  v1::BatchFetchResponse resp;
  auto context = ContextWithTimeout(kEventTimeout);
  ASSERT_TRUE(stub->BatchFetch(context.get(), req, &resp).ok());
  EXPECT_EQ(resp.results(0).error().code(), 0);
  ASSERT_EQ(b.seen().size(), 1u);
  EXPECT_FALSE(b.SawHeader("x-tenant-secret"));
  EXPECT_TRUE(b.SawHeader("x-api-key"));
}

}  // namespace
}  // namespace fetchd::rpc
