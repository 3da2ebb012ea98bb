// ReflectionService: grpc.reflection.v1alpha.ServerReflection answered from
// the generated descriptor pool (internal to rpc/). fetchd's own and not
// gRPC's plugin, so that it runs only for authenticated callers: gRPC 1.51
// cannot gate a service by metadata on a plaintext port.
#ifndef FETCHD_SERVER_RPC_REFLECTION_H_
#define FETCHD_SERVER_RPC_REFLECTION_H_

#include <string>
#include <vector>

#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "server/rpc/security.h"

namespace fetchd::rpc {

// A synchronous service (as gRPC's own health and reflection services are):
// it runs on the server's sync pollers, not on the CQ threads.
class ReflectionService final
    : public grpc::reflection::v1alpha::ServerReflection::Service {
 public:
  // `services`: the full names listed. `authenticator` (not owned; null:
  // everyone may ask) must accept the caller before anything is answered.
  ReflectionService(std::vector<std::string> services,
                    const CallAuthenticator* authenticator);

  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<
          grpc::reflection::v1alpha::ServerReflectionResponse,
          grpc::reflection::v1alpha::ServerReflectionRequest>* stream) override;

 private:
  const std::vector<std::string> services_;
  const CallAuthenticator* const authenticator_;
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_REFLECTION_H_
