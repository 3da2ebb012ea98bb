// Small Jobs RPC helpers the jobs tests share: one Get, and every result
// of a job page by page.
#ifndef FETCHD_TESTS_SUPPORT_JOBS_CLIENT_H_
#define FETCHD_TESTS_SUPPORT_JOBS_CLIENT_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fetchd/v1/jobs.grpc.pb.h"

namespace fetchd::testing {

// The job, or the RPC's status (its code kept).
absl::StatusOr<v1::Job> GetJob(v1::Jobs::Stub& stub, const std::string& id);

// Every result that exists now, in item order, `page_size` per page,
// following page tokens until the last page (or an empty page of a job
// still running). An RPC error or an index seen twice fails the test.
// `pages`, if given, is the number of pages read.
std::vector<v1::JobResult> AllResults(v1::Jobs::Stub& stub,
                                      const std::string& id, int page_size,
                                      int* pages = nullptr);

}  // namespace fetchd::testing

#endif  // FETCHD_TESTS_SUPPORT_JOBS_CLIENT_H_
