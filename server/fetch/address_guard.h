// fetch/address_guard: the SSRF guard. A pure policy (no curl, no I/O) that
// the engine asks once per new connection, with the address actually being
// connected to (after DNS, on every redirect hop) and the host it was
// reached for. Without it a fetch service is a way into its own network:
// loopback, cloud metadata (169.254.169.254), private ranges, and every
// IPv6 spelling of them.
//
// Decision order for one connection (first match wins):
//   1. host rules: a --deny_hosts match refuses; a non-empty --allow_hosts
//      refuses every host not on it.
//   2. --deny_cidrs refuses (wins over everything below);
//   3. --allow_cidrs allows;
//   4. a special-purpose address (loopback, private, link-local, ...) is
//      refused unless --allow_private_networks; a public one is allowed.
// A host on --allow_hosts may still not reach a private address: the
// address check applies to allowed hosts too (--allow_cidrs opens ranges).
//
// IPv6 forms that carry an IPv4 address (IPv4-mapped ::ffff:0:0/96,
// IPv4-compatible ::/96, IPv4-translated ::ffff:0:0:0/96, NAT64
// 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32) are classified by the IPv4
// address they carry, and --allow_cidrs/--deny_cidrs IPv4 entries match it.
#ifndef FETCHD_SERVER_FETCH_ADDRESS_GUARD_H_
#define FETCHD_SERVER_FETCH_ADDRESS_GUARD_H_

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fetchd::fetch {

// What an address is, after the IANA IPv4 and IPv6 special-purpose address
// registries. Everything but kPublic is refused by default.
enum class AddressClass {
  kPublic,
  kLoopback,       // 127/8, ::1
  kUnspecified,    // 0/8, ::
  kPrivate,        // 10/8, 172.16/12, 192.168/16, fec0::/10, 64:ff9b:1::/48
  kCgnat,          // 100.64/10 (shared address space)
  kLinkLocal,      // 169.254/16 (cloud metadata), fe80::/10
  kUniqueLocal,    // fc00::/7
  kMulticast,      // 224/4, ff00::/8
  kBroadcast,      // 255.255.255.255
  kReserved,       // 240/4, 192.88.99/24, IPv6 outside 2000::/3, 100::/64
  kIetfProtocol,   // 192.0.0/24
  kBenchmarking,   // 198.18/15, 2001:2::/48
  kDocumentation,  // 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32,
                   // 3fff::/20
};
inline constexpr int kAddressClassCount = 13;

// A short stable name ("loopback", "link_local", ...), as used in refusal
// messages and metric labels.
absl::string_view AddressClassName(AddressClass c);

// An IPv4 or IPv6 address, network byte order.
struct IpAddress {
  bool v4 = false;
  std::array<uint8_t, 16> bytes{};  // IPv4: the first 4 bytes

  static std::optional<IpAddress> FromSockaddr(const sockaddr* address,
                                               socklen_t length);
  // A literal: dotted IPv4 ("127.0.0.1") or IPv6 without brackets.
  static std::optional<IpAddress> Parse(absl::string_view text);
  static IpAddress V4(uint32_t host_order);
  std::string ToString() const;
  bool operator==(const IpAddress&) const = default;
};

struct AddressClassification {
  AddressClass cls = AddressClass::kPublic;
  // For an IPv6 form that carries an IPv4 address: the form ("IPv4-mapped",
  // "NAT64", "6to4", ...) and that IPv4 address, which gave the class.
  absl::string_view form;
  std::optional<IpAddress> embedded;
};

// Pure and cheap: a few comparisons, no allocation.
AddressClassification ClassifyAddress(const IpAddress& address);

// A host as the guard and the host lists see it: lower case, no trailing
// dots, IP literals in inet_ntop's form ("0:0::1" is "::1") without
// brackets, international names in their IDNA ASCII
// (punycode) form (IDNA2008 with UTS #46 non-transitional mapping).
// INVALID_ARGUMENT when a non-ASCII name is not valid IDNA.
absl::StatusOr<std::string> NormalizeHost(absl::string_view host);

struct AddressGuardOptions {
  // Allows every special-purpose class (loopback, private, link-local, ...);
  // for local demos and tests. --deny_cidrs and the host rules still apply.
  bool allow_private_networks = false;
  // CIDRs ("10.1.0.0/16", "fd00::/8"; a bare address is a /32 or /128).
  std::vector<std::string> allow_cidrs;
  std::vector<std::string> deny_cidrs;
  // Host patterns: "api.example.com" exactly, or "*.example.com" for every
  // name below example.com (not example.com itself).
  std::vector<std::string> allow_hosts;
  std::vector<std::string> deny_hosts;
  // Connections go to an explicit upstream proxy, which does the address
  // checks: the connect-time address is the proxy's and is not checked;
  // host rules still apply, and a host written as an IP literal is still
  // classified.
  bool behind_proxy = false;
};

// Immutable after Create; every method is thread-safe.
class AddressGuard {
 public:
  // INVALID_ARGUMENT naming the flag (e.g. "--allow_cidrs") and the entry
  // for a CIDR or host pattern that does not parse.
  static absl::StatusOr<std::unique_ptr<AddressGuard>> Create(
      const AddressGuardOptions& options);

  // The engine's address policy for one new connection: host rules, then
  // the address (see the file comment). `host` is normalized (NormalizeHost).
  // OK, or PERMISSION_DENIED naming the address, its class and the host.
  absl::Status CheckConnection(const sockaddr* address, socklen_t length,
                               absl::string_view host) const;
  absl::Status CheckAddress(const IpAddress& address,
                            absl::string_view host) const;
  // Host rules only (--allow_hosts, --deny_hosts); `host` normalized.
  absl::Status CheckHost(absl::string_view host) const;

  bool has_host_rules() const { return has_host_rules_; }
  // False when nothing can ever be refused (--allow_private_networks and
  // no deny or host rule): then no policy needs to run at all.
  bool refuses_anything() const;

  // Refusals so far (for metrics): by the class of a refused address, by
  // a host rule, and by --deny_cidrs.
  int64_t refusals(AddressClass c) const {
    return refusals_[static_cast<size_t>(c)].load(std::memory_order_relaxed);
  }
  int64_t host_refusals() const {
    return host_refusals_.load(std::memory_order_relaxed);
  }
  int64_t cidr_refusals() const {
    return cidr_refusals_.load(std::memory_order_relaxed);
  }

 private:
  struct Cidr {
    IpAddress base;
    int bits = 0;
    std::string text;
  };
  struct HostPatterns {
    std::vector<std::string> exact;
    std::vector<std::string> suffixes;  // ".example.com" for *.example.com
    // The entry that matches `host`, or none.
    std::optional<std::string> Match(absl::string_view host) const;
    bool empty() const { return exact.empty() && suffixes.empty(); }
  };
  AddressGuard() = default;
  static absl::Status ParseCidrs(absl::string_view flag,
                                 const std::vector<std::string>& entries,
                                 std::vector<Cidr>* out);
  static absl::Status ParseHosts(absl::string_view flag,
                                 const std::vector<std::string>& entries,
                                 HostPatterns* out);
  // The entry of `cidrs` that contains the address (or the IPv4 address it
  // carries), or null.
  static const Cidr* FindCidr(const std::vector<Cidr>& cidrs,
                              const IpAddress& address,
                              const AddressClassification& c);

  bool allow_private_ = false;
  bool behind_proxy_ = false;
  bool has_host_rules_ = false;
  std::vector<Cidr> allow_cidrs_, deny_cidrs_;
  HostPatterns allow_hosts_, deny_hosts_;
  mutable std::array<std::atomic<int64_t>, kAddressClassCount> refusals_{};
  mutable std::atomic<int64_t> host_refusals_{0};
  mutable std::atomic<int64_t> cidr_refusals_{0};
};

}  // namespace fetchd::fetch

#endif  // FETCHD_SERVER_FETCH_ADDRESS_GUARD_H_
