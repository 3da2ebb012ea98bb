// AddressGuard: classification by prefix tables, CIDR and host-pattern
// matching, and the refusal messages. No curl, no I/O: every case is
// tested on socket addresses, never connected to.
#include "server/fetch/address_guard.h"

#include <arpa/inet.h>
#include <idn2.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace fetchd::fetch {
namespace {

uint32_t V4Of(const IpAddress& a) {
  return (uint32_t{a.bytes[0]} << 24) | (uint32_t{a.bytes[1]} << 16) |
         (uint32_t{a.bytes[2]} << 8) | uint32_t{a.bytes[3]};
}

// The 16-bit group i (0..7) of an IPv6 address.
uint16_t Group(const IpAddress& a, int i) {
  return static_cast<uint16_t>((a.bytes[2 * i] << 8) | a.bytes[2 * i + 1]);
}

uint32_t GroupPair(const IpAddress& a, int i) {
  return (uint32_t{Group(a, i)} << 16) | Group(a, i + 1);
}

constexpr uint32_t Ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return (uint32_t{a} << 24) | (uint32_t{b} << 16) | (uint32_t{c} << 8) | d;
}

bool In4(uint32_t address, uint32_t base, int bits) {
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (address & mask) == (base & mask);
}

AddressClass Classify4(uint32_t a) {
  struct Range {
    uint32_t base;
    int bits;
    AddressClass cls;
  };
  // Most specific first where ranges nest (broadcast inside 240/4).
  static constexpr Range kRanges[] = {
      {Ip4(255, 255, 255, 255), 32, AddressClass::kBroadcast},
      {Ip4(0, 0, 0, 0), 8, AddressClass::kUnspecified},
      {Ip4(10, 0, 0, 0), 8, AddressClass::kPrivate},
      {Ip4(100, 64, 0, 0), 10, AddressClass::kCgnat},
      {Ip4(127, 0, 0, 0), 8, AddressClass::kLoopback},
      {Ip4(169, 254, 0, 0), 16, AddressClass::kLinkLocal},
      {Ip4(172, 16, 0, 0), 12, AddressClass::kPrivate},
      {Ip4(192, 0, 0, 0), 24, AddressClass::kIetfProtocol},
      {Ip4(192, 0, 2, 0), 24, AddressClass::kDocumentation},
      {Ip4(192, 88, 99, 0), 24, AddressClass::kReserved},  // 6to4 relays
      {Ip4(192, 168, 0, 0), 16, AddressClass::kPrivate},
      {Ip4(198, 18, 0, 0), 15, AddressClass::kBenchmarking},
      {Ip4(198, 51, 100, 0), 24, AddressClass::kDocumentation},
      {Ip4(203, 0, 113, 0), 24, AddressClass::kDocumentation},
      {Ip4(224, 0, 0, 0), 4, AddressClass::kMulticast},
      {Ip4(240, 0, 0, 0), 4, AddressClass::kReserved},
  };
  for (const Range& r : kRanges) {
    if (In4(a, r.base, r.bits)) return r.cls;
  }
  return AddressClass::kPublic;
}

AddressClassification Embedded(absl::string_view form, uint32_t v4) {
  AddressClassification c;
  c.cls = Classify4(v4);
  c.form = form;
  c.embedded = IpAddress::V4(v4);
  return c;
}

