// server/auth: the tokens file parser, the constant-time lookup, the
// Authenticator's rule and reloads, identity labels and the TLS file checks.
#include "server/auth/auth.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "tests/support/certs.h"
#include "tests/support/test_server.h"

namespace fetchd::auth {
namespace {

using ::fetchd::testing::WaitFor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kTokenA[] = "aaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kTokenB[] = "bbbbbbbbbbbbbbbbbbbbbbbb";
constexpr char kTokenC[] = "cccccccccccccccccccccccc";

// A temporary directory (tests/support) whose files are written atomically,
// as a Kubernetes Secret's are.
class TempDir : public ::fetchd::testing::TempDir {
 public:
  std::string Write(const std::string& name, const std::string& text) const {
    const std::string path = File(name);
    EXPECT_TRUE(::fetchd::testing::WriteFileAtomically(path, text).ok());
    return path;
  }
};

TEST(TokenSetTest, ParsesNamedAndBareTokensCommentsAndBlankLines) {
  auto tokens = TokenSet::Parse(
      absl::StrCat("# operators\n\n  alice ", kTokenA, "  \n", kTokenB,
                   "\r\n\t# indented comment\nbob\t", kTokenC, "\n"),
      "tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 3u);
  ASSERT_NE(tokens->Find(kTokenA), nullptr);
  EXPECT_EQ(*tokens->Find(kTokenA), "alice");
  // A bare token's identity is its index among the token lines.
  ASSERT_NE(tokens->Find(kTokenB), nullptr);
  EXPECT_EQ(*tokens->Find(kTokenB), "token-1");
  EXPECT_EQ(*tokens->Find(kTokenC), "bob");
  EXPECT_THAT(tokens->identities(), ElementsAre("alice", "token-1", "bob"));
}

TEST(TokenSetTest, FindsOnlyExactTokens) {
  auto tokens = TokenSet::Parse(absl::StrCat("alice ", kTokenA), "f");
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->Find(""), nullptr);
  EXPECT_EQ(tokens->Find(std::string(kTokenA).substr(1)), nullptr);
  EXPECT_EQ(tokens->Find(absl::StrCat(kTokenA, "a")), nullptr);
  EXPECT_EQ(tokens->Find(kTokenB), nullptr);
  std::string almost = kTokenA;
  almost.back() = 'b';
  EXPECT_EQ(tokens->Find(almost), nullptr);
}

TEST(TokenSetTest, SeveralTokensMayShareAnIdentity) {
  auto tokens = TokenSet::Parse(
      absl::StrCat("alice ", kTokenA, "\nalice ", kTokenB, "\n"), "f");
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(*tokens->Find(kTokenA), "alice");
  EXPECT_EQ(*tokens->Find(kTokenB), "alice");
  EXPECT_THAT(tokens->identities(), ElementsAre("alice"));
}

TEST(TokenSetTest, BadLinesAreErrorsNamingTheLineButNotTheToken) {
  struct Case {
    std::string text;
    std::string error;
  };
  const std::vector<Case> cases = {
      {absl::StrCat("# c\nalice ", kTokenA, " extra\n"),
       "f:2: expected \"IDENTITY TOKEN\" or \"TOKEN\", found 3 fields"},
      {"\n\nshort\n", "f:3: the token is shorter than 16 characters"},
      {absl::StrCat("al!ce ", kTokenA), "f:1: the identity may only have"},
      {absl::StrCat("anonymous ", kTokenA),
       "f:1: the identity \"anonymous\" "
       "is reserved"},
      {absl::StrCat("other ", kTokenA), "is reserved"},
      {absl::StrCat(std::string(65, 'x'), " ", kTokenA), "longer than 64"},
      {absl::StrCat("a ", kTokenA, "\nb ", kTokenA),
       "f:2: the same token is on an earlier line"},
      {absl::StrCat("a ", kTokenA, "\xc3\xa9"), "not printable ASCII"},
  };
  for (const Case& c : cases) {
    auto tokens = TokenSet::Parse(c.text, "f");
    ASSERT_FALSE(tokens.ok()) << c.text;
    EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tokens.status().message(), HasSubstr(c.error));
    EXPECT_THAT(tokens.status().message(), Not(HasSubstr(kTokenA)));
  }
}

TEST(TokenSetTest, LoadNamesAMissingFile) {
  auto tokens = TokenSet::Load("/nonexistent/tokens");
  ASSERT_FALSE(tokens.ok());
  EXPECT_THAT(tokens.status().message(), HasSubstr("/nonexistent/tokens"));
}

TEST(ParseBearerTest, TakesTheTokenOfABearerHeader) {
  EXPECT_EQ(*ParseBearer("Bearer abc"), "abc");
  EXPECT_EQ(*ParseBearer("bearer  abc "), "abc");
  EXPECT_EQ(ParseBearer("Basic abc").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_FALSE(ParseBearer("Bearer ").ok());
  EXPECT_FALSE(ParseBearer("Bearer    ").ok());
  EXPECT_FALSE(ParseBearer("abc").ok());
}

TEST(IdentityLabelsTest, IsBoundedWithTheRestAsOther) {
  IdentityLabels labels;
  EXPECT_EQ(labels.Slot("anonymous"), IdentityLabels::kAnonymousSlot);
  EXPECT_EQ(labels.Name(IdentityLabels::kOtherSlot), "other");
  const int alice = labels.Slot("alice");
  EXPECT_EQ(labels.Slot("alice"), alice);
  EXPECT_EQ(labels.Name(alice), "alice");
  for (int i = 0; i < 100; ++i) labels.Slot(absl::StrCat("subject-", i));
  EXPECT_EQ(labels.size(), IdentityLabels::kMaxLabels);
  EXPECT_EQ(labels.Slot("subject-99"), IdentityLabels::kOtherSlot);
  EXPECT_EQ(labels.Slot("alice"), alice);
}

TEST(AuthenticatorTest, WithoutTokensCallersAreAnonymousOrTheirSubject) {
  auto auth = Authenticator::Start({});
  ASSERT_TRUE(auth.ok());
  EXPECT_FALSE((*auth)->tokens_required());
  auto caller = (*auth)->Authenticate(std::nullopt, "");
  ASSERT_TRUE(caller.ok());
  EXPECT_EQ(caller->identity, "anonymous");
  EXPECT_EQ(caller->label, IdentityLabels::kAnonymousSlot);
  caller = (*auth)->Authenticate("Bearer whatever", "client.example");
  ASSERT_TRUE(caller.ok());
  EXPECT_EQ(caller->identity, "client.example");
  EXPECT_EQ((*auth)->labels().Name(caller->label), "client.example");
}

TEST(AuthenticatorTest, WithTokensRightWrongAndMissing) {
  TempDir dir;
  const std::string path =
      dir.Write("tokens", absl::StrCat("alice ", kTokenA, "\n"));
  auto auth = Authenticator::Start({.tokens_file = path});
  ASSERT_TRUE(auth.ok()) << auth.status();
  auto caller =
      (*auth)->Authenticate(absl::StrCat("Bearer ", kTokenA), "subject");
  ASSERT_TRUE(caller.ok());
  EXPECT_EQ(caller->identity, "alice");  // the token names the caller
  EXPECT_EQ((*auth)->labels().Name(caller->label), "alice");
  EXPECT_EQ((*auth)
                ->Authenticate(absl::StrCat("Bearer ", kTokenB), "")
                .status()
                .code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Authenticate(std::nullopt, "subject").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ((*auth)->Authenticate(kTokenA, "").status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(AuthenticatorTest, StartFailsOnABadOrEmptyFile) {
  TempDir dir;
  auto auth =
      Authenticator::Start({.tokens_file = dir.Write("bad", "x y z\n")});
  ASSERT_FALSE(auth.ok());
  EXPECT_THAT(auth.status().message(), HasSubstr("/bad:1:"));
  auth = Authenticator::Start({.tokens_file = dir.Write("empty", "# none\n")});
  ASSERT_FALSE(auth.ok());
  EXPECT_THAT(auth.status().message(), HasSubstr("has no tokens"));
}

TEST(AuthenticatorTest, ReloadKeepsTheOldTokensOnABadFile) {
  TempDir dir;
  const std::string path =
      dir.Write("tokens", absl::StrCat("alice ", kTokenA, "\n"));
  // A long poll: only Reload() reads the file here.
  auto auth = Authenticator::Start(
      {.tokens_file = path, .poll_interval = absl::Hours(1)});
  ASSERT_TRUE(auth.ok());
  dir.Write("tokens", absl::StrCat("bob ", kTokenB, "\n"));
  ASSERT_TRUE((*auth)->Reload().ok());
  EXPECT_FALSE(
      (*auth)->Authenticate(absl::StrCat("Bearer ", kTokenA), "").ok());
  EXPECT_EQ(
      (*auth)->Authenticate(absl::StrCat("Bearer ", kTokenB), "")->identity,
      "bob");
  dir.Write("tokens", "bob short\n");
  absl::Status reload = (*auth)->Reload();
  EXPECT_THAT(reload.message(), HasSubstr(":1: the token is shorter"));
  EXPECT_EQ(
      (*auth)->Authenticate(absl::StrCat("Bearer ", kTokenB), "")->identity,
      "bob");
}

// Two reloads at once (SIGHUP and the watcher): the one that read the older
// file must not publish after the newer one, which would bring a revoked
// token back. Reload A reads a FIFO, so it is held between load and
// publish until the test writes the old tokens into it; meanwhile the file
// is swapped for one without alice's token and reload B starts.
TEST(AuthenticatorTest, ConcurrentReloadsPublishInOrder) {
  TempDir dir;
  const std::string d = dir.path();
  std::ofstream(d + "/v1") << "alice " << kTokenA << "\n";
  std::ofstream(d + "/v2") << "bob " << kTokenB << "\n";
  ASSERT_EQ(mkfifo((d + "/fifo").c_str(), 0600), 0);
  auto point_at = [&](const std::string& target) {
    std::filesystem::create_symlink(target, d + "/tokens.tmp");
    std::filesystem::rename(d + "/tokens.tmp", d + "/tokens");
  };
  point_at("v1");
  auto auth = Authenticator::Start(
      {.tokens_file = d + "/tokens", .poll_interval = absl::Hours(1)});
  ASSERT_TRUE(auth.ok()) << auth.status();
  point_at("fifo");
  std::thread a([&] { (*auth)->Reload("a").IgnoreError(); });
  int fifo = -1;  // a writer can open it once reload A has it open
  ASSERT_TRUE(WaitFor(
      [&] {
        fifo = open((d + "/fifo").c_str(), O_WRONLY | O_NONBLOCK);
        return fifo >= 0;
      },
      absl::Seconds(10), "reload A to open the FIFO"));
  point_at("v2");  // alice's token revoked
  absl::Notification b_done;
  std::thread b([&] {
    (*auth)->Reload("b").IgnoreError();
    b_done.Notify();
  });
  // Unserialized, B publishes now; serialized, it waits for A. Either way
  // the outcome below must be B's file.
  b_done.WaitForNotificationWithTimeout(absl::Milliseconds(500));
  const std::string old_tokens = absl::StrCat("alice ", kTokenA, "\n");
  ASSERT_EQ(write(fifo, old_tokens.data(), old_tokens.size()),
            static_cast<ssize_t>(old_tokens.size()));
  close(fifo);
  a.join();
  b.join();
  EXPECT_FALSE(
      (*auth)->Authenticate(absl::StrCat("Bearer ", kTokenA), "").ok());
  auto bob = (*auth)->Authenticate(absl::StrCat("Bearer ", kTokenB), "");
  ASSERT_TRUE(bob.ok()) << bob.status();
  EXPECT_EQ(bob->identity, "bob");
}

TEST(AuthenticatorTest, SeesTheFileChangeThroughASymlinkSwap) {
  // The layout of a Kubernetes Secret volume: tokens -> ..data/tokens,
  // ..data -> ..v1; an update writes ..v2 and swaps ..data.
  TempDir dir;
  const std::string d = dir.path();
  std::filesystem::create_directory(d + "/..v1");
  std::ofstream(d + "/..v1/tokens") << "alice " << kTokenA << "\n";
  std::filesystem::create_directory_symlink("..v1", d + "/..data");
  std::filesystem::create_symlink("..data/tokens", d + "/tokens");
  auto auth = Authenticator::Start(
      {.tokens_file = d + "/tokens", .poll_interval = absl::Milliseconds(20)});
  ASSERT_TRUE(auth.ok()) << auth.status();
  std::filesystem::create_directory(d + "/..v2");
  std::ofstream(d + "/..v2/tokens") << "carol " << kTokenC << "\n";
  std::filesystem::create_directory_symlink("..v2", d + "/..data_tmp");
  std::filesystem::rename(d + "/..data_tmp", d + "/..data");
  EXPECT_TRUE(WaitFor(
      [&] {
        auto caller =
            (*auth)->Authenticate(absl::StrCat("Bearer ", kTokenC), "");
        return caller.ok() && caller->identity == "carol";
      },
      absl::Seconds(10), "the swapped-in token to be accepted"));
  EXPECT_FALSE(
      (*auth)->Authenticate(absl::StrCat("Bearer ", kTokenA), "").ok());
}

TEST(CheckTlsFilesTest, CertAndKeyGoTogether) {
  EXPECT_TRUE(CheckTlsFiles({}).ok());
  EXPECT_THAT(CheckTlsFiles({.cert = "c"}).message(),
              HasSubstr("--tls_cert and --tls_key go together"));
  EXPECT_THAT(CheckTlsFiles({.key = "k"}).message(),
              HasSubstr("--tls_cert and --tls_key go together"));
  EXPECT_THAT(CheckTlsFiles({.client_ca = "ca"}).message(),
              HasSubstr("--tls_client_ca needs --tls_cert"));
  EXPECT_THAT(CheckTlsFiles({.cert = "/nonexistent/c", .key = "/nonexistent/k"})
                  .message(),
              HasSubstr("cannot read --tls_cert /nonexistent/c"));
  TempDir dir;
  const std::string junk = dir.Write("junk.pem", "not pem\n");
  EXPECT_THAT(CheckTlsFiles({.cert = junk, .key = junk}).message(),
              HasSubstr("holds no PEM certificate"));
}

}  // namespace
}  // namespace fetchd::auth
