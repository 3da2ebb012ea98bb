#include "tests/support/jobs_client.h"

#include <gtest/gtest.h>

#include <set>

#include "tests/support/test_server.h"

namespace fetchd::testing {

absl::StatusOr<v1::Job> GetJob(v1::Jobs::Stub& stub, const std::string& id) {
  v1::GetRequest request;
  request.set_id(id);
  v1::GetResponse response;
  grpc::Status status =
      stub.Get(ContextWithTimeout(kEventTimeout).get(), request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return response.job();
}

std::vector<v1::JobResult> AllResults(v1::Jobs::Stub& stub,
                                      const std::string& id, int page_size,
                                      int* pages) {
  std::vector<v1::JobResult> results;
  std::set<int64_t> seen;
  v1::ListResultsRequest request;
  request.set_id(id);
  request.set_page_size(page_size);
  if (pages != nullptr) *pages = 0;
  // Bounded: a server that kept handing out tokens would otherwise loop.
  for (int page = 0; page < 10000; ++page) {
    v1::ListResultsResponse response;
    grpc::Status status = stub.ListResults(
        ContextWithTimeout(kEventTimeout).get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok()) break;
    if (pages != nullptr) *pages = page + 1;
    for (const v1::JobResult& result : response.results()) {
      EXPECT_TRUE(seen.insert(result.index()).second)
          << "index " << result.index() << " twice";
      results.push_back(result);
    }
    if (response.next_page_token().empty() || response.results_size() == 0) {
      break;
    }
    request.set_page_token(response.next_page_token());
  }
  return results;
}

}  // namespace fetchd::testing
