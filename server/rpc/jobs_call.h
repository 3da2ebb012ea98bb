// The Jobs service's calls (internal to rpc/): thin gRPC shells over
// jobs::JobsService, which runs the store work on its own threads and
// answers through callbacks. A job belongs to the caller's identity
// (auth::Caller: a token or mTLS identity, else "anonymous").
#ifndef FETCHD_SERVER_RPC_JOBS_CALL_H_
#define FETCHD_SERVER_RPC_JOBS_CALL_H_

#include <memory>

#include "fetchd/v1/jobs.grpc.pb.h"
#include "server/jobs/jobs.h"
#include "server/rpc/call.h"

namespace fetchd::rpc {

// Arms one call of every Jobs method on `loop`.
void ArmJobsCalls(v1::Jobs::AsyncService* service, jobs::JobsService* jobs,
                  CqLoop* loop);

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_JOBS_CALL_H_
