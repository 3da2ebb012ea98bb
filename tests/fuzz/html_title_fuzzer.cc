// html_title (server/process/html_title.cc through Process()) on a body an
// origin chose.
//
// Input: the body.
#include <string>

#include "absl/strings/match.h"
#include "server/process/process.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using fetchd::process::Processor;
  const absl::string_view body(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::string> title =
      fetchd::process::Process({.kind = Processor::Kind::kHtmlTitle}, body);
  if (title.ok()) {
    // Whitespace collapsed the way browsers show titles.
    FUZZ_CHECK(!absl::StrContains(*title, "  "));
    FUZZ_CHECK(title->find_first_of("\t\r\n\f") == std::string::npos);
    FUZZ_CHECK(title->empty() ||
               (title->front() != ' ' && title->back() != ' '));
  } else {
    FUZZ_CHECK(title.status().code() == absl::StatusCode::kNotFound);
  }
  return 0;
}
