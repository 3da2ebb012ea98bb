// Fetch.FetchPages through a real fetchd on a loopback port, against the
// paginated routes of the real test origin.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "absl/strings/escaping.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd::rpc {
namespace {

using ::fetchd::testing::ContextWithTimeout;
using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::Origin;
using ::fetchd::testing::TestServer;
using ::fetchd::testing::WaitFor;
using ::testing::HasSubstr;

class FetchPagesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    stub_ = v1::Fetch::NewStub(server_.NewChannel());
  }
  v1::FetchPagesRequest PageNumber(const std::string& path) {
    v1::FetchPagesRequest req;
    req.mutable_first()->set_url(origin_.Url(path));
    req.mutable_page_number();  // param "page", from 1, step 1
    return req;
  }
  v1::FetchPagesRequest Cursor(const std::string& path,
                               const std::string& param) {
    v1::FetchPagesRequest req;
    req.mutable_first()->set_url(origin_.Url(path));
    req.mutable_cursor()->set_pointer("/next");
    req.mutable_cursor()->set_param(param);
    return req;
  }
  // Reads the whole stream; returns its status.
  grpc::Status Walk(const v1::FetchPagesRequest& req,
                    std::vector<v1::Page>* out,
                    absl::Duration timeout = kEventTimeout) {
    auto context = ContextWithTimeout(timeout);
    auto reader = stub_->FetchPages(context.get(), req);
    v1::FetchPagesResponse response;
    while (reader->Read(&response)) out->push_back(response.page());
    return reader->Finish();
  }
  static void ExpectIndicesFrom(const std::vector<v1::Page>& pages,
                                int64_t first) {
    for (size_t i = 0; i < pages.size(); ++i) {
      EXPECT_EQ(pages[i].index(), first + static_cast<int64_t>(i));
    }
  }

  Origin origin_;
  TestServer server_;
  std::unique_ptr<v1::Fetch::Stub> stub_;
};

TEST_F(FetchPagesTest, PageNumberWalksInOrderUntilAnEmptyItemsArray) {
  v1::FetchPagesRequest req = PageNumber("/pn/a?last=5");
  req.set_items_pointer("/items");
  req.set_prefetch(3);
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(pages.size(), 5u);
  ExpectIndicesFrom(pages, 0);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(pages[i].result().url(),
              origin_.Url(absl::StrCat("/pn/a?last=5&page=", i + 1)));
    EXPECT_EQ(pages[i].result().http_status(), 200);
    EXPECT_THAT(pages[i].result().body(),
                HasSubstr(absl::StrCat("\"page\":", i + 1, ",")));
    EXPECT_EQ(pages[i].result().attempts(), 1);
    EXPECT_FALSE(pages[i].resume_token().empty());
  }
  // Page 6 (empty) ends it; prefetch may have asked for up to 2 more.
  EXPECT_GE(origin_.arrivals("a").size(), 6u);
  EXPECT_LE(origin_.arrivals("a").size(), 8u);
}

TEST_F(FetchPagesTest, StopStatusEndsTheWalkOkOtherwiseItIsTheError) {
  v1::FetchPagesRequest req = PageNumber("/pn/b?last=3&end=404");
  req.add_stop_statuses(404);
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(pages.size(), 3u);

  req.clear_stop_statuses();
  pages.clear();
  status = Walk(req, &pages);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(pages.size(), 3u);  // every earlier page first
  EXPECT_THAT(
      status.error_message(),
      HasSubstr("page 3 (" + origin_.Url("/pn/b?last=3&end=404&page=4") +
                "): HTTP 404"));
}

TEST_F(FetchPagesTest, EmitItemsSplitsEachPagesArray) {
  v1::FetchPagesRequest req = PageNumber("/pn/c?last=2");
  req.set_items_pointer("/items");
  req.set_emit(v1::EMIT_ITEMS);
  std::vector<v1::Page> pages;
  ASSERT_TRUE(Walk(req, &pages).ok());
  ASSERT_EQ(pages.size(), 2u);
  EXPECT_THAT(pages[1].items(),
              ::testing::ElementsAre("\"2.1\"", "\"2.2\"", "\"2.3\""));
  EXPECT_TRUE(pages[1].result().body().empty());
  EXPECT_GT(pages[1].result().body_bytes(), 0);
}

