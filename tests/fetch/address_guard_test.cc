// The SSRF guard. Two halves:
//  - the policy alone, on socket addresses built in memory and never
//    connected to: every address class, every IPv6 form carrying an IPv4
//    address, the CIDR and host flags and their precedence;
//  - the guard as the real engine's address policy, against the loopback
//    test origin: URL spellings of loopback, names mapped to loopback with
//    CURLOPT_RESOLVE, DNS rebinding, redirects, retries, IDNA. Every engine
//    here wraps the guard in LoopbackOnly, so no connection leaves
//    loopback even if the guard is broken.
#include "server/fetch/address_guard.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "server/fetch/fetch.h"
#include "tests/support/loopback_harness.h"
#include "tests/support/origin.h"
#include "tests/support/test_server.h"

namespace fetchd::fetch {
namespace {

using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::LoopbackOnly;
using ::fetchd::testing::Origin;
using ::testing::HasSubstr;
using ::testing::Not;

// --- The policy alone
// ---------------------------------------------------------

// A socket address for a literal, as curl would hand it to the policy.
struct Sock {
  explicit Sock(const std::string& literal, uint16_t port = 80) {
    std::memset(&storage, 0, sizeof(storage));
    auto* in = reinterpret_cast<sockaddr_in*>(&storage);
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
    if (inet_pton(AF_INET, literal.c_str(), &in->sin_addr) == 1) {
      in->sin_family = AF_INET;
      in->sin_port = htons(port);
      length = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, literal.c_str(), &in6->sin6_addr) == 1) {
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(port);
      length = sizeof(sockaddr_in6);
    } else {
      ADD_FAILURE() << "not an IP literal: " << literal;
    }
  }
  const sockaddr* get() const {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
  sockaddr_storage storage;
  socklen_t length = 0;
};

std::unique_ptr<AddressGuard> NewGuard(const AddressGuardOptions& options) {
  absl::StatusOr<std::unique_ptr<AddressGuard>> guard =
      AddressGuard::Create(options);
  EXPECT_TRUE(guard.ok()) << guard.status();
  return guard.ok() ? *std::move(guard) : nullptr;
}

absl::Status Check(const AddressGuard& guard, const std::string& literal,
                   absl::string_view host = "origin.example") {
  Sock sock(literal);
  return guard.CheckConnection(sock.get(), sock.length, host);
}

AddressClass ClassOf(const std::string& literal) {
  std::optional<IpAddress> ip = IpAddress::Parse(literal);
  EXPECT_TRUE(ip.has_value()) << literal;
  return ip.has_value() ? ClassifyAddress(*ip).cls : AddressClass::kPublic;
}

struct Case {
  const char* literal;
  AddressClass cls;
};

// Every special-purpose class, written as IPv4 and IPv6 literals, and in
// each IPv6 form that carries an IPv4 address.
const Case kSpecial[] = {
    // IPv4
    {"127.0.0.1", AddressClass::kLoopback},
    {"127.255.255.254", AddressClass::kLoopback},
    {"0.0.0.0", AddressClass::kUnspecified},
    {"0.1.2.3", AddressClass::kUnspecified},
    {"10.0.0.1", AddressClass::kPrivate},
    {"10.255.255.255", AddressClass::kPrivate},
    {"172.16.0.1", AddressClass::kPrivate},
    {"172.31.255.254", AddressClass::kPrivate},
    {"192.168.1.1", AddressClass::kPrivate},
    {"100.64.0.1", AddressClass::kCgnat},
    {"100.127.255.254", AddressClass::kCgnat},
    {"169.254.169.254", AddressClass::kLinkLocal},
    {"169.254.0.1", AddressClass::kLinkLocal},
    {"224.0.0.1", AddressClass::kMulticast},
    {"239.255.255.250", AddressClass::kMulticast},
    {"255.255.255.255", AddressClass::kBroadcast},
    {"240.0.0.1", AddressClass::kReserved},
    {"254.1.2.3", AddressClass::kReserved},
    {"192.0.0.8", AddressClass::kIetfProtocol},
    {"192.0.0.170", AddressClass::kIetfProtocol},
    {"198.18.0.1", AddressClass::kBenchmarking},
    {"198.19.255.254", AddressClass::kBenchmarking},
    {"192.0.2.1", AddressClass::kDocumentation},
    {"198.51.100.7", AddressClass::kDocumentation},
    {"203.0.113.9", AddressClass::kDocumentation},
    {"192.88.99.1", AddressClass::kReserved},
    // IPv6
    {"::1", AddressClass::kLoopback},
    {"::", AddressClass::kUnspecified},
    {"fe80::1", AddressClass::kLinkLocal},
    {"febf:ffff::1", AddressClass::kLinkLocal},
    {"fc00::1", AddressClass::kUniqueLocal},
    {"fd12:3456:789a::1", AddressClass::kUniqueLocal},
    {"fd00:ec2::254", AddressClass::kUniqueLocal},  // AWS IPv6 metadata
    {"fec0::1", AddressClass::kPrivate},            // site-local
    {"ff02::1", AddressClass::kMulticast},
    {"ff05::1:3", AddressClass::kMulticast},
    {"2001:db8::1", AddressClass::kDocumentation},
    {"3fff::1", AddressClass::kDocumentation},
    {"2001:2::1", AddressClass::kBenchmarking},
    {"100::1", AddressClass::kReserved},
    {"64:ff9b:1::a00:1", AddressClass::kPrivate},  // local-use NAT64
    {"4000::1", AddressClass::kReserved},          // outside 2000::/3
    // IPv4-mapped ::ffff:0:0/96
    {"::ffff:127.0.0.1", AddressClass::kLoopback},
    {"::ffff:7f00:1", AddressClass::kLoopback},
    {"::ffff:10.0.0.1", AddressClass::kPrivate},
    {"::ffff:169.254.169.254", AddressClass::kLinkLocal},
    {"::ffff:100.64.0.1", AddressClass::kCgnat},
    {"::ffff:0.0.0.0", AddressClass::kUnspecified},
    {"::ffff:192.0.2.1", AddressClass::kDocumentation},
    // IPv4-compatible ::/96
    {"::127.0.0.1", AddressClass::kLoopback},
    {"::10.1.2.3", AddressClass::kPrivate},
    {"::169.254.169.254", AddressClass::kLinkLocal},
    // IPv4-translated ::ffff:0:0:0/96
    {"::ffff:0:127.0.0.1", AddressClass::kLoopback},
    {"::ffff:0:192.168.0.1", AddressClass::kPrivate},
    // NAT64 64:ff9b::/96
    {"64:ff9b::127.0.0.1", AddressClass::kLoopback},
    {"64:ff9b::7f00:1", AddressClass::kLoopback},
    {"64:ff9b::a9fe:a9fe", AddressClass::kLinkLocal},
    {"64:ff9b::10.0.0.1", AddressClass::kPrivate},
    {"64:ff9b::224.0.0.1", AddressClass::kMulticast},
    // 6to4 2002::/16: the IPv4 address in bits 16..47
    {"2002:7f00:1::1", AddressClass::kLoopback},
    {"2002:a9fe:a9fe::", AddressClass::kLinkLocal},
    {"2002:c0a8:101::1", AddressClass::kPrivate},
    {"2002:ac10:1:2::3", AddressClass::kPrivate},
    // Teredo 2001::/32: the client's IPv4 address inverted in the last 32
    // bits (~127.0.0.1 = 80ff:fffe), the server's in bits 32..63.
    {"2001:0:808:808::80ff:fffe", AddressClass::kLoopback},
    {"2001:0:a00:1::fefe:fefe", AddressClass::kPrivate},  // server 10.0.0.1
};

const char* const kPublic[] = {
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "172.32.0.1",
    "100.128.0.1",
    "198.20.0.1",
    "11.0.0.1",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "2001:0:808:808::fefe:fefe",
};

TEST(ClassifyAddressTest, EverySpecialPurposeRange) {
  for (const Case& c : kSpecial) {
    EXPECT_EQ(AddressClassName(ClassOf(c.literal)), AddressClassName(c.cls))
        << c.literal;
  }
  for (const char* literal : kPublic) {
    EXPECT_EQ(ClassOf(literal), AddressClass::kPublic) << literal;
  }
}

TEST(ClassifyAddressTest, NamesTheIPv4AddressAnIPv6FormCarries) {
  const std::pair<const char*, const char*> forms[] = {
      {"::ffff:127.0.0.1", "IPv4-mapped"},
      {"::127.0.0.1", "IPv4-compatible"},
      {"::ffff:0:127.0.0.1", "IPv4-translated"},
      {"64:ff9b::7f00:1", "NAT64"},
      {"2002:7f00:1::1", "6to4"},
      {"2001:0:808:808::80ff:fffe", "Teredo"},
  };
  for (const auto& [literal, form] : forms) {
    AddressClassification c = ClassifyAddress(*IpAddress::Parse(literal));
    EXPECT_EQ(c.form, form) << literal;
    ASSERT_TRUE(c.embedded.has_value()) << literal;
    EXPECT_EQ(c.embedded->ToString(), "127.0.0.1") << literal;
  }
}

TEST(AddressGuardTest, DefaultRefusesEveryClassAndNamesItAddressAndHost) {
  auto guard = NewGuard({});
  ASSERT_NE(guard, nullptr);
  EXPECT_TRUE(guard->refuses_anything());
  for (const Case& c : kSpecial) {
    absl::Status s = Check(*guard, c.literal, "victim.example");
    EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied) << c.literal;
    EXPECT_THAT(s.message(), HasSubstr(AddressClassName(c.cls))) << c.literal;
    EXPECT_THAT(s.message(), HasSubstr("\"victim.example\"")) << c.literal;
    EXPECT_THAT(s.message(), HasSubstr("--allow_private_networks"));
  }
  for (const char* literal : kPublic) {
    EXPECT_TRUE(Check(*guard, literal).ok()) << literal;
  }
  EXPECT_GT(guard->refusals(AddressClass::kLoopback), 0);
}

TEST(AddressGuardTest, MessageSpellsOutMappedFormsAndTheMetadataService) {
  auto guard = NewGuard({});
  ASSERT_NE(guard, nullptr);
  absl::Status s = Check(*guard, "::ffff:169.254.169.254", "metadata.test");
  EXPECT_EQ(s.message(),
            "refused to connect to ::ffff:169.254.169.254 for host "
            "\"metadata.test\": a link_local address (IPv4-mapped "
            "169.254.169.254), the cloud metadata service; fetchd connects "
            "only to public addresses unless --allow_private_networks or "
            "--allow_cidrs opens the range");
  s = Check(*guard, "10.1.2.3", "db.internal");
  EXPECT_THAT(s.message(), HasSubstr("10.1.2.3"));
  EXPECT_THAT(s.message(), HasSubstr("a private address"));
}

TEST(AddressGuardTest, AllowPrivateNetworksOpensEveryClass) {
  auto guard = NewGuard({.allow_private_networks = true});
  ASSERT_NE(guard, nullptr);
  EXPECT_FALSE(guard->refuses_anything());
  for (const Case& c : kSpecial) {
    EXPECT_TRUE(Check(*guard, c.literal).ok()) << c.literal;
  }
}

TEST(AddressGuardTest, NonIpAddressesAreRefused) {
  auto guard = NewGuard({.allow_private_networks = true});
  ASSERT_NE(guard, nullptr);
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  absl::Status s =
      guard->CheckConnection(reinterpret_cast<sockaddr*>(&un), sizeof(un), "h");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  // A truncated IPv6 address is not read past its length.
  Sock six("::1");
  EXPECT_EQ(guard->CheckConnection(six.get(), sizeof(sockaddr_in), "h").code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(AddressGuardTest, AllowCidrsOpensOnlyTheirRanges) {
  auto guard =
      NewGuard({.allow_cidrs = {"10.1.0.0/16", " 127.0.0.1 ", "fd00:1::/32"}});
  ASSERT_NE(guard, nullptr);
  EXPECT_TRUE(Check(*guard, "10.1.2.3").ok());
  EXPECT_TRUE(Check(*guard, "127.0.0.1").ok());  // a bare address: /32
  EXPECT_TRUE(Check(*guard, "fd00:1::5").ok());
  // An IPv4 entry matches the IPv4 address an IPv6 form carries.
  EXPECT_TRUE(Check(*guard, "::ffff:10.1.9.9").ok());
  EXPECT_TRUE(Check(*guard, "64:ff9b::a01:101").ok());  // NAT64 10.1.1.1
  EXPECT_FALSE(Check(*guard, "10.2.0.1").ok());
  EXPECT_FALSE(Check(*guard, "127.0.0.2").ok());
  EXPECT_FALSE(Check(*guard, "::1").ok());
  EXPECT_FALSE(Check(*guard, "fd00:2::5").ok());
  EXPECT_FALSE(Check(*guard, "169.254.169.254").ok());
  EXPECT_TRUE(Check(*guard, "8.8.8.8").ok());  // public stays allowed
}

TEST(AddressGuardTest, DenyCidrsWinOverAllowCidrsAndAllowPrivateNetworks) {
  auto guard =
      NewGuard({.allow_private_networks = true,
                .allow_cidrs = {"10.0.0.0/8"},
                .deny_cidrs = {"10.9.0.0/16", "8.8.8.0/24", "2606:4700::/32"}});
  ASSERT_NE(guard, nullptr);
  EXPECT_TRUE(guard->refuses_anything());
  EXPECT_TRUE(Check(*guard, "10.8.0.1").ok());
  EXPECT_TRUE(Check(*guard, "192.168.0.1").ok());
  absl::Status s = Check(*guard, "10.9.0.1", "h.example");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("--deny_cidrs entry 10.9.0.0/16"));
  EXPECT_THAT(s.message(), HasSubstr("\"h.example\""));
  // Public addresses can be denied too, in every spelling.
  EXPECT_FALSE(Check(*guard, "8.8.8.8").ok());
  EXPECT_FALSE(Check(*guard, "::ffff:8.8.8.8").ok());
  EXPECT_FALSE(Check(*guard, "64:ff9b::808:808").ok());
  EXPECT_FALSE(Check(*guard, "2002:808:808::1").ok());
  EXPECT_FALSE(Check(*guard, "2606:4700:4700::1111").ok());
  EXPECT_TRUE(Check(*guard, "1.1.1.1").ok());
}

TEST(AddressGuardTest, CidrHostBitsAreMaskedOff) {
  auto guard = NewGuard({.allow_cidrs = {"10.1.2.3/8", "172.16.5.5/12"}});
  ASSERT_NE(guard, nullptr);
  EXPECT_TRUE(Check(*guard, "10.200.0.1").ok());
  EXPECT_TRUE(Check(*guard, "172.31.0.1").ok());
}

TEST(AddressGuardTest, BadEntriesAreInvalidArgumentNamingTheFlag) {
  const std::pair<AddressGuardOptions, const char*> bad[] = {
      {{.allow_cidrs = {"10.0.0.0/33"}}, "--allow_cidrs entry \"10.0.0.0/33\""},
      {{.allow_cidrs = {"10.0.0.0/x"}}, "--allow_cidrs entry \"10.0.0.0/x\""},
      {{.deny_cidrs = {"example.com"}}, "--deny_cidrs entry \"example.com\""},
      {{.deny_cidrs = {"::1/129"}}, "--deny_cidrs entry \"::1/129\""},
      {{.deny_cidrs = {"10.0.0/8"}}, "--deny_cidrs entry \"10.0.0/8\""},
      {{.allow_hosts = {"a/b"}}, "--allow_hosts entry \"a/b\""},
      {{.allow_hosts = {"*"}}, "--allow_hosts entry \"*\""},
      {{.deny_hosts = {"foo.*.com"}}, "--deny_hosts entry \"foo.*.com\""},
      {{.deny_hosts = {"\xe2\x98\x83.net"}}, "--deny_hosts entry"},  // ☃
      {{.deny_hosts = {"a b"}}, "--deny_hosts entry \"a b\""},
  };
  for (const auto& [options, want] : bad) {
    absl::StatusOr<std::unique_ptr<AddressGuard>> guard =
        AddressGuard::Create(options);
    ASSERT_FALSE(guard.ok()) << want;
    EXPECT_EQ(guard.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(guard.status().message(), HasSubstr(want));
  }
  // Empty entries (",," in a flag) are skipped.
  EXPECT_TRUE(
      AddressGuard::Create({.allow_cidrs = {""}, .deny_hosts = {" "}}).ok());
}

TEST(NormalizeHostTest, LowerCaseNoTrailingDotNoBracketsIdnaAscii) {
  EXPECT_EQ(*NormalizeHost("API.Example.COM."), "api.example.com");
  EXPECT_EQ(*NormalizeHost("[::FFFF:127.0.0.1]"), "::ffff:127.0.0.1");
  EXPECT_EQ(*NormalizeHost("b\xc3\xbc"
                           "cher.example"),
            "xn--bcher-kva.example");
  EXPECT_EQ(*NormalizeHost("B\xc3\x9c"
                           "CHER.Example."),
            "xn--bcher-kva.example");  // BÜCHER
  EXPECT_EQ(*NormalizeHost("xn--bcher-kva.example"), "xn--bcher-kva.example");
  absl::StatusOr<std::string> snowman = NormalizeHost("\xe2\x98\x83.net");
  EXPECT_EQ(snowman.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(snowman.status().message(),
              HasSubstr("not a valid international domain name"));
  EXPECT_FALSE(NormalizeHost("a\xff"
                             "b")
                   .ok());  // not UTF-8
}

TEST(AddressGuardTest, HostPatternsExactAndSuffix) {
  auto guard =
      NewGuard({.allow_private_networks = true,
                .deny_hosts = {"*.internal.example", "Evil.Example."}});
  ASSERT_NE(guard, nullptr);
  EXPECT_TRUE(guard->has_host_rules());
  EXPECT_FALSE(guard->CheckHost("a.internal.example").ok());
  EXPECT_FALSE(guard->CheckHost("a.b.internal.example").ok());
  EXPECT_TRUE(guard->CheckHost("internal.example").ok());  // not itself
  EXPECT_TRUE(guard->CheckHost("xinternal.example").ok());
  EXPECT_FALSE(guard->CheckHost(*NormalizeHost("EVIL.example.")).ok());
  EXPECT_TRUE(guard->CheckHost("notevil.example").ok());
  absl::Status s = guard->CheckHost("db.internal.example");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(),
            "refused host \"db.internal.example\": it matches --deny_hosts "
            "entry \"*.internal.example\"");
  // Through CheckConnection as well, before the address.
  EXPECT_FALSE(Check(*guard, "8.8.8.8", "evil.example").ok());
}

// A rule matches the host however either is spelled: every trailing dot
// goes, IP literals are compared in one canonical form.
TEST(AddressGuardTest, HostPatternsMatchEverySpelling) {
  auto guard = NewGuard({.allow_private_networks = true,
                         .deny_hosts = {"0:0::1", "[0:0:0:0:0:FFFF:A00:1]",
                                        "evil.example..", "*.bad.example."}});
  ASSERT_NE(guard, nullptr);
  EXPECT_FALSE(guard->CheckHost("::1").ok());
  EXPECT_FALSE(guard->CheckHost(*NormalizeHost("[0::1]")).ok());
  EXPECT_FALSE(guard->CheckHost(*UrlHost("http://[::1]:80/")).ok());
  EXPECT_FALSE(guard->CheckHost("::ffff:10.0.0.1").ok());
  EXPECT_FALSE(guard->CheckHost(*NormalizeHost("evil.example..")).ok());
  EXPECT_FALSE(guard->CheckHost(*NormalizeHost("EVIL.example...")).ok());
  EXPECT_FALSE(guard->CheckHost(*NormalizeHost("a.bad.example..")).ok());
  EXPECT_TRUE(guard->CheckHost("::2").ok());
  EXPECT_EQ(*NormalizeHost("a.example.."), "a.example");
  EXPECT_EQ(*NormalizeHost("0:0:0::1"), "::1");

  auto allow = NewGuard({.allow_hosts = {"0:0::1"}});
  ASSERT_NE(allow, nullptr);
  EXPECT_TRUE(allow->CheckHost("::1").ok());

  for (const char* entry : {"..", "127.1", "0x7f.0.0.1"}) {
    absl::StatusOr<std::unique_ptr<AddressGuard>> bad =
        AddressGuard::Create({.deny_hosts = {entry}});
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument) << entry;
  }
}

TEST(AddressGuardTest, AllowHostsIsAnAllowListAndDenyHostsWins) {
  auto guard = NewGuard({.allow_hosts = {"api.example.com", "*.cdn.example",
                                         "b\xc3\xbc"
                                         "cher.example"},
                         .deny_hosts = {"secret.cdn.example"}});
  ASSERT_NE(guard, nullptr);
  EXPECT_TRUE(guard->CheckHost("api.example.com").ok());
  EXPECT_TRUE(guard->CheckHost("img.cdn.example").ok());
  EXPECT_TRUE(guard->CheckHost("xn--bcher-kva.example").ok());  // IDNA
  EXPECT_FALSE(guard->CheckHost("secret.cdn.example").ok());
  absl::Status s = guard->CheckHost("other.example.com");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.message(),
            "refused host \"other.example.com\": it is not on --allow_hosts");
  EXPECT_TRUE(Check(*guard, "8.8.8.8", "api.example.com").ok());
  EXPECT_FALSE(Check(*guard, "8.8.8.8", "other.example.com").ok());
  EXPECT_EQ(guard->host_refusals(), 3);
}

// Recommended and chosen: a host on --allow_hosts does not open private
// addresses; the address check still applies (--allow_cidrs opens ranges).
TEST(AddressGuardTest, AnAllowedHostStillCannotReachPrivateAddresses) {
  auto guard = NewGuard({.allow_hosts = {"api.example.com"}});
  ASSERT_NE(guard, nullptr);
  absl::Status s = Check(*guard, "10.0.0.7", "api.example.com");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("a private address"));
  auto opened = NewGuard(
      {.allow_cidrs = {"10.0.0.0/24"}, .allow_hosts = {"api.example.com"}});
  ASSERT_NE(opened, nullptr);
  EXPECT_TRUE(Check(*opened, "10.0.0.7", "api.example.com").ok());
}

