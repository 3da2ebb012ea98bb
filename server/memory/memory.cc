// The budget's wakers, and choosing the budget from the flag or the cgroup.
#include "server/memory/memory.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fetchd::memory {

int Budget::AddWaker(std::function<void()> wake) {
  absl::MutexLock lock(&mu_);
  const int id = next_waker_++;
  wakers_.emplace_back(id, std::move(wake));
  return id;
}

void Budget::RemoveWaker(int id) {
  absl::MutexLock lock(&mu_);
  for (auto it = wakers_.begin(); it != wakers_.end(); ++it) {
    if (it->first == id) {
      wakers_.erase(it);
      return;
    }
  }
}

void Budget::Wake() {
  // NOTE: under mu_: RemoveWaker returns only once no call to that waker
  // is running, so its owner may then go away.
  absl::MutexLock lock(&mu_);
  for (auto& [id, wake] : wakers_) wake();
}

std::optional<int64_t> ParseCgroupMemoryLimit(absl::string_view contents) {
  const absl::string_view text = absl::StripAsciiWhitespace(contents);
  if (text.empty() || text == "max") return std::nullopt;
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) return std::nullopt;
  if (value == 0 || value >= (uint64_t{1} << 60)) return std::nullopt;
  return static_cast<int64_t>(value);
}

BudgetChoice ChooseBudget(int64_t flag_bytes,
                          const std::optional<std::string>& cgroup_v2_max,
                          const std::optional<std::string>& cgroup_v1_limit,
                          int64_t fallback) {
  if (flag_bytes > 0) return {flag_bytes, "flag"};
  const struct {
    const std::optional<std::string>& contents;
    const char* name;
  } files[] = {{cgroup_v2_max, "cgroup v2 memory.max"},
               {cgroup_v1_limit, "cgroup v1 memory.limit_in_bytes"}};
  for (const auto& file : files) {
    if (!file.contents.has_value()) continue;
    const std::optional<int64_t> limit = ParseCgroupMemoryLimit(*file.contents);
    if (!limit.has_value()) continue;
    // Divided first: no overflow below 2^60.
    const int64_t bytes = std::max<int64_t>(
        1, *limit / 100 * kCgroupPercent + *limit % 100 * kCgroupPercent / 100);
    return {bytes,
            absl::StrCat(kCgroupPercent, "% of ", file.name, "=", *limit)};
  }
  return {fallback, "default"};
}

namespace {

std::optional<std::string> ReadSmallFile(const char* path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return text.str();
}

}  // namespace

BudgetChoice ChooseBudgetForThisProcess(int64_t flag_bytes) {
  if (flag_bytes > 0)
    return ChooseBudget(flag_bytes, std::nullopt, std::nullopt);
  return ChooseBudget(
      flag_bytes, ReadSmallFile("/sys/fs/cgroup/memory.max"),
      ReadSmallFile("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
}

}  // namespace fetchd::memory
