#include "tests/support/loopback_harness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_cat.h"

namespace fetchd::testing {

bool IsLoopback(const sockaddr* address, socklen_t length) {
  std::optional<fetch::IpAddress> ip =
      fetch::IpAddress::FromSockaddr(address, length);
  if (!ip.has_value()) return false;
  if (ip->v4) return ip->bytes[0] == 127;
  static const fetch::IpAddress kOne = *fetch::IpAddress::Parse("::1");
  if (*ip == kOne) return true;
  static const fetch::IpAddress kMapped =
      *fetch::IpAddress::Parse("::ffff:127.0.0.0");
  return std::equal(ip->bytes.begin(), ip->bytes.begin() + 13,
                    kMapped.bytes.begin());
}

fetch::AddressPolicy LoopbackOnly(fetch::AddressPolicy policy,
                                  EscapeHandler on_escape) {
  return [policy = std::move(policy), on_escape = std::move(on_escape)](
             const sockaddr* address, socklen_t length,
             absl::string_view host) -> absl::Status {
    absl::Status verdict =
        policy ? policy(address, length, host) : absl::OkStatus();
    if (IsLoopback(address, length) || !verdict.ok()) return verdict;
    std::optional<fetch::IpAddress> ip =
        fetch::IpAddress::FromSockaddr(address, length);
    const std::string text = ip.has_value() ? ip->ToString() : "non-IP";
    if (on_escape) {
      on_escape(text, host);
    } else {
      ADD_FAILURE() << "the address policy allowed " << text << " for host "
                    << host << ", outside loopback";
    }
    return absl::PermissionDeniedError(
        absl::StrCat("test harness: ", text, " for host \"", host,
                     "\" is outside loopback (the policy allowed it)"));
  };
}

}  // namespace fetchd::testing
