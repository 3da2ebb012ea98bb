// The pagination helpers and the Paginator's decisions, without I/O.
#include <curl/curl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/fetch/fetch.h"

namespace fetchd::fetch {
namespace {

using ::testing::HasSubstr;

TEST(NextLinkTest, FindsRelNextAmongSeveralLinksAndHeaders) {
  EXPECT_EQ(NextLink({R"(<https://a.test/2>; rel="next")"}),
            "https://a.test/2");
  EXPECT_EQ(NextLink({R"(</p/1>; rel="first", </p/3>; rel="next")"}), "/p/3");
  EXPECT_EQ(NextLink({R"(</p/1>; rel=prev)", R"(</p/9>; REL=Next)"}), "/p/9");
  // Quoted parameters may hold commas, semicolons and escaped quotes.
  EXPECT_EQ(NextLink({R"(</a>; title="x, <y>; \"z\""; rel="last", )"
                      R"(<?page=2>; title="n,e;x\"t"; rel="next last")"}),
            "?page=2");
  // rel lists: "next" must be a whole relation type.
  EXPECT_EQ(NextLink({R"(</a>; rel="nextish prev")"}), "");
  EXPECT_EQ(NextLink({R"(</a>; rel="prev")", "garbage, </b>; rel=next"}), "/b");
  EXPECT_EQ(NextLink({}), "");
  EXPECT_EQ(NextLink({"<unterminated; rel=next"}), "");
}

TEST(UrlTest, WithQueryParamReplacesOrAppendsAndEncodes) {
  EXPECT_EQ(*WithQueryParam("http://h/p", "page", "2"), "http://h/p?page=2");
  EXPECT_EQ(*WithQueryParam("http://h/p?a=1&page=1&b=2", "page", "7"),
            "http://h/p?a=1&page=7&b=2");
  EXPECT_EQ(*WithQueryParam("http://h/p?page=1&page=2", "page", "3"),
            "http://h/p?page=3");
  EXPECT_EQ(*WithQueryParam("http://h/p?x=1", "c", "a b/&="),
            "http://h/p?x=1&c=a%20b%2f%26%3d");  // curl writes hex lower
  EXPECT_FALSE(WithQueryParam("not a url", "page", "1").ok());
  // JSON:API style names match however the URL encodes them.
  EXPECT_EQ(
      *WithQueryParam("http://h/p?page%5Bnumber%5D=1&x=1", "page[number]", "2"),
      "http://h/p?page[number]=2&x=1");
}

// ResolveUrl's fast path (a path-absolute reference on a plain origin)
// must give exactly what curl's resolution gives: random references from
// the characters it accepts, on bases that take it and bases that do not.
TEST(UrlTest, ResolveUrlMatchesCurlOnRandomReferences) {
  auto curl_resolve = [](const std::string& base, const std::string& ref) {
    std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> u(curl_url(),
                                                          &curl_url_cleanup);
    std::string out = "<error>";
    char* text = nullptr;
    if (curl_url_set(u.get(), CURLUPART_URL, base.c_str(),
                     CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
        curl_url_set(u.get(), CURLUPART_URL, ref.c_str(),
                     CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
        curl_url_get(u.get(), CURLUPART_URL, &text, 0) == CURLUE_OK) {
      out = text;
    }
    curl_free(text);
    return out;
  };
  const std::vector<std::string> bases = {
      "http://127.0.0.1:8080/pages/1.json", "https://api.example.com/v1/x?a=1",
      "http://h/a/b", "http://h:80/", "http://127.1/x", "http://0x7f.0.0.1/x",
      "http://2130706433/x", "http://HOST.example/x", "http://h:0080/x",
      "http://u:p@h/x", "http://[::1]:8/x", "http://h./x", "HTTP://h/x",
      "http://10.0.0.1:65535/x#f",
      // Bases curl refuses as a whole: the fast path must not take them.
      "http://h:99999/x", "http://h/a b", "http://h/a\x01", "http://h/x#f g"};
  const std::string alphabet = "abcXYZ019-._~!$&'()*+,;=:@/?%#%2F%zz ";
  std::mt19937 random(18);
  int fast = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string ref = "/";
    const int length = static_cast<int>(random() % 12);
    for (int j = 0; j < length; ++j) {
      ref += alphabet[random() % alphabet.size()];
    }
    if (random() % 8 == 0) ref += "/..";
    if (random() % 8 == 0) ref = "/./" + ref;
    for (const std::string& base : bases) {
      const std::string want = curl_resolve(base, ref);
      absl::StatusOr<std::string> got = ResolveUrl(base, ref);
      ASSERT_EQ(got.ok() ? *got : "<error>", want)
          << "base " << base << " reference " << ref;
      if (base == bases[0] && got.ok()) ++fast;
    }
  }
  EXPECT_GT(fast, 1000);  // the generator reaches accepted references
  // At curl's URL length limit the fast path gives way: curl refuses it.
  const std::string huge = "/" + std::string(8000000, 'a');
  EXPECT_EQ(curl_resolve(bases[0], huge), "<error>");
  EXPECT_FALSE(ResolveUrl(bases[0], huge).ok());
}

TEST(UrlTest, ResolveUrlFollowsRfc3986) {
  EXPECT_EQ(*ResolveUrl("http://h/a/b?x=1", "c"), "http://h/a/c");
  EXPECT_EQ(*ResolveUrl("http://h/a/b?x=1", "/d?y=2"), "http://h/d?y=2");
  EXPECT_EQ(*ResolveUrl("http://h/a/b", "?y=2"), "http://h/a/b?y=2");
  EXPECT_EQ(*ResolveUrl("http://h/a/b", "https://o/z"), "https://o/z");
  EXPECT_EQ(*ResolveUrl("http://h/a/b", "ftp://o/z"), "ftp://o/z");
}

TEST(ValidatePageStrategyTest, NamesTheField) {
  PageStrategy s;
  EXPECT_TRUE(ValidatePageStrategy(s).ok());
  s.param = "";
  EXPECT_THAT(ValidatePageStrategy(s).message(),
              HasSubstr("page_number.param"));
  s.param = "p";
  s.items_pointer = "x";
  EXPECT_THAT(ValidatePageStrategy(s).message(), HasSubstr("items_pointer"));
  s = PageStrategy{.kind = PageStrategy::Kind::kCursor, .param = ""};
  EXPECT_THAT(ValidatePageStrategy(s).message(), HasSubstr("cursor.pointer"));
  s.cursor_pointer = "/a~2";  // '~' must be followed by 0 or 1
  EXPECT_THAT(ValidatePageStrategy(s).message(), HasSubstr("cursor.pointer"));
  s.cursor_pointer = "/next";
  EXPECT_TRUE(ValidatePageStrategy(s).ok());
}

// A page as the engine would hand it over.
Page MakePage(int64_t index, const std::string& url, std::string body,
              int http = 200) {
  Page page;
  page.index = index;
  page.url = url;
  page.result.http_status = http;
  page.result.status = http < 400 ? absl::OkStatus()
                                  : absl::Status(StatusCodeForHttp(http), "x");
  page.result.final_url = url;
  page.result.body = std::move(body);
  return page;
}

TEST(PaginatorTest, PageNumberRunsAheadAndStopsAtMaxPages) {
  PageStrategy s;
  s.first_page = 0;
  s.step = 10;
  s.max_pages = 3;
  Paginator p(s, "http://h/list?page=5&q=1");
  EXPECT_EQ(p.StartPosition().next_url, "http://h/list?page=0&q=1");
  EXPECT_EQ(p.UrlOf(2), "http://h/list?page=20&q=1");  // known ahead
  EXPECT_EQ(p.UrlOf(3), std::nullopt);                 // past max_pages
  for (int i = 0; i < 3; ++i) {
    Page page = MakePage(i, *p.UrlOf(i), "{}");
    Paginator::Decision d = p.OnPage(page);
    EXPECT_TRUE(d.deliver);
    EXPECT_EQ(d.end.has_value(), i == 2);
    EXPECT_EQ(page.next.next_index, i + 1);
  }
}

TEST(PaginatorTest, PageNumbersPastInt64EndTheWalk) {
  PageStrategy s;
  s.first_page = 1;
  s.step = int64_t{1} << 62;
  Paginator p(s, "http://h/list");
  EXPECT_EQ(p.UrlOf(1),
            absl::StrCat("http://h/list?page=", (int64_t{1} << 62) + 1));
  EXPECT_EQ(p.UrlOf(2), std::nullopt);  // 1 + 2^63 does not fit
}

TEST(PaginatorTest, CursorNumbersAndNullEnd) {
  PageStrategy s{.kind = PageStrategy::Kind::kCursor,
                 .param = "after",
                 .cursor_pointer = "/meta/next"};
  Paginator p(s, "http://h/api");
  Page first = MakePage(0, "http://h/api", R"({"meta":{"next":42}})");
  EXPECT_FALSE(p.OnPage(first).end.has_value());
  EXPECT_EQ(first.next.next_url, "http://h/api?after=42");
  EXPECT_EQ(p.UrlOf(1), "http://h/api?after=42");
  EXPECT_EQ(p.UrlOf(2), std::nullopt);  // needs page 1's cursor
  Page last = MakePage(1, "http://h/api?after=42", R"({"meta":{"next":null}})");
  Paginator::Decision d = p.OnPage(last);
  EXPECT_TRUE(d.deliver);
  ASSERT_TRUE(d.end.has_value());
  EXPECT_TRUE(d.end->ok());
  EXPECT_TRUE(last.next.done());
}

TEST(PaginatorTest, CursorOnANonJsonPageNamesThePage) {
  PageStrategy s{.kind = PageStrategy::Kind::kCursor,
                 .param = "",
                 .cursor_pointer = "/next"};
  Paginator p(s, "http://h/a");
  Page page = MakePage(0, "http://h/a", "<html>");
  Paginator::Decision d = p.OnPage(page);
  EXPECT_FALSE(d.deliver);
  ASSERT_TRUE(d.end.has_value());
  EXPECT_EQ(d.end->code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(d.end->message(), HasSubstr("page 0 (http://h/a)"));
}

// #16: origins send pages; a deep one is refused by depth, for the cursor
// and for items, and the next (shallow) page still parses.
TEST(PaginatorTest, DeeplyNestedPagesAreRefusedByDepth) {
  for (const char* items_pointer : {"", "/items"}) {
    PageStrategy s{.kind = PageStrategy::Kind::kCursor,
                   .param = "",
                   .cursor_pointer = "/next",
                   .items_pointer = items_pointer};
    Paginator p(s, "http://h/a");
    for (size_t depth : {size_t{513}, size_t{400'000}}) {
      Page page = MakePage(
          0, "http://h/a",
          absl::StrCat(R"({"next":"/b","items":)", std::string(depth, '['),
                       std::string(depth, ']'), "}"));
      Paginator::Decision d = p.OnPage(page);
      ASSERT_TRUE(d.end.has_value());
      EXPECT_EQ(d.end->code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_THAT(d.end->message(), HasSubstr("deeper than 512 levels"));
    }
    Paginator fresh(s, "http://h/a");
    Page ok = MakePage(
        0, "http://h/a",
        absl::StrCat(R"({"next":"/b","items":[)", std::string(500, '['),
                     std::string(500, ']'), "]}"));
    Paginator::Decision d = fresh.OnPage(ok);
    EXPECT_FALSE(d.end.has_value()) << d.end.value_or(absl::OkStatus());
    EXPECT_EQ(ok.next.next_url, "http://h/b");
  }
}

// A loop longer than the exact window is still caught (Brent), in a number
// of pages proportional to the loop, with constant memory.
TEST(PaginatorTest, LongLoopsAreDetected) {
  PageStrategy s{.kind = PageStrategy::Kind::kCursor,
                 .param = "",
                 .cursor_pointer = "/next"};
  constexpr int kLoop = 500;  // pages 0..499, then back to page 100
  Paginator p(s, "http://h/p/0");
  int64_t index = 0;
  int at = 0;
  for (; index < 10 * kLoop; ++index) {
    const int next = at + 1 < kLoop ? at + 1 : 100;
    Page page = MakePage(index, absl::StrCat("http://h/p/", at),
                         absl::StrCat(R"({"next":"/p/)", next, R"("})"));
    Paginator::Decision d = p.OnPage(page);
    if (d.end.has_value()) {
      EXPECT_EQ(d.end->code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_THAT(d.end->message(), HasSubstr("loops"));
      break;
    }
    at = next;
  }
  EXPECT_LT(index, 4 * kLoop) << "the loop was not caught in time";
  EXPECT_GE(index, kLoop - 1);
}

}  // namespace
}  // namespace fetchd::fetch
