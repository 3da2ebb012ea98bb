// fetchctl's help: its own flags, grouped by command, with examples.
// Abseil's --help would list every flag by source file, paths included.
#ifndef FETCHD_CLIENT_HELP_H_
#define FETCHD_CLIENT_HELP_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace fetchd::client {

// The commands, in the order the help lists them.
const std::vector<std::string>& CommandNames();
bool IsCommand(absl::string_view name);

// `fetchctl --help`: usage, the commands, the global flags, then each
// command's flags and examples, and the exit codes.
std::string FullHelp();

// `fetchctl help COMMAND` and `fetchctl COMMAND --help`: the command's
// usage, flags and examples, then the global flags. COMMAND must be one.
std::string CommandHelp(absl::string_view command);

// The command's usage lines ("Usage: fetchctl compute ..."), for usage
// errors; a pointer to `fetchctl help COMMAND` ends them.
std::string CommandUsage(absl::string_view command);

// One line for an unknown or missing command: what the commands are.
std::string CommandList();

}  // namespace fetchd::client

#endif  // FETCHD_CLIENT_HELP_H_
