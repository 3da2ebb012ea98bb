// The JSON processors (server/process/json.cc through Process()):
// json_pointer and json_validate on a body an origin chose.
//
// Input: line 1 the pointer; the rest the body.
#include <string>

#include "server/process/process.h"
#include "tests/fuzz/fuzz_input.h"

namespace fetchd::process {
namespace {

void CheckJson(const std::string& pointer, absl::string_view body) {
  Processor validate{.kind = Processor::Kind::kJsonValidate};
  absl::StatusOr<std::string> valid = Process(validate, body);
  if (valid.ok()) FUZZ_CHECK(*valid == "valid");
  Processor whole{.kind = Processor::Kind::kJsonPointer, .pointer = ""};
  absl::StatusOr<std::string> all = Process(whole, body);
  // "" points at the document: there is a value exactly when it is JSON.
  FUZZ_CHECK(all.ok() == valid.ok());
  Processor at{.kind = Processor::Kind::kJsonPointer, .pointer = pointer};
  if (ValidateProcessor(at).ok()) {
    absl::StatusOr<std::string> value = Process(at, body);
    if (value.ok()) {
      // The value comes back as JSON text.
      FUZZ_CHECK(Process(validate, *value).ok());
    }
  }
}

}  // namespace
}  // namespace fetchd::process

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fetchd::fuzz::FuzzInput in(data, size);
  const std::string pointer = in.Line();
  fetchd::process::CheckJson(pointer, in.Rest());
  return 0;
}