// Behind an explicit proxy the connection is to the proxy, which does the
// address checks: only host rules and IP-literal hosts are ours.
TEST(AddressGuardTest, BehindAProxyOnlyHostsAndLiteralsAreChecked) {
  auto guard = NewGuard({.deny_hosts = {"evil.example"}, .behind_proxy = true});
  ASSERT_NE(guard, nullptr);
  EXPECT_TRUE(Check(*guard, "10.0.0.5", "api.example.com").ok());
  EXPECT_FALSE(Check(*guard, "10.0.0.5", "evil.example").ok());
  absl::Status s = Check(*guard, "10.0.0.5", "127.0.0.1");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("loopback"));
  EXPECT_FALSE(Check(*guard, "10.0.0.5", "169.254.169.254").ok());
  EXPECT_FALSE(Check(*guard, "10.0.0.5", "::ffff:127.0.0.1").ok());
}

// --- The guard in the real engine
// ----------------------------------------------

FetchSpec Get(const std::string& url, int max_attempts = 3) {
  FetchSpec spec;
  spec.url = url;
  spec.timeout = absl::Seconds(10);
  spec.retry.max_attempts = max_attempts;
  spec.retry.initial_backoff = absl::Milliseconds(1);
  spec.retry.max_backoff = absl::Milliseconds(5);
  spec.retry.jitter = false;
  return spec;
}

