#include "server/rpc/convert.h"

#include <string>

namespace fetchd::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  // absl::StatusCode and grpc::StatusCode share the canonical code values.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Time DeadlineOf(const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();  // the client set no deadline
  }
  return absl::FromChrono(deadline);
}

}  // namespace fetchd::rpc
