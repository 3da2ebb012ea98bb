// fetchctl's commands (internal to the fetchctl binary).
#ifndef FETCHD_CLIENT_FETCHCTL_H_
#define FETCHD_CLIENT_FETCHCTL_H_

#include <string>
#include <vector>

#include "client/client.h"

namespace fetchd::client {

// fetchctl fetch URL... | --urls_file=F: exit code 0 when every item
// succeeded, 1 when one failed or an RPC failed, 2 on a usage error (after
// printing it).
int RunFetch(const Client& client, const std::vector<std::string>& urls);

// fetchctl pages URL: exit code 0 when the walk reached its end, 1 when it
// failed, 2 on a usage error, 130 when interrupted (Ctrl-C). On a failure
// or an interruption, the last resume token goes to stderr.
int RunPages(const Client& client, const std::vector<std::string>& args);

// The per-item flags shared by fetch and pages (--process, --item_timeout)
// onto `item`; INVALID_ARGUMENT naming the flag.
absl::Status ApplyItemFlags(v1::FetchItem* item);

// Prints "fetchctl: message" and the usage; returns 2.
int UsageError(const std::string& message);

}  // namespace fetchd::client

#endif  // FETCHD_CLIENT_FETCHCTL_H_