TEST_F(FetchPagesTest, CursorIntoAQueryParameter) {
  v1::FetchPagesRequest req = Cursor("/cursor/d?last=4", "cursor");
  req.set_items_pointer("/data/items");
  req.set_emit(v1::EMIT_ITEMS);
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(pages.size(), 4u);
  EXPECT_EQ(pages[0].result().url(), origin_.Url("/cursor/d?last=4"));
  EXPECT_EQ(pages[3].result().url(), origin_.Url("/cursor/d?last=4&cursor=c4"));
  EXPECT_EQ(pages[3].items(0), "\"4.1\"");
  EXPECT_EQ(origin_.arrivals("d").size(), 4u);  // no page past the last
}

TEST_F(FetchPagesTest, CursorAsARelativeNextUrl) {
  v1::FetchPagesRequest req = Cursor("/cursor/e?last=3&mode=url", "");
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(pages.size(), 3u);
  EXPECT_EQ(pages[2].result().url(),
            origin_.Url("/cursor/e?cursor=c3&last=3&mode=url"));
}

TEST_F(FetchPagesTest, LinkHeaderWithRelativeTargetsAndQuotedParameters) {
  v1::FetchPagesRequest req;
  req.mutable_first()->set_url(origin_.Url("/link/f/1?last=4"));
  req.mutable_link_header();
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(pages.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(pages[i].result().body(), absl::StrCat("page ", i + 1));
  }
  EXPECT_EQ(pages[3].result().url(), origin_.Url("/link/f/4?last=4"));
  // The strategy reads Link itself; it is returned only when asked for.
  EXPECT_EQ(pages[0].result().headers_size(), 0);
  req.add_response_headers("Link");
  pages.clear();
  ASSERT_TRUE(Walk(req, &pages).ok());
  ASSERT_EQ(pages[0].result().headers_size(), 1);
  EXPECT_EQ(pages[0].result().headers(0).name(), "link");
}

TEST_F(FetchPagesTest, APaginationLoopEndsWithFailedPrecondition) {
  // Page 3 points back to page 1 (under a URL not seen yet), whose next is
  // page 2's URL again: the loop is caught before walking it twice.
  v1::FetchPagesRequest req = Cursor("/cursor/g?last=10&mode=url&loop=3", "");
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("loops"));
  EXPECT_EQ(pages.size(), 4u);
  EXPECT_EQ(origin_.arrivals("g").size(), 4u);
}

TEST_F(FetchPagesTest, NextLinkToAnotherSchemeIsRefused) {
  v1::FetchPagesRequest req = Cursor("/next-to?url=ftp://127.0.0.1/secret", "");
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("is not http or https"));
  EXPECT_EQ(pages.size(), 1u);
}

TEST_F(FetchPagesTest, NextLinkWithCredentialsIsRefused) {
  v1::FetchPagesRequest req =
      Cursor("/next-to?url=http://user:pw@127.0.0.1:1/x", "");
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("credentials"));
  EXPECT_EQ(pages.size(), 1u);
}

TEST_F(FetchPagesTest, ResumeContinuesWithNoPageLostOrRepeated) {
  v1::FetchPagesRequest req = Cursor("/cursor/h?last=6", "cursor");
  req.set_max_pages(2);
  std::vector<v1::Page> first;
  ASSERT_TRUE(Walk(req, &first).ok());
  ASSERT_EQ(first.size(), 2u);

  // Resume from the first page's token: page 1 again is the next one.
  req.set_max_pages(0);
  req.set_resume_token(first[0].resume_token());
  std::vector<v1::Page> again;
  ASSERT_TRUE(Walk(req, &again).ok());
  ASSERT_EQ(again.size(), 5u);
  ExpectIndicesFrom(again, 1);
  EXPECT_EQ(again[0].result().body(), first[1].result().body());

  // From the last page of the first call: pages 2..5, each once.
  origin_.ResetCounters();
  req.set_resume_token(first[1].resume_token());
  std::vector<v1::Page> rest;
  ASSERT_TRUE(Walk(req, &rest).ok());
  ASSERT_EQ(rest.size(), 4u);
  ExpectIndicesFrom(rest, 2);
  EXPECT_EQ(rest[0].result().url(), origin_.Url("/cursor/h?last=6&cursor=c3"));
  EXPECT_EQ(rest[3].result().url(), origin_.Url("/cursor/h?last=6&cursor=c6"));
  EXPECT_EQ(origin_.arrivals("h").size(), 4u);

  // The very last token resumes to nothing.
  req.set_resume_token(rest.back().resume_token());
  std::vector<v1::Page> none;
  ASSERT_TRUE(Walk(req, &none).ok());
  EXPECT_TRUE(none.empty());
}

