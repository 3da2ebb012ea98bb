// test_origin: the test suite's HTTP origin (tests/support/origin.h) as a
// process, for benchmarks that need its routes (e.g. /pn/KEY?page=N&delay=MS,
// a page-number API that adds latency). Prints its base URL, then serves
// until SIGTERM or SIGINT.
#include <csignal>
#include <cstdio>

#include "tests/support/origin.h"

int main() {
  // Blocked before the origin's threads start, so only sigwait sees them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  fetchd::testing::Origin origin;
  std::printf("%s\n", origin.base().c_str());
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&stop, &signal_number);
  return 0;
}