// An engine whose address policy is the guard inside LoopbackOnly: an
// address outside loopback is refused whatever the guard says, and the
// test fails if the guard allowed it (unless it set `escapes` to record
// them instead).
class GuardedEngine {
 public:
  explicit GuardedEngine(AddressGuardOptions guard_options,
                         Engine::Options options = {},
                         bool record_escapes = false) {
    auto guard = AddressGuard::Create(guard_options);
    EXPECT_TRUE(guard.ok()) << guard.status();
    if (!guard.ok()) return;
    guard_ = *std::move(guard);
    const AddressGuard* g = guard_.get();
    ::fetchd::testing::EscapeHandler on_escape;
    if (record_escapes) {
      on_escape = [this](const std::string& address, absl::string_view host) {
        absl::MutexLock lock(&mu_);
        escapes_.push_back(absl::StrCat(address, " ", host));
      };
    }
    options.address_policy = LoopbackOnly(
        [g](const sockaddr* a, socklen_t n, absl::string_view host) {
          return g->CheckConnection(a, n, host);
        },
        std::move(on_escape));
    if (g->has_host_rules()) {
      options.host_policy = [g](absl::string_view h) {
        return g->CheckHost(h);
      };
    }
    auto engine = Engine::Start(std::move(options));
    EXPECT_TRUE(engine.ok()) << engine.status();
    if (engine.ok()) engine_ = *std::move(engine);
  }

