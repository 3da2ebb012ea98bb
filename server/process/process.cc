// Process dispatch and ProcessRunner's inline-or-pool choice.
#include "server/process/process.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/process/internal.h"

namespace fetchd::process {

absl::Status ValidateProcessor(const Processor& processor) {
  if (processor.kind == Processor::Kind::kJsonPointer) {
    return ValidateJsonPointer(processor.pointer);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Process(const Processor& processor,
                                    absl::string_view body) {
  switch (processor.kind) {
    case Processor::Kind::kNone:
      return std::string();
    case Processor::Kind::kHtmlTitle:
      return HtmlTitle(body);
    case Processor::Kind::kSha256: {
      absl::StatusOr<std::string> digest =
          compute::RunSha256Chain(body, 1, compute::StopToken());
      if (!digest.ok()) return digest.status();
      return absl::BytesToHexString(*digest);
    }
    case Processor::Kind::kJsonPointer:
      return JsonPointer(processor.pointer, body);
    case Processor::Kind::kJsonValidate:
      return JsonValidate(body);
  }
  return absl::InternalError("unknown processor");
}

void ProcessRunner::Run(const Processor& processor, absl::string_view body,
                        Callback done) {
  if (body.size() <= inline_max_bytes_) {
    std::move(done)(Process(processor, body));
    return;
  }
  // `done` moves into the task; if Submit refuses, the task (and `done`)
  // comes back unrun, so keep a way to answer.
  auto shared_done = std::make_shared<Callback>(std::move(done));
  absl::Status queued =
      pool_->Submit([processor, body, shared_done](absl::Status start) {
        if (!start.ok()) {
          std::move (*shared_done)(std::move(start));
          return;
        }
        std::move (*shared_done)(Process(processor, body));
      });
  if (!queued.ok()) {
    std::move (*shared_done)(absl::ResourceExhaustedError(absl::StrCat(
        "processing a ", body.size(), "-byte body: ", queued.message())));
  }
}

}  // namespace fetchd::process
