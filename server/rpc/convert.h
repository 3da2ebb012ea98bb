// Conversions at the gRPC edge: absl::Status -> grpc::Status (1:1 codes),
// gRPC deadlines -> absl::Time.
// Only rpc/ converts; the modules below it speak absl.
#ifndef FETCHD_SERVER_RPC_CONVERT_H_
#define FETCHD_SERVER_RPC_CONVERT_H_

#include <google/protobuf/duration.pb.h>
#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fetchd::rpc {

grpc::Status ToGrpcStatus(const absl::Status& status);
// The call's deadline, or absl::InfiniteFuture() when it has none.
absl::Time DeadlineOf(const grpc::ServerContext& context);

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_CONVERT_H_