  std::vector<FetchResult> Run(std::vector<FetchSpec> specs) {
    std::vector<FetchResult> results(specs.size());
    absl::Notification done;
    if (engine_ == nullptr) {
      ADD_FAILURE() << "no engine";
      return results;
    }
    engine_->Submit(
        std::move(specs), {},
        [&](size_t i, FetchResult r) { results[i] = std::move(r); },
        [&] { done.Notify(); });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(kEventTimeout));
    return results;
  }
  FetchResult Fetch(const std::string& url, int max_attempts = 3) {
    return std::move(Run({Get(url, max_attempts)})[0]);
  }

  // The pages of a walk from `first_url` with `strategy`, and how it ended.
  std::pair<std::vector<Page>, absl::Status> Walk(const std::string& first_url,
                                                  PageStrategy strategy) {
    std::vector<Page> pages;
    absl::Status end = absl::UnknownError("no end");
    absl::Notification done;
    if (engine_ == nullptr) return {std::move(pages), end};
    FetchSpec first = Get(first_url, 1);
    engine_->Walk(
        first, strategy, Paginator(strategy, first_url).StartPosition(),
        {.prefetch = 4}, [&](Page page) { pages.push_back(std::move(page)); },
        [&](absl::Status s) {
          end = std::move(s);
          done.Notify();
        });
    EXPECT_TRUE(done.WaitForNotificationWithTimeout(kEventTimeout));
    return {std::move(pages), end};
  }

  std::vector<std::string> escapes() {
    absl::MutexLock lock(&mu_);
    return escapes_;
  }

 private:
  std::unique_ptr<AddressGuard> guard_;  // outlives the engine
  std::unique_ptr<Engine> engine_;
  absl::Mutex mu_;
  std::vector<std::string> escapes_ ABSL_GUARDED_BY(mu_);
};

