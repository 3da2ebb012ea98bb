// The SQLite JobStore: the conformance suite on a temp-dir file, and what
// only SQLite has (WAL, corrupt files, schema versions, reopening).
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "server/jobs/store.h"
#include "tests/jobs/store_conformance.h"
#include "tests/support/certs.h"

namespace fetchd::jobs {
namespace {

using ::fetchd::jobs::testing::JobStoreConformance;
using ::fetchd::jobs::testing::StoreFactory;

// One directory for the binary's conformance stores; each test opens a new
// file in it.
const ::fetchd::testing::TempDir& SuiteDir() {
  static auto* dir = new ::fetchd::testing::TempDir();
  return *dir;
}

INSTANTIATE_TEST_SUITE_P(Sqlite, JobStoreConformance,
                         ::testing::Values(StoreFactory([] {
                           static int n = 0;
                           return OpenSqliteStore(
                               SuiteDir().File(absl::StrCat("c", ++n, ".db")),
                               StoreOptions{});
                         })));

}  // namespace
}  // namespace fetchd::jobs
