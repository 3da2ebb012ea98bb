// The individual processors (internal to process/).
#ifndef FETCHD_SERVER_PROCESS_INTERNAL_H_
#define FETCHD_SERVER_PROCESS_INTERNAL_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fetchd::process {

absl::StatusOr<std::string> HtmlTitle(absl::string_view body);
absl::StatusOr<std::string> JsonPointer(absl::string_view pointer,
                                        absl::string_view body);
absl::StatusOr<std::string> JsonValidate(absl::string_view body);
absl::Status ValidateJsonPointer(absl::string_view pointer);

}  // namespace fetchd::process

#endif  // FETCHD_SERVER_PROCESS_INTERNAL_H_