std::string Resolve(const std::string& name, int port,
                    const std::string& addresses) {
  return absl::StrCat(name, ":", port, ":", addresses);
}

// A query value for /redirect-to?url=...
std::string Encoded(const std::string& url) {
  return absl::StrReplaceAll(url, {{"%", "%25"},
                                   {":", "%3A"},
                                   {"/", "%2F"},
                                   {"?", "%3F"},
                                   {"&", "%26"},
                                   {"=", "%3D"}});
}

class EngineGuardTest : public ::testing::Test {
 protected:
  std::string Port() const { return absl::StrCat(origin_.port()); }
  // The ways a URL can say "127.0.0.1" (or loopback) without saying it.
  std::vector<std::string> LoopbackSpellings() const {
    return {
        absl::StrCat("http://2130706433:", Port(), "/json"),  // decimal
        absl::StrCat("http://0177.0.0.1:", Port(), "/json"),  // octal
        absl::StrCat("http://0x7f.0.0.1:", Port(), "/json"),  // hex
        absl::StrCat("http://0x7f000001:", Port(), "/json"),  // hex, one part
        absl::StrCat("http://127.1:", Port(), "/json"),       // short form
        absl::StrCat("http://[::ffff:127.0.0.1]:", Port(), "/json"),
        absl::StrCat("http://[::1]:", Port(), "/json"),
        absl::StrCat("http://localhost:", Port(), "/json"),
        origin_.Url("/json"),
    };
  }
  Origin origin_;
};

