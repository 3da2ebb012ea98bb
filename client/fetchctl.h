// fetchctl's commands (internal to the fetchctl binary).
#ifndef FETCHD_CLIENT_FETCHCTL_H_
#define FETCHD_CLIENT_FETCHCTL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

// fetchctl job SUBCOMMAND ...: see job_command.cc. Exit code 0 on success,
// 1 when an RPC failed (or a watched job did not succeed), 2 on a usage
// error.
int RunJob(const Client& client, const std::vector<std::string>& args);

// The per-item flags shared by fetch and pages (--process, --item_timeout)
// onto `item`; INVALID_ARGUMENT naming the flag.
absl::Status ApplyItemFlags(v1::FetchItem* item);

// `urls` followed by those of --urls_file; INVALID_ARGUMENT when there are
// none, NOT_FOUND when the file cannot be read.
absl::StatusOr<std::vector<std::string>> CollectUrls(
    const std::vector<std::string>& urls);

// The request fetch and job submit fetch send: every URL with the per-item
// flags, --concurrency and --retries (drop_body is the caller's).
// INVALID_ARGUMENT naming the flag. BatchRequest is v1::BatchFetchRequest
// or v1::StreamBatchFetchRequest.
template <typename BatchRequest>
absl::StatusOr<BatchRequest> BuildBatchRequest(
    const std::vector<std::string>& urls);

// The walk pages and job submit pages send, from URL and the pages flags
// (--strategy, --param, ..., --retries); drop_body as pages sets it.
// INVALID_ARGUMENT naming the flag.
absl::StatusOr<v1::FetchPagesRequest> BuildPagesRequest(const std::string& url);

// The request compute and job submit compute send. `args` are the
// positional arguments after the kernel (sqrt_sum N, count_primes L,
// sha256_chain DATA [ROUNDS]); without them the kernel's flags (--n,
// --limit, --data/--data_hex, --rounds). INVALID_ARGUMENT explaining why not.
absl::StatusOr<v1::RunRequest> BuildComputeRequest(
    const std::string& kernel, const std::vector<std::string>& args);

// Writes `body` to dir/name through a temp file and a rename, so a reader
// never sees a half-written file.
absl::Status WriteAtomically(const std::string& dir, const std::string& name,
                             const std::string& body);

// Prints "fetchctl: message" and the usage; returns 2.
int UsageError(const std::string& message);

// Prints "fetchctl: CODE: message" (and, with --json, the error as JSON on
// stdout); returns 1.
int RpcError(const absl::Status& status);

}  // namespace fetchd::client

#endif  // FETCHD_CLIENT_FETCHCTL_H_
