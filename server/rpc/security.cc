#include "server/rpc/security.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include <algorithm>
#include <cmath>

namespace fetchd::rpc {

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const auth::TlsFiles& files, absl::Duration reload_interval) {
  if (files.cert.empty()) return grpc::InsecureServerCredentials();
  const double seconds = std::ceil(absl::ToDoubleSeconds(reload_interval));
  const auto interval = static_cast<unsigned>(
      std::clamp(seconds, 1.0, static_cast<double>(24 * 3600)));
  // gRPC's own watcher: it re-reads the files every `interval` and hands
  // new ones to the handshaker; connections already open keep theirs.
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          files.key, files.cert, files.client_ca, interval);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!files.client_ca.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(
        GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

std::string VerifiedSubject(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return "";
  for (const char* property :
       {"x509_common_name", "x509_subject_alternative_name"}) {
    std::vector<grpc::string_ref> values = auth->FindPropertyValues(property);
    if (!values.empty() && values.front().size() > 0) {
      return std::string(values.front().data(), values.front().size());
    }
  }
  return "";
}

absl::StatusOr<auth::Caller> CallAuthenticator::Authenticate(
    const grpc::ServerContext& context) const {
  std::optional<absl::string_view> authorization;
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  return auth_->Authenticate(authorization,
                             mtls_ ? VerifiedSubject(context) : std::string());
}

}  // namespace fetchd::rpc