// Refused on the address actually connected to, before any socket
// exists: PERMISSION_DENIED naming the class, one attempt although the
// policy would retry, and the origin sees nothing.
TEST_F(EngineGuardTest, EverySpellingOfLoopbackIsRefusedAndNotRetried) {
  GuardedEngine engine({});
  for (const std::string& url : LoopbackSpellings()) {
    FetchResult r = engine.Fetch(url);
    EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied)
        << url << ": " << r.status;
    EXPECT_THAT(r.status.message(), HasSubstr("loopback")) << url;
    EXPECT_THAT(r.status.message(), Not(HasSubstr("test harness"))) << url;
    EXPECT_EQ(r.attempts, 1) << url;
    EXPECT_EQ(r.http_status, 0) << url;
  }
  EXPECT_EQ(origin_.requests(), 0);
}

TEST_F(EngineGuardTest, AllowPrivateNetworksReachesTheOriginInEverySpelling) {
  GuardedEngine engine({.allow_private_networks = true});
  int reached = 0;
  for (const std::string& url : LoopbackSpellings()) {
    FetchResult r = engine.Fetch(url, 1);
    if (url.find("[::1]") != std::string::npos) {
      // Allowed, but the origin listens on 127.0.0.1 only.
      EXPECT_EQ(r.status.code(), absl::StatusCode::kUnavailable) << r.status;
      continue;
    }
    EXPECT_TRUE(r.status.ok()) << url << ": " << r.status;
    EXPECT_EQ(r.http_status, 200) << url;
    ++reached;
  }
  EXPECT_EQ(reached, 8);
  EXPECT_EQ(origin_.requests(), reached);
}

// --allow_cidrs=127.0.0.0/8 opens the IPv4 range (and its mapped form) but
// not ::1. "localhost" resolves to both: ::1 is refused, 127.0.0.1 answers.
TEST_F(EngineGuardTest, AllowCidrsOpensTheOriginOnly) {
  GuardedEngine engine({.allow_cidrs = {"127.0.0.0/8"}});
  EXPECT_TRUE(engine.Fetch(origin_.Url("/json")).status.ok());
  EXPECT_TRUE(
      engine.Fetch(absl::StrCat("http://[::ffff:127.0.0.1]:", Port(), "/json"))
          .status.ok());
  EXPECT_TRUE(engine.Fetch(absl::StrCat("http://localhost:", Port(), "/json"))
                  .status.ok());
  FetchResult v6 = engine.Fetch(absl::StrCat("http://[::1]:", Port(), "/json"));
  EXPECT_EQ(v6.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(v6.attempts, 1);
  EXPECT_EQ(origin_.requests(), 3);
}

TEST_F(EngineGuardTest, DenyCidrsWinsOverAllowPrivateNetworks) {
  GuardedEngine engine(
      {.allow_private_networks = true, .deny_cidrs = {"127.0.0.1/32"}});
  FetchResult r = engine.Fetch(origin_.Url("/json"));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status.message(), HasSubstr("--deny_cidrs entry 127.0.0.1/32"));
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(origin_.requests(), 0);
}

