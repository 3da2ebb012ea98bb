// auth/line_file: the reader behind fetchd's small configuration files of
// one entry per line (--auth_tokens_file, --identity_limits_file,
// --webhook_secrets_file): read the file, skip blank and comment lines,
// split the rest into fields. Each caller checks its own fields and names
// its own file and line in errors.
#ifndef FETCHD_SERVER_AUTH_LINE_FILE_H_
#define FETCHD_SERVER_AUTH_LINE_FILE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fetchd::auth {

enum class Comments {
  // Only a line whose first non-blank character is '#' is a comment (a
  // secret or token may contain '#').
  kWholeLine,
  // '#' starts a comment anywhere on a line.
  kTrailing,
};

// One line that holds something: its 1-based number in the file and its
// fields (separated by spaces, tabs or CR). The views point into the text
// given to SplitLineFile.
struct FileLine {
  int number = 0;
  std::vector<absl::string_view> fields;
};

// The lines of `text` that are neither blank nor comments, in order.
std::vector<FileLine> SplitLineFile(absl::string_view text, Comments comments);

// The whole file at `path`; NOT_FOUND "cannot read WHAT PATH: <errno text>"
// (WHAT names the flag, e.g. "--auth_tokens_file").
absl::StatusOr<std::string> ReadFileText(const std::string& path,
                                         absl::string_view what);

}  // namespace fetchd::auth

#endif  // FETCHD_SERVER_AUTH_LINE_FILE_H_
