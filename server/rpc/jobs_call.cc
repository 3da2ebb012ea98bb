#include "server/rpc/jobs_call.h"

#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "server/rpc/convert.h"

namespace fetchd::rpc {
namespace {

using Service = v1::Jobs::AsyncService;
template <typename Response>
using Writer = grpc::ServerAsyncResponseWriter<Response>;

// One unary Jobs method: how to request it and which JobsService operation
// answers it.
#define FETCHD_JOBS_METHOD(Name)                                               \
  struct Name##Method {                                                        \
    using Request = v1::Name##Request;                                         \
    using Response = v1::Name##Response;                                       \
    static constexpr absl::string_view kName = "Jobs." #Name;                  \
    static void RequestCall(Service* service, grpc::ServerContext* context,    \
                            Request* request, Writer<Response>* writer,        \
                            grpc::ServerCompletionQueue* cq, void* tag) {      \
      service->Request##Name(context, request, writer, cq, cq, tag);           \
    }                                                                          \
    static void Run(jobs::JobsService* jobs, std::string identity,             \
                    Request request, jobs::JobsService::Done<Response> done) { \
      jobs->Name(std::move(identity), std::move(request), std::move(done));    \
    }                                                                          \
  };
FETCHD_JOBS_METHOD(Submit)
FETCHD_JOBS_METHOD(Get)
FETCHD_JOBS_METHOD(Cancel)
FETCHD_JOBS_METHOD(List)
FETCHD_JOBS_METHOD(ListResults)
FETCHD_JOBS_METHOD(Delete)
#undef FETCHD_JOBS_METHOD

template <typename Method>
class JobsUnaryCall final
    : public UnaryCall<typename Method::Request, typename Method::Response> {
  using Base = UnaryCall<typename Method::Request, typename Method::Response>;

 public:
  JobsUnaryCall(Service* service, jobs::JobsService* jobs, CqLoop* loop)
      : Base(loop), service_(service), jobs_(jobs) {}

 private:
  void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) override {
    Method::RequestCall(service_, &this->context(), &this->request_,
                        &this->responder_, cq, tag);
  }
  void Spawn() override {
    Call::Arm(new JobsUnaryCall(service_, jobs_, this->loop()));
  }
  absl::string_view method() const override { return Method::kName; }
  void OnStart() override {
    // Answered on a store thread.
    Method::Run(jobs_, this->caller().identity, std::move(this->request_),
                [this](absl::StatusOr<typename Method::Response> response) {
                  if (!response.ok()) {
                    return this->Finish(ToGrpcStatus(response.status()));
                  }
                  *this->response_ = *std::move(response);
                  this->Finish(grpc::Status::OK);
                });
  }

  Service* const service_;
  jobs::JobsService* const jobs_;
};

// Jobs.Watch: events from the jobs' watch thread, written in order.
class WatchCall final
    : public ServerStreamCall<v1::WatchRequest, v1::WatchResponse> {
 public:
  WatchCall(Service* service, jobs::JobsService* jobs, CqLoop* loop)
      : ServerStreamCall(loop), service_(service), jobs_(jobs) {}

 private:
  void RequestCall(grpc::ServerCompletionQueue* cq, Tag* tag) override {
    service_->RequestWatch(&context(), &request_, &writer_, cq, cq, tag);
  }
  void Spawn() override { Arm(new WatchCall(service_, jobs_, loop())); }
  absl::string_view method() const override { return "Jobs.Watch"; }
  void OnStart() override ABSL_LOCKS_EXCLUDED(watch_mu_) {
    absl::StatusOr<std::unique_ptr<jobs::Watch>> watch = jobs_->StartWatch(
        caller().identity, request_,
        [this](v1::WatchResponse event) { Write(std::move(event)); },
        [this](absl::Status status) { Finish(ToGrpcStatus(status)); });
    if (!watch.ok()) return Finish(ToGrpcStatus(watch.status()));
    absl::MutexLock lock(&watch_mu_);
    watch_ = *std::move(watch);
  }
  void OnCancel() override ABSL_LOCKS_EXCLUDED(watch_mu_) {
    absl::MutexLock lock(&watch_mu_);
    // Ends it (CANCELLED) unless it ended; no callback runs after this.
    if (watch_ != nullptr) watch_->Cancel();
  }

  Service* const service_;
  jobs::JobsService* const jobs_;
  absl::Mutex watch_mu_;
  std::unique_ptr<jobs::Watch> watch_ ABSL_GUARDED_BY(watch_mu_);
};

}  // namespace

void ArmJobsCalls(Service* service, jobs::JobsService* jobs, CqLoop* loop) {
  Call::Arm(new JobsUnaryCall<SubmitMethod>(service, jobs, loop));
  Call::Arm(new JobsUnaryCall<GetMethod>(service, jobs, loop));
  Call::Arm(new JobsUnaryCall<CancelMethod>(service, jobs, loop));
  Call::Arm(new JobsUnaryCall<ListMethod>(service, jobs, loop));
  Call::Arm(new JobsUnaryCall<ListResultsMethod>(service, jobs, loop));
  Call::Arm(new JobsUnaryCall<DeleteMethod>(service, jobs, loop));
  Call::Arm(new WatchCall(service, jobs, loop));
}

}  // namespace fetchd::rpc
