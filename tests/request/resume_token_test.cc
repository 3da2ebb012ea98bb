// Resume tokens: the signed format, every way a token can be wrong, and the
// key file.
#include "server/request/resume_token.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace fetchd::request {
namespace {

using ::testing::HasSubstr;
using Kind = fetch::PageStrategy::Kind;

const std::string kKey(32, 'k');
const std::string kOtherKey(32, 'o');
constexpr absl::string_view kSignatureMessage =
    "resume_token: signature does not match (signed with another "
    "--token_key_file?)";

ResumeTokenContents Sample() {
  return {
      .fingerprint = "0123456789abcdef",
      .strategy = Kind::kCursor,
      .next = {.next_index = 7, .next_url = "http://127.0.0.1:1/p?cursor=c8"}};
}

std::string Decoded(const std::string& token) {
  std::string data;
  EXPECT_TRUE(absl::WebSafeBase64Unescape(token, &data));
  return data;
}

void ExpectRefused(const absl::StatusOr<ResumeTokenContents>& opened,
                   absl::string_view message) {
  EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(opened.status().message(), HasSubstr(message));
}

TEST(ResumeTokenTest, RoundTripsEveryField) {
  for (Kind kind : {Kind::kPageNumber, Kind::kCursor, Kind::kLinkHeader}) {
    ResumeTokenContents in = Sample();
    in.strategy = kind;
    // The URL is the last field: separators inside it survive.
    in.next.next_url = "http://127.0.0.1:1/a\nb:c?d=e";
    absl::StatusOr<ResumeTokenContents> out =
        OpenResumeToken(kKey, SignResumeToken(kKey, in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->fingerprint, in.fingerprint);
    EXPECT_EQ(out->strategy, kind);
    EXPECT_EQ(out->next.next_index, 7);
    EXPECT_EQ(out->next.next_url, in.next.next_url);
    EXPECT_FALSE(out->next.left_origin);
    in.next.left_origin = true;
    out = OpenResumeToken(kKey, SignResumeToken(kKey, in));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(out->next.left_origin);
    EXPECT_EQ(out->next.next_url, in.next.next_url);
  }
  // The end of a walk: no next URL.
  ResumeTokenContents end = Sample();
  end.next.next_url.clear();
  absl::StatusOr<ResumeTokenContents> out =
      OpenResumeToken(kKey, SignResumeToken(kKey, end));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->next.done());
}

TEST(ResumeTokenTest, IsUrlSafeVersionedAndNamesTheStrategy) {
  const std::string token = SignResumeToken(kKey, Sample());
  EXPECT_EQ(token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn"
                                    "opqrstuvwxyz0123456789-_"),
            std::string::npos);
  const std::string data = Decoded(token);
  EXPECT_EQ(data[0], static_cast<char>(kResumeTokenVersion));
  // Written by name, not as the enum's integer.
  EXPECT_THAT(data, HasSubstr("\ncursor\n7\n"));
  EXPECT_EQ(PageStrategyName(Kind::kPageNumber), "page_number");
  EXPECT_EQ(PageStrategyName(Kind::kCursor), "cursor");
  EXPECT_EQ(PageStrategyName(Kind::kLinkHeader), "link_header");
}

TEST(ResumeTokenTest, AnyAlteredByteIsRefused) {
  const std::string data = Decoded(SignResumeToken(kKey, Sample()));
  for (size_t i = 0; i < data.size(); ++i) {
    for (unsigned char flip : {0x01, 0x80}) {
      std::string altered = data;
      altered[i] = static_cast<char>(altered[i] ^ flip);
      absl::StatusOr<ResumeTokenContents> opened =
          OpenResumeToken(kKey, absl::WebSafeBase64Escape(altered));
      // Byte 0 is the version: a changed one is an unknown version.
      ExpectRefused(opened, i == 0 ? "is not supported by this fetchd"
                                   : kSignatureMessage);
    }
  }
}

TEST(ResumeTokenTest, TruncatedOrExtendedTokensAreRefused) {
  const std::string token = SignResumeToken(kKey, Sample());
  for (size_t n = 0; n < token.size(); ++n) {
    absl::StatusOr<ResumeTokenContents> opened =
        OpenResumeToken(kKey, token.substr(0, n));
    EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(opened.status().message(), HasSubstr("resume_token")) << n;
  }
  const std::string data = Decoded(token);
  ExpectRefused(OpenResumeToken(kKey, absl::WebSafeBase64Escape(data + "x")),
                kSignatureMessage);
  ExpectRefused(OpenResumeToken(kKey, absl::WebSafeBase64Escape(
                                          data.substr(0, data.size() - 1))),
                kSignatureMessage);
}

