#include "server/rpc/reflection.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.pb.h"

namespace fetchd::rpc {
namespace {

namespace pb = ::google::protobuf;
using ::grpc::reflection::v1alpha::ServerReflectionRequest;
using ::grpc::reflection::v1alpha::ServerReflectionResponse;

// Adds `file` and then its dependencies, each once per stream (grpcurl
// needs the whole closure to build its own pool).
void AddFile(const pb::FileDescriptor* file,
             absl::flat_hash_set<std::string>& sent,
             ServerReflectionResponse& response) {
  std::vector<const pb::FileDescriptor*> todo = {file};
  while (!todo.empty()) {
    const pb::FileDescriptor* next = todo.back();
    todo.pop_back();
    if (!sent.insert(next->name()).second) continue;
    pb::FileDescriptorProto proto;
    next->CopyTo(&proto);
    response.mutable_file_descriptor_response()->add_file_descriptor_proto(
        proto.SerializeAsString());
    for (int i = next->dependency_count() - 1; i >= 0; --i) {
      todo.push_back(next->dependency(i));
    }
  }
}

void SetError(ServerReflectionResponse& response, grpc::StatusCode code,
              std::string message) {
  auto* error = response.mutable_error_response();
  error->set_error_code(code);
  error->set_error_message(std::move(message));
}

}  // namespace

ReflectionService::ReflectionService(std::vector<std::string> services,
                                     const CallAuthenticator* authenticator)
    : services_(std::move(services)), authenticator_(authenticator) {
  // NOTE: names the health messages so their generated file is linked in
  // and registered in the pool; nothing else in fetchd refers to it.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
}

grpc::Status ReflectionService::ServerReflectionInfo(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<ServerReflectionResponse, ServerReflectionRequest>*
        stream) {
  if (authenticator_ != nullptr) {
    absl::StatusOr<auth::Caller> caller =
        authenticator_->Authenticate(*context);
    if (!caller.ok()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          std::string(caller.status().message()));
    }
  }
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  absl::flat_hash_set<std::string> sent;
  ServerReflectionRequest request;
  while (stream->Read(&request)) {
    ServerReflectionResponse response;
    response.set_valid_host(request.host());
    *response.mutable_original_request() = request;
    switch (request.message_request_case()) {
      case ServerReflectionRequest::kListServices:
        for (const std::string& name : services_) {
          response.mutable_list_services_response()->add_service()->set_name(
              name);
        }
        break;
      case ServerReflectionRequest::kFileByFilename:
        if (const auto* file =
                pool->FindFileByName(request.file_by_filename())) {
          AddFile(file, sent, response);
        } else {
          SetError(
              response, grpc::StatusCode::NOT_FOUND,
              absl::StrCat("file not found: ", request.file_by_filename()));
        }
        break;
      case ServerReflectionRequest::kFileContainingSymbol:
        if (const auto* file = pool->FindFileContainingSymbol(
                request.file_containing_symbol())) {
          AddFile(file, sent, response);
        } else {
          SetError(response, grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("symbol not found: ",
                                request.file_containing_symbol()));
        }
        break;
      case ServerReflectionRequest::kFileContainingExtension: {
        const auto& ask = request.file_containing_extension();
        const pb::Descriptor* type =
            pool->FindMessageTypeByName(ask.containing_type());
        const pb::FieldDescriptor* extension =
            type == nullptr
                ? nullptr
                : pool->FindExtensionByNumber(type, ask.extension_number());
        if (extension != nullptr) {
          AddFile(extension->file(), sent, response);
        } else {
          SetError(response, grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("extension not found: ", ask.containing_type(),
                                " ", ask.extension_number()));
        }
        break;
      }
      case ServerReflectionRequest::kAllExtensionNumbersOfType: {
        const pb::Descriptor* type = pool->FindMessageTypeByName(
            request.all_extension_numbers_of_type());
        if (type == nullptr) {
          SetError(response, grpc::StatusCode::NOT_FOUND,
                   absl::StrCat("type not found: ",
                                request.all_extension_numbers_of_type()));
          break;
        }
        std::vector<const pb::FieldDescriptor*> extensions;
        pool->FindAllExtensions(type, &extensions);
        auto* numbers = response.mutable_all_extension_numbers_response();
        numbers->set_base_type_name(type->full_name());
        for (const auto* extension : extensions) {
          numbers->add_extension_number(extension->number());
        }
        break;
      }
      case ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
        SetError(response, grpc::StatusCode::UNIMPLEMENTED,
                 "the request asks nothing fetchd knows how to answer");
        break;
    }
    if (!stream->Write(response)) break;
  }
  return grpc::Status::OK;
}

}  // namespace fetchd::rpc