AddressClassification Classify6(const IpAddress& a) {
  uint16_t g[8];
  for (int i = 0; i < 8; ++i) g[i] = Group(a, i);
  auto zero = [&](int from, int to) {  // groups [from, to) are all 0
    return std::all_of(g + from, g + to, [](uint16_t x) { return x == 0; });
  };
  auto is = [](AddressClass cls) { return AddressClassification{cls, {}, {}}; };
  if (zero(0, 8)) return is(AddressClass::kUnspecified);
  if (zero(0, 7) && g[7] == 1) return is(AddressClass::kLoopback);
  if (zero(0, 5) && g[5] == 0xffff) {
    return Embedded("IPv4-mapped", GroupPair(a, 6));
  }
  if (zero(0, 6)) return Embedded("IPv4-compatible", GroupPair(a, 6));
  if (zero(0, 4) && g[4] == 0xffff && g[5] == 0) {
    return Embedded("IPv4-translated", GroupPair(a, 6));
  }
  if (g[0] == 0x64 && g[1] == 0xff9b) {
    if (zero(2, 6)) return Embedded("NAT64", GroupPair(a, 6));
    // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): where it leads is local.
    if (g[2] == 1) return is(AddressClass::kPrivate);
  }
  if (g[0] == 0x100 && zero(1, 4)) return is(AddressClass::kReserved);
  if (g[0] == 0x2001 && g[1] == 0) {
    // Teredo: the server's IPv4 in bits 32..63, the client's inverted in
    // the last 32.
    AddressClassification client = Embedded("Teredo", ~GroupPair(a, 6));
    if (client.cls != AddressClass::kPublic) return client;
    return Embedded("Teredo", GroupPair(a, 2));
  }
  if (g[0] == 0x2001 && g[1] == 2 && g[2] == 0) {
    return is(AddressClass::kBenchmarking);
  }
  if (g[0] == 0x2001 && g[1] == 0xdb8) return is(AddressClass::kDocumentation);
  if (g[0] == 0x2002) return Embedded("6to4", GroupPair(a, 1));
  if (g[0] == 0x3fff && (g[1] & 0xf000) == 0) {
    return is(AddressClass::kDocumentation);
  }
  if ((g[0] & 0xfe00) == 0xfc00) return is(AddressClass::kUniqueLocal);
  if ((g[0] & 0xffc0) == 0xfe80) return is(AddressClass::kLinkLocal);
  if ((g[0] & 0xffc0) == 0xfec0) return is(AddressClass::kPrivate);  // site
  if ((g[0] & 0xff00) == 0xff00) return is(AddressClass::kMulticast);
  // Only 2000::/3 is global unicast; the rest is reserved by IANA.
  if ((g[0] & 0xe000) != 0x2000) return is(AddressClass::kReserved);
  return is(AddressClass::kPublic);
}

bool InPrefix(const IpAddress& a, const IpAddress& base, int bits) {
  const int bytes = bits / 8;
  if (std::memcmp(a.bytes.data(), base.bytes.data(), bytes) != 0) return false;
  if (bits % 8 == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xff << (8 - bits % 8));
  return (a.bytes[bytes] & mask) == (base.bytes[bytes] & mask);
}

// The IPv4-mapped form of an IPv4 address (for IPv6 CIDRs).
IpAddress Mapped(const IpAddress& v4) {
  IpAddress m;
  m.bytes[10] = m.bytes[11] = 0xff;
  std::memcpy(&m.bytes[12], v4.bytes.data(), 4);
  return m;
}

std::string Quoted(absl::string_view s) { return absl::StrCat("\"", s, "\""); }

bool IsAscii(absl::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x80;
  });
}

}  // namespace

absl::string_view AddressClassName(AddressClass c) {
  switch (c) {
    case AddressClass::kPublic:
      return "public";
    case AddressClass::kLoopback:
      return "loopback";
    case AddressClass::kUnspecified:
      return "unspecified";
    case AddressClass::kPrivate:
      return "private";
    case AddressClass::kCgnat:
      return "cgnat";
    case AddressClass::kLinkLocal:
      return "link_local";
    case AddressClass::kUniqueLocal:
      return "unique_local";
    case AddressClass::kMulticast:
      return "multicast";
    case AddressClass::kBroadcast:
      return "broadcast";
    case AddressClass::kReserved:
      return "reserved";
    case AddressClass::kIetfProtocol:
      return "ietf_protocol";
    case AddressClass::kBenchmarking:
      return "benchmarking";
    case AddressClass::kDocumentation:
      return "documentation";
  }
  return "unknown";
}