// max_pages as a page size over a page-number API: each call's last token
// starts the next call at the next page.
TEST_F(FetchPagesTest, PageNumberWalkResumesAfterMaxPages) {
  v1::FetchPagesRequest req = PageNumber("/pn/r?last=5");
  req.set_items_pointer("/items");
  req.set_max_pages(2);
  std::vector<int64_t> indices;
  for (int call = 0; call < 4; ++call) {
    std::vector<v1::Page> pages;
    grpc::Status status = Walk(req, &pages);
    ASSERT_TRUE(status.ok()) << status.error_message();
    for (const v1::Page& page : pages) indices.push_back(page.index());
    if (pages.empty()) break;
    req.set_resume_token(pages.back().resume_token());
  }
  EXPECT_THAT(indices, ::testing::ElementsAre(0, 1, 2, 3, 4));
}

TEST_F(FetchPagesTest, ResumeTokenOfAnotherWalkIsRefused) {
  v1::FetchPagesRequest req = Cursor("/cursor/i?last=3", "cursor");
  std::vector<v1::Page> pages;
  ASSERT_TRUE(Walk(req, &pages).ok());
  v1::FetchPagesRequest other = Cursor("/cursor/j?last=3", "cursor");
  other.set_resume_token(pages[0].resume_token());
  std::vector<v1::Page> none;
  grpc::Status status = Walk(other, &none);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("resume_token"));
  // Any changed byte breaks the signature; no page is fetched for it.
  std::string data;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(pages[0].resume_token(), &data));
  const size_t url_at = data.find("http://");
  ASSERT_NE(url_at, std::string::npos);
  std::string altered = data;
  altered[url_at + 7] ^= 1;  // the next URL's host
  v1::FetchPagesRequest forged = req;
  forged.set_resume_token(absl::WebSafeBase64Escape(altered));
  origin_.ResetCounters();
  status = Walk(forged, &none);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("resume_token: signature does not match"));
  EXPECT_TRUE(origin_.arrivals("i").empty());
  // The same walk with another strategy is another walk.
  v1::FetchPagesRequest link = req;
  link.mutable_link_header();
  link.set_resume_token(pages[0].resume_token());
  status = Walk(link, &none);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("resume_token belongs to a cursor walk; this call "
                        "asks for link_header"));
  other.set_resume_token("bm90IGEgdG9rZW4");
  status = Walk(other, &none);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("resume_token"));
  EXPECT_TRUE(none.empty());
}

// Replicas: a token signed by one fetchd resumes on another that holds the
// same --token_key_file key, and is refused by one with another key.
class ResumeAcrossServersTest : public FetchPagesTest {
 protected:
  static rpc::ServerConfig WithKey(const std::string& key) {
    rpc::ServerConfig config = ::fetchd::testing::TestConfig();
    config.fetch.resume_token_key = key;
    return config;
  }
  grpc::Status WalkOn(TestServer& server, const v1::FetchPagesRequest& req,
                      std::vector<v1::Page>* out) {
    auto stub = v1::Fetch::NewStub(server.NewChannel());
    auto context = ContextWithTimeout(kEventTimeout);
    auto reader = stub->FetchPages(context.get(), req);
    v1::FetchPagesResponse response;
    while (reader->Read(&response)) out->push_back(response.page());
    return reader->Finish();
  }

  const std::string key_ = std::string(40, 'r');
  TestServer first_{WithKey(key_)};
  TestServer second_{WithKey(key_)};
  TestServer other_key_{WithKey(std::string(40, 'x'))};
};

