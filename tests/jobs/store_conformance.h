// The JobStore conformance suite: every backend runs the same tests, which
// check every promise of server/jobs/store.h. A backend instantiates it in
// its own test file:
//
//   INSTANTIATE_TEST_SUITE_P(Sqlite, JobStoreConformance,
//                            ::testing::Values(StoreFactory([] {...})));
//
// The factory is called once per test and must return a fresh, EMPTY store
// (a new file, a new database or schema): tests count rows and bytes.
#ifndef FETCHD_TESTS_JOBS_STORE_CONFORMANCE_H_
#define FETCHD_TESTS_JOBS_STORE_CONFORMANCE_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "server/jobs/store.h"

namespace fetchd::jobs::testing {

using StoreFactory = std::function<absl::StatusOr<std::unique_ptr<JobStore>>()>;

class JobStoreConformance : public ::testing::TestWithParam<StoreFactory> {
 protected:
  void SetUp() override;
  void TearDown() override;

  // A job of `identity` submitted at `now` (idempotency key `key`, request
  // `request`, `total` items, ttl 1 h).
  NewJob MakeJob(const std::string& identity, absl::Time now,
                 const std::string& key = "",
                 const std::string& request = "request", int64_t total = 10);
  // Creates MakeJob(...) and returns its id (fails the test on error).
  std::string CreateJob(const std::string& identity, absl::Time now,
                        const std::string& key = "", int64_t total = 10);

  std::unique_ptr<JobStore> store_;
  // A fixed clock origin; tests pass times relative to it, never sleep.
  absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
};

}  // namespace fetchd::jobs::testing

#endif  // FETCHD_TESTS_JOBS_STORE_CONFORMANCE_H_