std::optional<IpAddress> IpAddress::FromSockaddr(const sockaddr* address,
                                                 socklen_t length) {
  if (address == nullptr) return std::nullopt;
  IpAddress ip;
  if (address->sa_family == AF_INET &&
      length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in in;
    std::memcpy(&in, address, sizeof(in));
    ip.v4 = true;
    std::memcpy(ip.bytes.data(), &in.sin_addr, 4);
    return ip;
  }
  if (address->sa_family == AF_INET6 &&
      length >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 in6;
    std::memcpy(&in6, address, sizeof(in6));
    std::memcpy(ip.bytes.data(), &in6.sin6_addr, 16);
    return ip;
  }
  return std::nullopt;
}

std::optional<IpAddress> IpAddress::Parse(absl::string_view text) {
  const std::string s(text);
  IpAddress ip;
  if (inet_pton(AF_INET, s.c_str(), ip.bytes.data()) == 1) {
    ip.v4 = true;
    return ip;
  }
  if (inet_pton(AF_INET6, s.c_str(), ip.bytes.data()) == 1) return ip;
  return std::nullopt;
}

IpAddress IpAddress::V4(uint32_t host_order) {
  IpAddress ip;
  ip.v4 = true;
  ip.bytes[0] = static_cast<uint8_t>(host_order >> 24);
  ip.bytes[1] = static_cast<uint8_t>(host_order >> 16);
  ip.bytes[2] = static_cast<uint8_t>(host_order >> 8);
  ip.bytes[3] = static_cast<uint8_t>(host_order);
  return ip;
}

std::string IpAddress::ToString() const {
  char buffer[INET6_ADDRSTRLEN] = {};
  inet_ntop(v4 ? AF_INET : AF_INET6, bytes.data(), buffer, sizeof(buffer));
  return buffer;
}

AddressClassification ClassifyAddress(const IpAddress& address) {
  if (address.v4) return {Classify4(V4Of(address)), {}, {}};
  return Classify6(address);
}

absl::StatusOr<std::string> NormalizeHost(absl::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string out;
  if (IsAscii(host)) {
    out = absl::AsciiStrToLower(host);
  } else {
    // IDNA2008 with the UTS #46 mapping browsers use (lower-cases, NFC);
    // UTF-8 in, so no dependence on the process locale.
    const std::string in(host);
    char* ascii = nullptr;
    const int rc = idn2_lookup_u8(reinterpret_cast<const uint8_t*>(in.c_str()),
                                  reinterpret_cast<uint8_t**>(&ascii),
                                  IDN2_NONTRANSITIONAL | IDN2_NFC_INPUT);
    if (rc != IDN2_OK) {
      return absl::InvalidArgumentError(
          absl::StrCat("host is not a valid international domain name (",
                       idn2_strerror(rc), ")"));
    }
    out = absl::AsciiStrToLower(ascii);
    idn2_free(ascii);
  }
  // Every trailing dot: "evil.example.." is the name "evil.example" to a
  // resolver, so it must match a rule for that name.
  while (!out.empty() && out.back() == '.') out.pop_back();
  // IPv6 literals in one spelling ("0:0::1" is "::1"), as curl writes the
  // URL's host, so that a host rule's literal matches it.
  in6_addr v6;
  char text[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET6, out.c_str(), &v6) == 1 &&
      inet_ntop(AF_INET6, &v6, text, sizeof(text)) != nullptr) {
    out = text;
  }
  return out;
}

std::optional<std::string> AddressGuard::HostPatterns::Match(
    absl::string_view host) const {
  for (const std::string& e : exact) {
    if (host == e) return e;
  }
  for (const std::string& s : suffixes) {
    if (host.size() > s.size() && absl::EndsWith(host, s)) {
      return absl::StrCat("*", s);
    }
  }
  return std::nullopt;
}