TEST_F(ResumeAcrossServersTest, ATokenResumesOnAReplicaWithTheSameKey) {
  ASSERT_TRUE(first_.ok() && second_.ok() && other_key_.ok());
  for (bool cursor : {false, true}) {
    origin_.ResetCounters();
    v1::FetchPagesRequest req = cursor ? Cursor("/cursor/x?last=6", "cursor")
                                       : PageNumber("/pn/x?last=6");
    if (!cursor) req.set_items_pointer("/items");
    // One page in flight at a time: no prefetched request is still on its
    // way to the origin when the walk ends, so the counts below are exact
    // (a straggler would also land in the other-key check's count).
    req.set_prefetch(1);
    req.set_max_pages(2);
    std::vector<v1::Page> pages;
    ASSERT_TRUE(WalkOn(first_, req, &pages).ok());
    ASSERT_EQ(pages.size(), 2u);
    // Pages 2.. on the second replica, from the first one's last token.
    req.set_max_pages(0);
    req.set_resume_token(pages.back().resume_token());
    std::vector<v1::Page> rest;
    grpc::Status status = WalkOn(second_, req, &rest);
    ASSERT_TRUE(status.ok()) << status.error_message();
    pages.insert(pages.end(), rest.begin(), rest.end());
    // Every page exactly once, in order, and each fetched once.
    std::vector<std::string> urls;
    for (size_t i = 0; i < pages.size(); ++i) {
      EXPECT_EQ(pages[i].index(), static_cast<int64_t>(i));
      urls.push_back(pages[i].result().url());
    }
    EXPECT_EQ(pages.size(), 6u);
    std::sort(urls.begin(), urls.end());
    EXPECT_EQ(std::unique(urls.begin(), urls.end()), urls.end());
    // The page-number walk ends at its empty page 7.
    EXPECT_EQ(origin_.arrivals("x").size(), cursor ? 6u : 7u);

    // The same token on a fetchd with another key: refused, nothing fetched.
    origin_.ResetCounters();
    std::vector<v1::Page> none;
    status = WalkOn(other_key_, req, &none);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message(),
              "resume_token: signature does not match (signed with another "
              "--token_key_file?)");
    EXPECT_TRUE(none.empty());
    EXPECT_TRUE(origin_.arrivals("x").empty());
  }
}