TEST(ResumeTokenTest, AnotherKeysTokenIsRefused) {
  ExpectRefused(OpenResumeToken(kOtherKey, SignResumeToken(kKey, Sample())),
                kSignatureMessage);
}

// What a caller could build without the key: new contents with a MAC made
// under a guessed key, or no MAC at all.
TEST(ResumeTokenTest, ForgedTokensAreRefused) {
  ResumeTokenContents forged = Sample();
  forged.next.next_url = "http://127.0.0.1:1/elsewhere";
  ExpectRefused(
      OpenResumeToken(kKey, SignResumeToken(std::string(32, '\0'), forged)),
      kSignatureMessage);
  const std::string unsigned_v2 =
      absl::StrCat(std::string(1, static_cast<char>(kResumeTokenVersion)),
                   "0123456789abcdef\ncursor\n7\nhttp://127.0.0.1:1/x");
  ExpectRefused(OpenResumeToken(kKey, absl::WebSafeBase64Escape(unsigned_v2)),
                kSignatureMessage);
  ExpectRefused(OpenResumeToken(kKey, "!!"), "is not a token from");
  ExpectRefused(OpenResumeToken(kKey, ""), "is not a token from");
}

TEST(ResumeTokenTest, UnknownVersionSaysSo) {
  std::string data = Decoded(SignResumeToken(kKey, Sample()));
  data[0] = 3;
  ExpectRefused(OpenResumeToken(kKey, absl::WebSafeBase64Escape(data)),
                "resume_token: format version 3 is not supported by this "
                "fetchd");
}

TEST(ResumeTokenTest, TheOldUnsignedFormatIsRefusedWithAWayOut) {
  const std::string old = absl::WebSafeBase64Escape(
      "p1:0123456789abcdef:3:http://127.0.0.1:1/p?page=4");
  absl::StatusOr<ResumeTokenContents> opened = OpenResumeToken(kKey, old);
  ExpectRefused(opened, "unsigned format");
  EXPECT_THAT(opened.status().message(), HasSubstr("restart the walk"));
}

// Signed contents are still range-checked: an index past 2^62 would
// overflow page arithmetic later.
TEST(ResumeTokenTest, SignedContentsOutOfRangeAreRefused) {
  ResumeTokenContents far = Sample();
  far.next.next_index = int64_t{1} << 62;
  EXPECT_TRUE(OpenResumeToken(kKey, SignResumeToken(kKey, far)).ok());
  far.next.next_index += 1;
  ExpectRefused(OpenResumeToken(kKey, SignResumeToken(kKey, far)),
                "is not a token from");
  far.next.next_index = -1;
  ExpectRefused(OpenResumeToken(kKey, SignResumeToken(kKey, far)),
                "is not a token from");
}

TEST(ResumeTokenTest, RandomKeysDiffer) {
  absl::StatusOr<std::string> a = RandomResumeTokenKey();
  absl::StatusOr<std::string> b = RandomResumeTokenKey();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), kMinResumeTokenKeyBytes);
  EXPECT_NE(*a, *b);
}

class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = ::testing::TempDir() + "/resume_key_XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    std::remove(path().c_str());
    rmdir(dir_.c_str());
  }
  std::string path() const { return dir_ + "/token.key"; }
  void Write(const std::string& contents) {
    std::ofstream(path(), std::ios::binary | std::ios::trunc) << contents;
  }

  std::string dir_;
};

TEST_F(KeyFileTest, ReadsTheKeyWithoutTrailingWhitespace) {
  const std::string key = "0123456789abcdefghijklmnopqrstuvwxyzABCDEF+/";
  Write(key + "\n");
  absl::StatusOr<std::string> read = ReadResumeTokenKey(path());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, key);
}

TEST_F(KeyFileTest, AShortKeyIsAnErrorNamingTheFlag) {
  Write(std::string(31, 'x') + "\n\n");
  absl::StatusOr<std::string> read = ReadResumeTokenKey(path());
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(),
              HasSubstr("--token_key_file=" + path() + " holds 31 bytes"));
  EXPECT_THAT(read.status().message(), HasSubstr("at least 32"));
}

TEST_F(KeyFileTest, AMissingFileIsAnErrorNamingTheFlag) {
  absl::StatusOr<std::string> read = ReadResumeTokenKey(path() + ".absent");
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr("--token_key_file="));
  EXPECT_THAT(read.status().message(), HasSubstr("cannot be read"));
}

}  // namespace
}  // namespace fetchd::request
