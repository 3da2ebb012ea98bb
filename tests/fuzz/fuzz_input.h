// What every fuzz target shares: a line-oriented view of the input (so seed
// files can be written by hand: "the URL on line 1, the rule on line 2")
// and FUZZ_CHECK, which aborts on a broken invariant so that libFuzzer
// keeps the input.
#ifndef FETCHD_TESTS_FUZZ_FUZZ_INPUT_H_
#define FETCHD_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"

// Not assert(): the asan preset is RelWithDebInfo (NDEBUG), and a fuzz
// target's invariants must hold there.
#define FUZZ_CHECK(condition)                                          \
  do {                                                                 \
    if (!(condition)) {                                                \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, \
                   __LINE__, #condition);                              \
      std::abort();                                                    \
    }                                                                  \
  } while (false)

namespace fetchd::fuzz {

class FuzzInput {
 public:
  FuzzInput(const uint8_t* data, size_t size)
      : rest_(reinterpret_cast<const char*>(data), size) {}

  // The text up to the next '\n' (consumed, not returned), or all that is
  // left when there is none.
  std::string Line() {
    const size_t end = rest_.find('\n');
    std::string line(rest_.substr(0, end));
    rest_ = end == absl::string_view::npos ? absl::string_view()
                                           : rest_.substr(end + 1);
    return line;
  }
  // The first byte (0 when empty), consumed.
  uint8_t Byte() {
    if (rest_.empty()) return 0;
    const uint8_t b = static_cast<uint8_t>(rest_.front());
    rest_.remove_prefix(1);
    return b;
  }
  absl::string_view Rest() const { return rest_; }
  bool empty() const { return rest_.empty(); }

 private:
  absl::string_view rest_;
};

}  // namespace fetchd::fuzz

#endif  // FETCHD_TESTS_FUZZ_FUZZ_INPUT_H_