// Without --token_key_file each server makes its own random key.
TEST_F(ResumeAcrossServersTest, WithoutAKeyTokensStayOnTheirServer) {
  TestServer a;
  TestServer b;
  ASSERT_TRUE(a.ok() && b.ok());
  v1::FetchPagesRequest req = Cursor("/cursor/y?last=3", "cursor");
  req.set_max_pages(1);
  std::vector<v1::Page> pages;
  ASSERT_TRUE(WalkOn(a, req, &pages).ok());
  ASSERT_EQ(pages.size(), 1u);
  req.set_resume_token(pages[0].resume_token());
  std::vector<v1::Page> rest;
  EXPECT_TRUE(WalkOn(a, req, &rest).ok());
  EXPECT_EQ(rest.size(), 1u);
  rest.clear();
  EXPECT_EQ(WalkOn(b, req, &rest).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(rest.empty());
}

TEST_F(FetchPagesTest, AFailingPageEndsTheStreamAfterEveryEarlierPage) {
  v1::FetchPagesRequest req = PageNumber("/pn/k?last=5&flaky=3");
  req.set_prefetch(4);
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(pages.size(), 2u);
  EXPECT_THAT(
      status.error_message(),
      HasSubstr("page 2 (" + origin_.Url("/pn/k?last=5&flaky=3&page=3") +
                "): HTTP 503"));
}

TEST_F(FetchPagesTest, RetriesCarryAFlakyPageThrough) {
  v1::FetchPagesRequest req = PageNumber("/pn/l?last=4&flaky=2");
  req.set_items_pointer("/items");
  req.mutable_retry()->set_max_attempts(3);
  req.mutable_retry()->mutable_initial_backoff()->set_nanos(1'000'000);
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(pages.size(), 4u);
  EXPECT_EQ(pages[1].result().attempts(), 3);
  EXPECT_EQ(pages[2].result().attempts(), 1);
}

// A reader that stops reading holds the walk: the origin sees at most the
// pages read, `prefetch` more, and what gRPC's flow-control window takes.
TEST_F(FetchPagesTest, PrefetchBoundHoldsWithAReaderThatStops) {
  constexpr int kPrefetch = 3;
  // 256 KiB pages: a stalled reader fills the stream's window at once.
  v1::FetchPagesRequest req = PageNumber("/pn/m?last=1000&pad=262144");
  req.set_prefetch(kPrefetch);
  // A fixed 64 KiB receive window (no BDP growth): gRPC itself can take at
  // most one page off the server's hands.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  auto stub = v1::Fetch::NewStub(grpc::CreateCustomChannel(
      server_.address(), grpc::InsecureChannelCredentials(), args));
  auto context = ContextWithTimeout(kEventTimeout);
  auto reader = stub->FetchPages(context.get(), req);
  v1::FetchPagesResponse page;
  ASSERT_TRUE(reader->Read(&page));
  ASSERT_TRUE(
      WaitFor([&] { return origin_.arrivals("m").size() >= kPrefetch + 1u; },
              kEventTimeout, "the window to fill"));
  // Not synchronisation: an observation window in which a walk that
  // ignored the reader would run on (at ~1 ms per page).
  absl::SleepFor(absl::Milliseconds(300));
  const size_t seen = origin_.arrivals("m").size();
  // Read + prefetch + what the two transports hold: the page being written
  // (taken by gRPC on the server) and one in the client's window.
  EXPECT_LE(seen, 1u + kPrefetch + 2u) << "the walk ran ahead of the reader";
  // Reading on moves the window.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(reader->Read(&page));
  EXPECT_TRUE(WaitFor([&] { return origin_.arrivals("m").size() >= seen + 5; },
                      kEventTimeout, "the walk to follow the reader"));
  context->TryCancel();
  while (reader->Read(&page)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(FetchPagesTest, ClientCancelStopsTheWalk) {
  // The first page drips for minutes; the origin notices a closed
  // connection at its next write.
  v1::FetchPagesRequest req = PageNumber("/drip/100000/5");
  auto context = ContextWithTimeout(kEventTimeout);
  auto reader = stub_->FetchPages(context.get(), req);
  ASSERT_TRUE(
      WaitFor([&] { return server_.server().fetch_stats().inflight >= 1; },
              kEventTimeout, "a page to be in flight"));
  context->TryCancel();
  v1::FetchPagesResponse page;
  EXPECT_FALSE(reader->Read(&page));
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The walk is gone from the engine, its transfer off the multi handle.
  EXPECT_TRUE(WaitFor(
      [&] {
        const fetch::Engine::Stats s = server_.server().fetch_stats();
        return s.inflight == 0 && s.batches == 0;
      },
      absl::Seconds(5), "the walk to be freed"));
}

TEST_F(FetchPagesTest, DeadlineMidWalkKeepsThePagesSent) {
  v1::FetchPagesRequest req = PageNumber("/pn/o?last=1000&delay=200");
  req.set_prefetch(1);
  std::vector<v1::Page> pages;
  grpc::Status status = Walk(req, &pages, absl::Milliseconds(1100));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_GE(pages.size(), 2u);
  EXPECT_LE(pages.size(), 6u);
  ExpectIndicesFrom(pages, 0);
}

TEST_F(FetchPagesTest, BadRequestsNameTheField) {
  struct Case {
    std::function<void(v1::FetchPagesRequest&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.clear_page_number(); }, "strategy is not set"},
      {[](auto& r) { r.mutable_page_number()->set_param("a&b"); },
       "page_number.param"},
      {[](auto& r) { r.mutable_page_number()->set_step(0); },
       "page_number.step"},
      {[](auto& r) { r.mutable_cursor()->set_pointer("next"); },
       "cursor.pointer"},
      {[](auto& r) { r.set_items_pointer("items"); }, "items_pointer"},
      {[](auto& r) { r.set_emit(v1::EMIT_ITEMS); },
       "EMIT_ITEMS needs items_pointer"},
      {[](auto& r) { r.set_prefetch(0); }, "prefetch must be between 1 and"},
      {[](auto& r) { r.set_prefetch(1000); }, "(--max_prefetch)"},
      {[](auto& r) { r.set_max_pages(-1); }, "max_pages must be between"},
      {[](auto& r) {
         r.set_prefetch(16);
         r.set_max_body_bytes(int64_t{64} << 20);
       },
       "x max_body_bytes"},
      {[](auto& r) { r.set_max_pages(int64_t{1} << 40); },
       "(--max_walk_pages)"},
      {[](auto& r) { r.mutable_first()->set_url("ftp://127.0.0.1/x"); },
       "first.url"},
      {[](auto& r) { r.mutable_first()->clear_url(); }, "first.url is empty"},
      {[](auto& r) { r.add_stop_statuses(7); }, "stop_statuses"},
      {[](auto& r) { r.set_resume_token("!!"); }, "resume_token"},
  };
  for (const Case& c : cases) {
    v1::FetchPagesRequest req = PageNumber("/pn/p?last=2");
    c.change(req);
    std::vector<v1::Page> pages;
    grpc::Status status = Walk(req, &pages);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << c.message;
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
    EXPECT_TRUE(pages.empty());
  }
  EXPECT_TRUE(origin_.arrivals("p").empty());
}

}  // namespace
}  // namespace fetchd::rpc
