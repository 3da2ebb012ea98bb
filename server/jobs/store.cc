// OpenJobStore (picks a backend by the --job_store scheme) and job ids.
#include "server/jobs/store.h"

#include <openssl/rand.h>

#include <array>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace fetchd::jobs {

absl::StatusOr<std::unique_ptr<JobStore>> OpenJobStore(
    absl::string_view spec, const StoreOptions& options) {
  if (absl::ConsumePrefix(&spec, "sqlite:")) {
    if (spec.empty()) {
      return absl::InvalidArgumentError(
          "--job_store: sqlite: needs a file path, e.g. sqlite:/data/jobs.db");
    }
    return OpenSqliteStore(std::string(spec), options);
  }
  if (absl::StartsWith(spec, "postgres://") ||
      absl::StartsWith(spec, "postgresql://")) {
    return OpenPostgresStore(std::string(spec), options);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--job_store: \"", spec,
      "\" is neither sqlite:PATH nor postgres://... (or postgresql://...)"));
}

std::string NewJobId() {
  std::array<unsigned char, 16> bytes{};
  // RAND_bytes fails only without entropy at all; a weaker id would be a
  // guessable one, so there is no fallback.
  if (RAND_bytes(bytes.data(), bytes.size()) != 1) abort();
  static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
  std::string id = "j_";
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char byte : bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      id.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) id.push_back(kAlphabet[(buffer << (5 - bits)) & 31]);
  return id;  // "j_" + 26 characters
}

}  // namespace fetchd::jobs