// A name that resolves to loopback (CURLOPT_RESOLVE, no DNS) is refused on
// its address; the message names the host as the URL wrote it.
TEST_F(EngineGuardTest, ANameResolvingToLoopbackIsRefused) {
  const std::string url = absl::StrCat("http://origin.test:", Port(), "/json");
  GuardedEngine guarded(
      {}, {.resolve = {Resolve("origin.test", origin_.port(), "127.0.0.1")}});
  FetchResult r = guarded.Fetch(url);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status.message(),
              HasSubstr("refused to connect to 127.0.0.1 for host "
                        "\"origin.test\": a loopback address"));
  EXPECT_EQ(origin_.requests(), 0);
  GuardedEngine open(
      {.allow_private_networks = true},
      {.resolve = {Resolve("origin.test", origin_.port(), "127.0.0.1")}});
  EXPECT_TRUE(open.Fetch(url).status.ok());
  EXPECT_EQ(origin_.requests(), 1);
}

// DNS rebinding: the same name, first public then loopback. The policy
// judges each connection's real address, not the name: the public answer
// is allowed by the guard (and stopped by the harness: nothing leaves
// loopback), the loopback answer is refused by the guard.
TEST_F(EngineGuardTest, DnsRebindingIsJudgedOnEachConnectionsAddress) {
  const std::string url = absl::StrCat("http://rebind.test:", Port(), "/json");
  GuardedEngine first(
      {}, {.resolve = {Resolve("rebind.test", origin_.port(), "1.1.1.1")}},
      /*record_escapes=*/true);
  FetchResult r = first.Fetch(url, 1);
  EXPECT_THAT(r.status.message(), HasSubstr("test harness")) << r.status;
  EXPECT_THAT(first.escapes(),
              ::testing::ElementsAre("1.1.1.1 rebind.test"));  // guard: ok

  GuardedEngine rebound(
      {}, {.resolve = {Resolve("rebind.test", origin_.port(), "127.0.0.1")}},
      /*record_escapes=*/true);
  r = rebound.Fetch(url);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status.message(), HasSubstr("loopback"));
  EXPECT_THAT(rebound.escapes(), ::testing::IsEmpty());

  // One lookup with both answers: each address is asked on its own.
  GuardedEngine both({},
                     {.resolve = {Resolve("rebind.test", origin_.port(),
                                          "1.1.1.1,127.0.0.1")}},
                     /*record_escapes=*/true);
  r = both.Fetch(url);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(r.attempts, 1);
  EXPECT_THAT(both.escapes(), ::testing::ElementsAre("1.1.1.1 rebind.test"));
  EXPECT_EQ(origin_.requests(), 0);
}

// A redirect's connection is checked like the first: from an allowed
// origin (127.0.0.2, opened by --allow_cidrs) to 127.0.0.1 and to the
// cloud metadata address, both refused; the message names the hop's host.
TEST_F(EngineGuardTest, RedirectsToLoopbackAndMetadataAreRefused) {
  Origin allowed("127.0.0.2");
  GuardedEngine engine({.allow_cidrs = {"127.0.0.2/32"}});
  ASSERT_TRUE(engine.Fetch(allowed.Url("/json")).status.ok());

  FetchResult r = engine.Fetch(
      allowed.Url("/redirect-to?url=" + Encoded(origin_.Url("/json"))));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied) << r.status;
  EXPECT_THAT(r.status.message(),
              HasSubstr("refused to connect to 127.0.0.1 for host "
                        "\"127.0.0.1\": a loopback address"));
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(origin_.requests(), 0);

  r = engine.Fetch(
      allowed.Url("/redirect-to?url=" +
                  Encoded("http://169.254.169.254/latest/meta-data/")));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied) << r.status;
  EXPECT_THAT(r.status.message(),
              HasSubstr("refused to connect to 169.254.169.254 for host "
                        "\"169.254.169.254\": a link_local address, the "
                        "cloud metadata service"));
  EXPECT_EQ(r.attempts, 1);
  EXPECT_EQ(allowed.requests(), 3);
}

// Host rules, end to end: --allow_hosts refuses other hosts at Submit
// (no attempt at all), --deny_hosts refuses a redirect hop at connect time.
TEST_F(EngineGuardTest, HostFlagsEndToEnd) {
  const int port = origin_.port();
  GuardedEngine engine(
      {.allow_private_networks = true,
       .allow_hosts = {"api.test", "*.cdn.test"},
       .deny_hosts = {"private.cdn.test"}},
      {.resolve = {Resolve("api.test", port, "127.0.0.1"),
                   Resolve("img.cdn.test", port, "127.0.0.1"),
                   Resolve("private.cdn.test", port, "127.0.0.1"),
                   Resolve("other.test", port, "127.0.0.1")}});
  auto url = [&](const std::string& host, const std::string& path) {
    return absl::StrCat("http://", host, ":", port, path);
  };
  std::vector<FetchResult> r = engine.Run(
      {Get(url("api.test", "/json")), Get(url("IMG.cdn.test", "/json")),
       Get(url("other.test", "/json")), Get(url("private.cdn.test", "/json")),
       Get(url("api.test", "/redirect-to?url=" +
                               Encoded(url("private.cdn.test", "/json"))))});
  EXPECT_TRUE(r[0].status.ok()) << r[0].status;
  EXPECT_TRUE(r[1].status.ok()) << r[1].status;
  EXPECT_EQ(r[2].status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r[2].status.message(), HasSubstr("not on --allow_hosts"));
  EXPECT_EQ(r[2].attempts, 0);  // refused at Submit
  EXPECT_EQ(r[3].status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r[3].status.message(), HasSubstr("--deny_hosts"));
  EXPECT_EQ(r[4].status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r[4].status.message(),
              HasSubstr("\"private.cdn.test\": it matches --deny_hosts"));
  EXPECT_EQ(r[4].attempts, 1);
  EXPECT_EQ(origin_.requests(), 3);  // api, img, and the redirect's first hop
}

