// json_pointer and json_validate on nlohmann-json. The library reports some
// errors by exception; they are caught here and never leave the module.
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/process/internal.h"

namespace fetchd::process {
namespace {

absl::StatusOr<nlohmann::json> Parse(absl::string_view body,
                                     const char* processor) {
  nlohmann::json doc = nlohmann::json::parse(body.begin(), body.end(), nullptr,
                                             /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::FailedPreconditionError(
        absl::StrCat(processor, ": the body is not valid JSON"));
  }
  return doc;
}

}  // namespace

absl::Status ValidateJsonPointer(absl::string_view pointer) {
  try {
    nlohmann::json::json_pointer parsed{std::string(pointer)};
    (void)parsed;
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "process.json_pointer \"", pointer,
        "\" is not an RFC 6901 pointer (it must be empty or start with '/', "
        "and '~' must be followed by 0 or 1)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> JsonPointer(absl::string_view pointer,
                                        absl::string_view body) {
  absl::StatusOr<nlohmann::json> doc = Parse(body, "json_pointer");
  if (!doc.ok()) return doc.status();
  try {
    const nlohmann::json::json_pointer parsed{std::string(pointer)};
    if (!doc->contains(parsed)) {
      return absl::NotFoundError(
          absl::StrCat("json_pointer: no value at \"", pointer, "\""));
    }
    return doc->at(parsed).dump();
  } catch (const nlohmann::json::exception& e) {
    return absl::NotFoundError(absl::StrCat("json_pointer: no value at \"",
                                            pointer, "\" (", e.what(), ")"));
  }
}

absl::StatusOr<std::string> JsonValidate(absl::string_view body) {
  // The SAX-free parse with a callback-less error report: re-parse with
  // exceptions only to get the position of the error.
  if (nlohmann::json::accept(body.begin(), body.end()))
    return std::string("valid");
  try {
    (void)nlohmann::json::parse(body.begin(), body.end());
  } catch (const nlohmann::json::parse_error& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("json_validate: invalid JSON at byte ", e.byte));
  }
  return absl::FailedPreconditionError("json_validate: invalid JSON");
}

}  // namespace fetchd::process
