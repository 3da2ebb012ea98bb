// The JobStore conformance suite (see store_conformance.h).
#include "tests/jobs/store_conformance.h"

#include <openssl/sha.h>

#include <string>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"

namespace fetchd::jobs::testing {
namespace {

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

}  // namespace

void JobStoreConformance::SetUp() {
  absl::StatusOr<std::unique_ptr<JobStore>> store = GetParam()();
  ASSERT_TRUE(store.ok()) << store.status();
  store_ = *std::move(store);
}

void JobStoreConformance::TearDown() { store_.reset(); }

NewJob JobStoreConformance::MakeJob(const std::string& identity, absl::Time now,
                                    const std::string& key,
                                    const std::string& request, int64_t total) {
  NewJob job;
  job.id = NewJobId();
  job.identity = identity;
  job.idempotency_key = key;
  job.kind = Kind::kBatchFetch;
  job.request = request;
  job.request_hash = Sha256Hex(request);
  job.total = total;
  job.ttl = absl::Hours(1);
  job.now = now;
  return job;
}

std::string JobStoreConformance::CreateJob(const std::string& identity,
                                           absl::Time now,
                                           const std::string& key,
                                           int64_t total) {
  absl::StatusOr<Created> created =
      store_->Create(MakeJob(identity, now, key, "request", total), {});
  EXPECT_TRUE(created.ok()) << created.status();
  if (!created.ok()) return "";
  return created->job.id;
}

TEST_P(JobStoreConformance, CreateThenGet) {
  std::string id = CreateJob("alice", t0_);
  absl::StatusOr<Job> job = store_->Get("alice", id, t0_);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->id, id);
  EXPECT_EQ(job->state, State::kQueued);
}

}  // namespace fetchd::jobs::testing