TEST_F(EngineGuardTest, AnAllowedHostDoesNotOpenLoopback) {
  GuardedEngine engine(
      {.allow_hosts = {"api.test"}},
      {.resolve = {Resolve("api.test", origin_.port(), "127.0.0.1")}});
  FetchResult r =
      engine.Fetch(absl::StrCat("http://api.test:", Port(), "/json"));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status.message(), HasSubstr("loopback"));
  EXPECT_EQ(origin_.requests(), 0);
}

// IDNA: the host is fetched, counted and checked in its punycode form.
TEST_F(EngineGuardTest, InternationalNamesAreFetchedInTheirAsciiForm) {
  GuardedEngine engine(
      {.allow_private_networks = true, .deny_hosts = {"*.xn--kxafa1alz.test"}},
      {.resolve = {
           Resolve("xn--bcher-kva.test", origin_.port(), "127.0.0.1"),
           Resolve("a.xn--kxafa1alz.test", origin_.port(), "127.0.0.1")}});
  FetchResult r =
      engine.Fetch(absl::StrCat("http://B\xc3\x9c"
                                "CHER.test:",
                                Port(), "/json"));
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.final_url,
            absl::StrCat("http://xn--bcher-kva.test:", Port(), "/json"));
  // *.βιβλίο.test written as punycode, matched against a Unicode URL.
  r = engine.Fetch(absl::StrCat(
      "http://a.\xce\xb2\xce\xb9\xce\xb2\xce\xbb\xce\xaf\xce\xbf.test:", Port(),
      "/json"));
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied) << r.status;
  EXPECT_THAT(r.status.message(), HasSubstr("a.xn--kxafa1alz.test"));
  // Not valid IDNA: INVALID_ARGUMENT naming url, before any attempt.
  r = engine.Fetch("http://\xe2\x98\x83.test/");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status.message(), HasSubstr("url "));
  EXPECT_EQ(r.attempts, 0);
  EXPECT_EQ(origin_.requests(), 1);
}

// Behind an explicit proxy (the origin plays it) the proxy's own loopback
// address is not refused, host rules and literal hosts still are.
TEST_F(EngineGuardTest, BehindAProxyTheProxyDoesTheAddressChecks) {
  // The names are mapped to loopback, so that nothing leaves loopback even
  // if the proxy were bypassed.
  GuardedEngine engine(
      {.deny_hosts = {"evil.test"}, .behind_proxy = true},
      {.proxy = origin_.base(),
       .resolve = {"api.test:1:127.0.0.1", "evil.test:1:127.0.0.1"}});
  FetchResult r = engine.Fetch("http://api.test:1/json", 1);
  EXPECT_EQ(r.http_status, 404) << r.status;  // the proxy answered
  r = engine.Fetch("http://evil.test:1/json");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied);
  r = engine.Fetch("http://127.0.0.1:1/json");
  EXPECT_EQ(r.status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status.message(), HasSubstr("loopback"));
  EXPECT_EQ(origin_.requests(), 1);
}

}  // namespace
}  // namespace fetchd::fetch

namespace fetchd::fetch {
namespace {

PageStrategy NextUrlAt(const std::string& pointer) {
  PageStrategy strategy;
  strategy.kind = PageStrategy::Kind::kCursor;
  strategy.param = "";  // the value at the pointer is the next page's URL
  strategy.cursor_pointer = pointer;
  return strategy;
}

// A walk's next page is checked like any connection: a next link to a
// loopback address is refused and ends the walk with PERMISSION_DENIED,
// and one on an international host is fetched in its ASCII form.
TEST_F(EngineGuardTest, WalksAreGuardedPageByPage) {
  Origin allowed("127.0.0.2");
  GuardedEngine engine({.allow_cidrs = {"127.0.0.2/32"}},
                       {.resolve = {Resolve("xn--bcher-kva.test",
                                            allowed.port(), "127.0.0.2")}});
  auto [pages, end] =
      engine.Walk(allowed.Url("/next-to?url=" + Encoded(origin_.Url("/json"))),
                  NextUrlAt("/next"));
  EXPECT_EQ(end.code(), absl::StatusCode::kPermissionDenied) << end;
  EXPECT_THAT(end.message(), HasSubstr("loopback"));
  EXPECT_EQ(origin_.requests(), 0);

  const std::string idn_next = absl::StrCat(
      "http://b\xc3\xbc"
      "cher.test:",
      allowed.port(), "/json");
  auto [idn_pages, idn_end] = engine.Walk(
      allowed.Url("/next-to?url=" + Encoded(idn_next)), NextUrlAt("/next"));
  EXPECT_TRUE(idn_end.ok()) << idn_end;
  ASSERT_EQ(idn_pages.size(), 2u);
  EXPECT_EQ(
      idn_pages[1].url,
      absl::StrCat("http://xn--bcher-kva.test:", allowed.port(), "/json"));
  EXPECT_TRUE(idn_pages[1].result.status.ok()) << idn_pages[1].result.status;
}

}  // namespace
}  // namespace fetchd::fetch
