// Test support: the traffic rule as code. Wraps an address policy so that
// no test connection ever leaves loopback (127.0.0.0/8, ::1), even while
// the policy under test is wrong.
#ifndef FETCHD_TESTS_SUPPORT_LOOPBACK_HARNESS_H_
#define FETCHD_TESTS_SUPPORT_LOOPBACK_HARNESS_H_

#include <sys/socket.h>

#include <functional>
#include <string>

#include "absl/strings/string_view.h"
#include "server/fetch/fetch.h"

namespace fetchd::testing {

// 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104 (what a socket to it reaches).
bool IsLoopback(const sockaddr* address, socklen_t length);

// Called (on the engine's I/O thread) when the wrapped policy allowed an
// address outside loopback: the address and the host it was for.
using EscapeHandler =
    std::function<void(const std::string& address, absl::string_view host)>;

// `policy` (may be empty: allow all), except that every non-loopback
// address is refused whatever it says: with its refusal when it refused,
// else with a "test harness" PERMISSION_DENIED after `on_escape`, which by
// default fails the running test (ADD_FAILURE).
fetch::AddressPolicy LoopbackOnly(fetch::AddressPolicy policy,
                                  EscapeHandler on_escape = nullptr);

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_LOOPBACK_HARNESS_H_
