// Process dispatch, the CPU budget and ProcessRunner's inline-or-pool
// choice.
#include "server/process/process.h"

#include <openssl/evp.h>
#include <time.h>

#include <algorithm>
#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "server/process/internal.h"

namespace fetchd::process {
namespace {

absl::Duration ThreadCpuTime() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

struct EvpMdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

// Hex SHA-256 of `body`, hashed in 1 MiB pieces (~1 ms each) with a budget
// check between them.
absl::StatusOr<std::string> Sha256Hex(absl::string_view body,
                                      CpuBudget& budget) {
  std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter> ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestInit_ex2(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("sha256: OpenSSL could not set up SHA-256");
  }
  constexpr size_t kPiece = 1 << 20;
  for (size_t offset = 0; offset < body.size(); offset += kPiece) {
    if (budget.Check()) return budget.Exhausted("sha256");
    if (EVP_DigestUpdate(ctx.get(), body.data() + offset,
                         std::min(kPiece, body.size() - offset)) != 1) {
      return absl::InternalError("sha256: OpenSSL SHA-256 failed");
    }
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) != 1) {
    return absl::InternalError("sha256: OpenSSL SHA-256 failed");
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), digest_len));
}

}  // namespace

CpuBudget::CpuBudget(absl::Duration limit)
    : limit_(limit),
      start_(limit == absl::InfiniteDuration() ? absl::ZeroDuration()
                                               : ThreadCpuTime()) {}

bool CpuBudget::Check() {
  if (!spent_ && limit_ != absl::InfiniteDuration()) {
    spent_ = ThreadCpuTime() - start_ >= limit_;
  }
  return spent_;
}

absl::Status CpuBudget::Exhausted(absl::string_view processor) const {
  return absl::ResourceExhaustedError(
      absl::StrCat(processor, ": used more than its CPU budget of ",
                   absl::FormatDuration(limit_), " (--max_process_time)"));
}

absl::Status ValidateProcessor(const Processor& processor) {
  if (processor.kind == Processor::Kind::kJsonPointer) {
    return ValidateJsonPointer(processor.pointer);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Process(const Processor& processor,
                                    absl::string_view body,
                                    absl::Duration max_cpu) {
  CpuBudget budget(max_cpu);
  switch (processor.kind) {
    case Processor::Kind::kNone:
      return std::string();
    case Processor::Kind::kHtmlTitle:
      return HtmlTitle(body, budget);
    case Processor::Kind::kSha256:
      return Sha256Hex(body, budget);
    case Processor::Kind::kJsonPointer:
      return JsonPointer(processor.pointer, body, budget);
    case Processor::Kind::kJsonValidate:
      return JsonValidate(body, budget);
  }
  return absl::InternalError("unknown processor");
}

void ProcessRunner::Run(const Processor& processor, absl::string_view body,
                        Callback done) {
  if (body.size() <= inline_max_bytes_) {
    std::move(done)(Process(processor, body, max_cpu_));
    return;
  }
  // `done` moves into the task; if Submit refuses, the task (and `done`)
  // comes back unrun, so keep a way to answer.
  auto shared_done = std::make_shared<Callback>(std::move(done));
  absl::Status queued = pool_->Submit(
      [processor, body, shared_done, max_cpu = max_cpu_](absl::Status start) {
        if (!start.ok()) {
          std::move (*shared_done)(std::move(start));
          return;
        }
        std::move (*shared_done)(Process(processor, body, max_cpu));
      });
  if (!queued.ok()) {
    std::move (*shared_done)(absl::ResourceExhaustedError(absl::StrCat(
        "processing a ", body.size(), "-byte body: ", queued.message())));
  }
}

}  // namespace fetchd::process
