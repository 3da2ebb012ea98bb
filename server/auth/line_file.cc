// SplitLineFile and ReadFileText.
#include "server/auth/line_file.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fetchd::auth {

std::vector<FileLine> SplitLineFile(absl::string_view text, Comments comments) {
  std::vector<FileLine> lines;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    if (comments == Comments::kTrailing) {
      if (size_t hash = line.find('#'); hash != absl::string_view::npos) {
        line = line.substr(0, hash);
      }
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    if (comments == Comments::kWholeLine && line[0] == '#') continue;
    FileLine out;
    out.number = number;
    out.fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    lines.push_back(std::move(out));
  }
  return lines;
}

absl::StatusOr<std::string> ReadFileText(const std::string& path,
                                         absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read ", what, " ", path, ": ", strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace fetchd::auth