absl::Status AddressGuard::ParseCidrs(absl::string_view flag,
                                      const std::vector<std::string>& entries,
                                      std::vector<Cidr>* out) {
  for (const std::string& raw : entries) {
    const absl::string_view entry = absl::StripAsciiWhitespace(raw);
    if (entry.empty()) continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, " entry ", Quoted(entry), " is not a CIDR (",
                       why, "; want e.g. 10.0.0.0/8 or fd00::/8)"));
    };
    const size_t slash = entry.find('/');
    const absl::string_view address = entry.substr(0, slash);
    std::optional<IpAddress> base = IpAddress::Parse(address);
    if (!base.has_value()) return bad("not an IP address");
    const int max_bits = base->v4 ? 32 : 128;
    int bits = max_bits;
    if (slash != absl::string_view::npos &&
        (!absl::SimpleAtoi(entry.substr(slash + 1), &bits) || bits < 0 ||
         bits > max_bits)) {
      return bad(absl::StrCat("the prefix length must be 0..", max_bits));
    }
    // Host bits are dropped: 10.1.2.3/8 is 10.0.0.0/8.
    IpAddress masked;
    masked.v4 = base->v4;
    for (int i = 0; i < bits; ++i) {
      masked.bytes[i / 8] |= base->bytes[i / 8] & (0x80 >> (i % 8));
    }
    out->push_back(Cidr{masked, bits, std::string(entry)});
  }
  return absl::OkStatus();
}

