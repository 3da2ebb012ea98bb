// The gRPC face of server/auth (internal to rpc/): the port's TLS
// credentials, and the caller of a call from its metadata and its verified
// client certificate.
#ifndef FETCHD_SERVER_RPC_SECURITY_H_
#define FETCHD_SERVER_RPC_SECURITY_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/auth/auth.h"

namespace fetchd::rpc {

// Plaintext without a certificate; TLS with one, re-read from disk every
// `reload_interval` (rounded up to whole seconds, at least 1) so a rotated
// certificate is served to new connections without a restart; with a
// client CA, a client certificate signed by it is required. Check the files
// with auth::CheckTlsFiles first: gRPC only logs a file it cannot read.
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const auth::TlsFiles& files, absl::Duration reload_interval);

// The verified subject of the client certificate: its common name, or its
// first subjectAltName when it has no CN; "" without a client certificate.
std::string VerifiedSubject(const grpc::ServerContext& context);

// Names the caller of each call. Thread-safe.
class CallAuthenticator {
 public:
  // `auth` is not owned and outlives this; `mtls`: client certificates are
  // verified, so their subjects can name callers.
  CallAuthenticator(const auth::Authenticator* auth, bool mtls)
      : auth_(auth), mtls_(mtls) {}

  // The caller, or UNAUTHENTICATED with a reason that names no secret.
  absl::StatusOr<auth::Caller> Authenticate(
      const grpc::ServerContext& context) const;

 private:
  const auth::Authenticator* const auth_;
  const bool mtls_;
};

}  // namespace fetchd::rpc

#endif  // FETCHD_SERVER_RPC_SECURITY_H_
