// URL validation and the address policy (server/fetch/validate.cc,
// origin.cc, address_guard.cc), as pure functions: nothing here resolves
// a name or opens a socket. Addresses are sockaddr values handed to the
// guard, as the engine hands it curl's address before connecting.
//
// Input: line 1 a URL; line 2 a rule entry (tried as --allow_cidrs,
// --deny_cidrs, --allow_hosts and --deny_hosts); the remaining bytes an
// address (4 bytes IPv4, 16 bytes IPv6, both when there are 20).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "server/fetch/address_guard.h"
#include "server/fetch/fetch.h"
#include "tests/fuzz/fuzz_input.h"

namespace fetchd::fetch {
namespace {

struct Guards {
  std::unique_ptr<AddressGuard> strict;   // the default: public only
  std::unique_ptr<AddressGuard> open;     // --allow_private_networks
  std::unique_ptr<AddressGuard> hosts;    // host rules
  std::unique_ptr<AddressGuard> proxied;  // --upstream_proxy
};

std::unique_ptr<AddressGuard> Make(const AddressGuardOptions& options) {
  absl::StatusOr<std::unique_ptr<AddressGuard>> guard =
      AddressGuard::Create(options);
  FUZZ_CHECK(guard.ok());
  return *std::move(guard);
}

const Guards& TheGuards() {
  static const Guards* guards = [] {
    auto* g = new Guards;
    g->strict = Make({});
    g->open = Make({.allow_private_networks = true,
                    .deny_cidrs = {"169.254.0.0/16", "fd00::/8"}});
    g->hosts = Make({.allow_hosts = {"*.example.com", "api.example.org"},
                     .deny_hosts = {"bad.example.com"}});
    g->proxied = Make({.behind_proxy = true});
    return g;
  }();
  return *guards;
}

bool IsPublic(const IpAddress& ip) {
  return ClassifyAddress(ip).cls == AddressClass::kPublic;
}

// The address as curl would hand it over: a sockaddr_in or sockaddr_in6.
struct Sockaddr {
  sockaddr_storage storage{};
  socklen_t length = 0;
  const sockaddr* get() const {
    return reinterpret_cast<const sockaddr*>(&storage);
  }
};
Sockaddr ToSockaddr(const IpAddress& ip) {
  Sockaddr s;
  if (ip.v4) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(443);
    std::memcpy(&in.sin_addr, ip.bytes.data(), 4);
    std::memcpy(&s.storage, &in, sizeof(in));
    s.length = sizeof(in);
  } else {
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(443);
    std::memcpy(&in6.sin6_addr, ip.bytes.data(), 16);
    std::memcpy(&s.storage, &in6, sizeof(in6));
    s.length = sizeof(in6);
  }
  return s;
}

IpAddress V6With(std::initializer_list<uint8_t> prefix, const IpAddress& v4,
                 size_t at) {
  IpAddress ip;
  size_t i = 0;
  for (uint8_t b : prefix) ip.bytes[i++] = b;
  std::memcpy(&ip.bytes[at], v4.bytes.data(), 4);
  return ip;
}

// The guard's promises for one address reached for `host`.
void CheckAddress(const IpAddress& ip, absl::string_view host) {
  const Guards& g = TheGuards();
  const Sockaddr s = ToSockaddr(ip);
  const bool is_public = IsPublic(ip);
  // Public only by default, whatever the host.
  FUZZ_CHECK(g.strict->CheckConnection(s.get(), s.length, host).ok() ==
             is_public);
  FUZZ_CHECK(g.strict->CheckAddress(ip, host).ok() == is_public);
  // A truncated or foreign sockaddr is never taken for an address.
  FUZZ_CHECK(!g.open->CheckConnection(s.get(), s.length - 1, host).ok());
  sockaddr_storage other = s.storage;
  other.ss_family = AF_UNIX;
  FUZZ_CHECK(!g.open
                  ->CheckConnection(reinterpret_cast<const sockaddr*>(&other),
                                    s.length, host)
                  .ok());
  FUZZ_CHECK(!g.strict->CheckConnection(nullptr, 0, host).ok());
  (void)g.open->CheckConnection(s.get(), s.length, host);
  (void)g.hosts->CheckConnection(s.get(), s.length, host);
  (void)g.proxied->CheckConnection(s.get(), s.length, host);
  // One spelling: the text form reads back as the same address.
  const std::string text = ip.ToString();
  std::optional<IpAddress> back = IpAddress::Parse(text);
  FUZZ_CHECK(back.has_value() && *back == ip);
  if (ip.v4) {
    // No IPv6 spelling of an IPv4 address gets past the guard that the
    // IPv4 address itself does not.
    for (const IpAddress& v6 :
         {V6With({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, ip, 12),
          V6With({0, 0x64, 0xff, 0x9b}, ip, 12), V6With({0x20, 0x02}, ip, 2),
          V6With({0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0}, ip, 12)}) {
      if (!is_public) FUZZ_CHECK(!IsPublic(v6));
      const Sockaddr s6 = ToSockaddr(v6);
      if (!is_public) {
        FUZZ_CHECK(!g.strict->CheckConnection(s6.get(), s6.length, host).ok());
      }
    }
  }
}

// A guard built from one fuzzed rule entry, used if it parses.
void CheckRule(const std::string& entry, const IpAddress* ip,
               absl::string_view host) {
  const std::vector<std::string> one = {entry};
  for (int which = 0; which < 4; ++which) {
    AddressGuardOptions options;
    if (which == 0) options.allow_cidrs = one;
    if (which == 1) options.deny_cidrs = one;
    if (which == 2) options.allow_hosts = one;
    if (which == 3) options.deny_hosts = one;
    absl::StatusOr<std::unique_ptr<AddressGuard>> guard =
        AddressGuard::Create(options);
    if (!guard.ok()) continue;
    (void)(*guard)->CheckHost(host);
    if (ip != nullptr) {
      const Sockaddr s = ToSockaddr(*ip);
      (void)(*guard)->CheckConnection(s.get(), s.length, host);
    }
    // The address a CIDR names is inside it: --deny_cidrs refuses it.
    if (which == 1) {
      const std::string base = entry.substr(0, entry.find('/'));
      std::optional<IpAddress> named =
          IpAddress::Parse(absl::StripAsciiWhitespace(base));
      if (named.has_value() &&
          base.find_first_of(" \t\r\n\f\v") == std::string::npos) {
        FUZZ_CHECK(!(*guard)->CheckAddress(*named, host).ok());
      }
    }
  }
}

void CheckUrl(const std::string& url, const std::string& rule,
              absl::string_view address) {
  const FetchLimits limits;
  const absl::Status valid = ValidateUrl(url, limits);
  absl::StatusOr<std::string> ascii = AsciiUrl(url);
  absl::StatusOr<std::string> host = UrlHost(url);
  absl::StatusOr<std::string> origin = OriginOf(url);
  if (valid.ok()) FUZZ_CHECK(host.ok() && !host->empty());
  if (valid.ok() && ascii.ok() && host.ok()) {
    // What the engine fetches (the ASCII form) has the host the guard and
    // the host rules were asked about.
    absl::StatusOr<std::string> ascii_host = UrlHost(*ascii);
    FUZZ_CHECK(ascii_host.ok() && *ascii_host == *host);
    FUZZ_CHECK(ValidateUrl(*ascii, limits).ok());
  }
  std::string guard_host = host.ok() ? *host : "fuzz.example";
  if (host.ok()) {
    // Normalizing a normalized host changes nothing.
    absl::StatusOr<std::string> again = NormalizeHost(*host);
    FUZZ_CHECK(again.ok() && *again == *host);
    (void)TheGuards().hosts->CheckHost(*host);
    // A host written as an IP literal is judged as that address.
    if (std::optional<IpAddress> literal = IpAddress::Parse(*host)) {
      CheckAddress(*literal, *host);
      FUZZ_CHECK(TheGuards().proxied->CheckConnection(nullptr, 0, *host).ok() ==
                 IsPublic(*literal));
    }
  }
  (void)NormalizeHost(rule);
  std::optional<IpAddress> from_bytes;
  if (address.size() >= 4) {
    from_bytes = IpAddress::V4(0);
    std::memcpy(from_bytes->bytes.data(), address.data(), 4);
    CheckAddress(*from_bytes, guard_host);
  }
  if (address.size() >= 16) {
    IpAddress v6;
    std::memcpy(v6.bytes.data(),
                address.data() + (address.size() >= 20 ? 4 : 0), 16);
    CheckAddress(v6, guard_host);
    from_bytes = v6;
  }
  if (std::optional<IpAddress> parsed = IpAddress::Parse(rule)) {
    CheckAddress(*parsed, guard_host);
  }
  CheckRule(rule, from_bytes.has_value() ? &*from_bytes : nullptr, guard_host);
}

}  // namespace
}  // namespace fetchd::fetch

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fetchd::fuzz::FuzzInput in(data, size);
  const std::string url = in.Line();
  const std::string rule = in.Line();
  fetchd::fetch::CheckUrl(url, rule, in.Rest());
  return 0;
}