absl::Status AddressGuard::ParseHosts(absl::string_view flag,
                                      const std::vector<std::string>& entries,
                                      HostPatterns* out) {
  for (const std::string& raw : entries) {
    absl::string_view entry = absl::StripAsciiWhitespace(raw);
    if (entry.empty()) continue;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--", flag, " entry ", Quoted(entry), " is not a host ", "pattern (",
          why, "; want api.example.com or *.example.com)"));
    };
    absl::string_view name = entry;
    const bool suffix = absl::ConsumePrefix(&name, "*.");
    absl::StatusOr<std::string> host = NormalizeHost(name);
    if (!host.ok()) return bad(host.status().message());
    if (host->empty()) return bad("empty name");
    // curl writes a URL's IPv4 host as a.b.c.d ("127.1" becomes
    // "127.0.0.1"), so another spelling in a rule would never match.
    in_addr v4;
    if (!suffix && inet_aton(host->c_str(), &v4) != 0 &&
        inet_pton(AF_INET, host->c_str(), &v4) != 1) {
      return bad("write an IPv4 address as four decimal numbers, a.b.c.d");
    }
    const bool ip6 = IpAddress::Parse(*host).has_value();
    for (char c : *host) {
      if (!(absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' ||
            (ip6 && c == ':'))) {
        return bad(absl::StrCat("character '", std::string(1, c),
                                "' is not allowed; a '*.' prefix is the only "
                                "wildcard"));
      }
    }
    if (suffix) {
      out->suffixes.push_back(absl::StrCat(".", *host));
    } else {
      out->exact.push_back(*std::move(host));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<AddressGuard>> AddressGuard::Create(
    const AddressGuardOptions& options) {
  std::unique_ptr<AddressGuard> guard(new AddressGuard());
  guard->allow_private_ = options.allow_private_networks;
  guard->behind_proxy_ = options.behind_proxy;
  const struct {
    const char* flag;
    const std::vector<std::string>& entries;
    std::vector<Cidr>* into;
  } cidrs[] = {{"allow_cidrs", options.allow_cidrs, &guard->allow_cidrs_},
               {"deny_cidrs", options.deny_cidrs, &guard->deny_cidrs_}};
  for (const auto& c : cidrs) {
    if (absl::Status s = ParseCidrs(c.flag, c.entries, c.into); !s.ok()) {
      return s;
    }
  }
  const struct {
    const char* flag;
    const std::vector<std::string>& entries;
    HostPatterns* into;
  } hosts[] = {{"allow_hosts", options.allow_hosts, &guard->allow_hosts_},
               {"deny_hosts", options.deny_hosts, &guard->deny_hosts_}};
  for (const auto& h : hosts) {
    if (absl::Status s = ParseHosts(h.flag, h.entries, h.into); !s.ok()) {
      return s;
    }
  }
  guard->has_host_rules_ =
      !guard->allow_hosts_.empty() || !guard->deny_hosts_.empty();
  return guard;
}

bool AddressGuard::refuses_anything() const {
  return !allow_private_ || !deny_cidrs_.empty() || has_host_rules_;
}

const AddressGuard::Cidr* AddressGuard::FindCidr(
    const std::vector<Cidr>& cidrs, const IpAddress& address,
    const AddressClassification& c) {
  for (const Cidr& cidr : cidrs) {
    if (cidr.base.v4) {
      const IpAddress* v4 = address.v4               ? &address
                            : c.embedded.has_value() ? &*c.embedded
                                                     : nullptr;
      if (v4 != nullptr && InPrefix(*v4, cidr.base, cidr.bits)) return &cidr;
    } else if (InPrefix(address.v4 ? Mapped(address) : address, cidr.base,
                        cidr.bits)) {
      return &cidr;
    }
  }
  return nullptr;
}

absl::Status AddressGuard::CheckHost(absl::string_view host) const {
  if (std::optional<std::string> entry = deny_hosts_.Match(host)) {
    host_refusals_.fetch_add(1, std::memory_order_relaxed);
    return absl::PermissionDeniedError(
        absl::StrCat("refused host ", Quoted(host),
                     ": it matches --deny_hosts ", "entry ", Quoted(*entry)));
  }
  if (!allow_hosts_.empty() && !allow_hosts_.Match(host).has_value()) {
    host_refusals_.fetch_add(1, std::memory_order_relaxed);
    return absl::PermissionDeniedError(absl::StrCat(
        "refused host ", Quoted(host), ": it is not on --allow_hosts"));
  }
  return absl::OkStatus();
}

absl::Status AddressGuard::CheckAddress(const IpAddress& address,
                                        absl::string_view host) const {
  const AddressClassification c = ClassifyAddress(address);
  if (!deny_cidrs_.empty()) {
    if (const Cidr* cidr = FindCidr(deny_cidrs_, address, c)) {
      cidr_refusals_.fetch_add(1, std::memory_order_relaxed);
      return absl::PermissionDeniedError(absl::StrCat(
          "refused to connect to ", address.ToString(), " for host ",
          Quoted(host), ": it is in --deny_cidrs ", "entry ", cidr->text));
    }
  }
  if (!allow_cidrs_.empty() && FindCidr(allow_cidrs_, address, c) != nullptr) {
    return absl::OkStatus();
  }
  if (c.cls == AddressClass::kPublic || allow_private_) {
    return absl::OkStatus();
  }
  refusals_[static_cast<size_t>(c.cls)].fetch_add(1, std::memory_order_relaxed);
  std::string what = absl::StrCat("a ", AddressClassName(c.cls), " address");
  if (c.embedded.has_value()) {
    absl::StrAppend(&what, " (", c.form, " ", c.embedded->ToString(), ")");
  }
  const IpAddress& v4 = c.embedded.has_value() ? *c.embedded : address;
  if (v4.v4 && V4Of(v4) == Ip4(169, 254, 169, 254)) {
    absl::StrAppend(&what, ", the cloud metadata service");
  }
  return absl::PermissionDeniedError(absl::StrCat(
      "refused to connect to ", address.ToString(), " for host ", Quoted(host),
      ": ", what,
      "; fetchd connects only to public addresses unless "
      "--allow_private_networks or --allow_cidrs opens the range"));
}

absl::Status AddressGuard::CheckConnection(const sockaddr* address,
                                           socklen_t length,
                                           absl::string_view host) const {
  if (has_host_rules_) {
    if (absl::Status s = CheckHost(host); !s.ok()) return s;
  }
  if (behind_proxy_) {
    // The connection goes to the proxy, which checks addresses; a literal
    // IP in the URL is still ours to judge.
    if (std::optional<IpAddress> literal = IpAddress::Parse(host)) {
      return CheckAddress(*literal, host);
    }
    return absl::OkStatus();
  }
  std::optional<IpAddress> ip = IpAddress::FromSockaddr(address, length);
  if (!ip.has_value()) {
    return absl::PermissionDeniedError(
        absl::StrCat("refused to connect for host ", Quoted(host),
                     ": not an IPv4 or IPv6 address"));
  }
  return CheckAddress(*ip, host);
}

}  // namespace fetchd::fetch
