#include "server/rpc/convert.h"

#include <gtest/gtest.h>

namespace fetchd::rpc {
namespace {

TEST(ConvertTest, StatusCodesMapOneToOne) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  const std::pair<absl::Status, grpc::StatusCode> cases[] = {
      {absl::InvalidArgumentError("a"), grpc::StatusCode::INVALID_ARGUMENT},
      {absl::ResourceExhaustedError("b"), grpc::StatusCode::RESOURCE_EXHAUSTED},
      {absl::DeadlineExceededError("c"), grpc::StatusCode::DEADLINE_EXCEEDED},
      {absl::CancelledError("d"), grpc::StatusCode::CANCELLED},
      {absl::UnavailableError("e"), grpc::StatusCode::UNAVAILABLE},
      {absl::PermissionDeniedError("f"), grpc::StatusCode::PERMISSION_DENIED},
      {absl::NotFoundError("g"), grpc::StatusCode::NOT_FOUND},
      {absl::FailedPreconditionError("h"),
       grpc::StatusCode::FAILED_PRECONDITION},
      {absl::InternalError("i"), grpc::StatusCode::INTERNAL},
  };
  for (const auto& [in, code] : cases) {
    grpc::Status out = ToGrpcStatus(in);
    EXPECT_EQ(out.error_code(), code) << in;
    EXPECT_EQ(out.error_message(), in.message());
  }
}

}  // namespace
}  // namespace fetchd::rpc
