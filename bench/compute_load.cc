// compute_load: closed-loop load driver for Compute.Run (async stub, one
// CompletionQueue per driver thread). Each of --concurrency callers sends
// its next call as soon as the previous answer arrives; the driver reports
// calls/s and latency percentiles measured after --warmup.
//
//   compute_load --target=127.0.0.1:50051 --n=1000000 --concurrency=16
//                --duration=5s [--threads=1]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "fetchd/v1/compute.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "fetchd address");
ABSL_FLAG(int64_t, n, 1, "sqrt_sum.n of every call");
ABSL_FLAG(int, concurrency, 1, "calls in flight (closed loop)");
ABSL_FLAG(int, threads, 1, "driver threads, each with its own channel and CQ");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(5), "measured time");
ABSL_FLAG(absl::Duration, warmup, absl::Milliseconds(500),
          "time before measuring starts");
ABSL_FLAG(std::string, label, "fetchd", "first column of the output line");
ABSL_FLAG(int, cancel_probes, 0,
          "instead of load: this many times, occupy --cancel_fill workers "
          "with endless kernels, cancel them, and report how long the next "
          "call's task waited for a freed worker (server-side queue_wait)");
ABSL_FLAG(int, cancel_fill, 2, "the server's --workers, for --cancel_probes");

namespace {

using Clock = std::chrono::steady_clock;

struct Slot {
  std::unique_ptr<grpc::ClientContext> context;
  fetchd::v1::RunResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<fetchd::v1::RunResponse>>
      reader;
  Clock::time_point sent;
};

struct ThreadResult {
  std::vector<double> latencies_us;
  int64_t errors = 0;
  std::string first_error;
};

void Drive(int callers, Clock::time_point measure_from,
           Clock::time_point stop_at, ThreadResult* out) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // own connection
  auto channel = grpc::CreateCustomChannel(
      absl::GetFlag(FLAGS_target), grpc::InsecureChannelCredentials(), args);
  auto stub = fetchd::v1::Compute::NewStub(channel);
  fetchd::v1::RunRequest request;
  request.mutable_sqrt_sum()->set_n(absl::GetFlag(FLAGS_n));
  grpc::CompletionQueue cq;
  std::vector<Slot> slots(callers);
  auto send = [&](Slot* slot) {
    slot->context = std::make_unique<grpc::ClientContext>();
    slot->context->set_deadline(std::chrono::system_clock::now() +
                                std::chrono::seconds(30));
    slot->sent = Clock::now();
    slot->reader = stub->AsyncRun(slot->context.get(), request, &cq);
    slot->reader->Finish(&slot->response, &slot->status, slot);
  };
  for (Slot& slot : slots) send(&slot);
  int in_flight = callers;
  void* tag;
  bool ok;
  while (in_flight > 0 && cq.Next(&tag, &ok)) {
    auto* slot = static_cast<Slot*>(tag);
    const auto now = Clock::now();
    if (slot->sent >= measure_from && now <= stop_at) {
      if (slot->status.ok()) {
        out->latencies_us.push_back(
            std::chrono::duration<double, std::micro>(now - slot->sent)
                .count());
      } else if (out->errors++ == 0) {
        out->first_error = absl::StrFormat("%d: %s", slot->status.error_code(),
                                           slot->status.error_message());
      }
    }
    if (now < stop_at) {
      send(slot);
    } else {
      --in_flight;
    }
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

double Percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t i =
      std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()));
  return sorted[i];
}

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Cancel-to-free latency: the time a task waits for a worker whose kernel
// was just cancelled by its client.
int CancelProbes(int probes, int fill) {
  auto stub = fetchd::v1::Compute::NewStub(grpc::CreateChannel(
      absl::GetFlag(FLAGS_target), grpc::InsecureChannelCredentials()));
  fetchd::v1::RunRequest endless, tiny;
  endless.mutable_sqrt_sum()->set_n(10'000'000'000);
  tiny.mutable_sqrt_sum()->set_n(1);
  std::vector<double> waits_us;
  for (int p = 0; p < probes; ++p) {
    std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
    std::vector<std::thread> calls;
    for (int i = 0; i < fill; ++i) {
      contexts.push_back(std::make_unique<grpc::ClientContext>());
      calls.emplace_back([&stub, &endless, ctx = contexts.back().get()] {
        fetchd::v1::RunResponse ignored;
        stub->Run(ctx, endless, &ignored);
      });
    }
    // Let the kernels get going (a benchmark pause, not synchronisation).
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (auto& ctx : contexts) ctx->TryCancel();
    grpc::ClientContext context;
    fetchd::v1::RunResponse response;
    grpc::Status status = stub->Run(&context, tiny, &response);
    for (auto& t : calls) t.join();
    if (!status.ok()) {
      std::fprintf(stderr, "probe failed: %s\n",
                   status.error_message().c_str());
      return 1;
    }
    waits_us.push_back(
        absl::ToDoubleMicroseconds(FromProto(response.queue_wait())));
  }
  std::sort(waits_us.begin(), waits_us.end());
  std::printf(
      "%s cancel_probes=%d fill=%d freed_p50_us=%.0f freed_max_us=%.0f\n",
      absl::GetFlag(FLAGS_label).c_str(), probes, fill,
      Percentile(waits_us, 0.5), waits_us.back());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (const int probes = absl::GetFlag(FLAGS_cancel_probes); probes > 0) {
    return CancelProbes(probes, std::max(1, absl::GetFlag(FLAGS_cancel_fill)));
  }
  const int concurrency = std::max(1, absl::GetFlag(FLAGS_concurrency));
  const int threads = std::clamp(absl::GetFlag(FLAGS_threads), 1, concurrency);
  const auto measure_from =
      Clock::now() + absl::ToChronoNanoseconds(absl::GetFlag(FLAGS_warmup));
  const auto measured =
      absl::ToChronoNanoseconds(absl::GetFlag(FLAGS_duration));
  const auto stop_at = measure_from + measured;

  std::vector<ThreadResult> results(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    const int callers = concurrency / threads + (t < concurrency % threads);
    workers.emplace_back(Drive, callers, measure_from, stop_at, &results[t]);
  }
  for (auto& w : workers) w.join();

  std::vector<double> all;
  int64_t errors = 0;
  std::string first_error;
  for (auto& r : results) {
    all.insert(all.end(), r.latencies_us.begin(), r.latencies_us.end());
    errors += r.errors;
    if (first_error.empty()) first_error = r.first_error;
  }
  std::sort(all.begin(), all.end());
  const double seconds = std::chrono::duration<double>(measured).count();
  std::printf(
      "%s n=%lld c=%d calls=%zu errors=%lld calls/s=%.1f p50_us=%.0f "
      "p99_us=%.0f%s%s\n",
      absl::GetFlag(FLAGS_label).c_str(),
      static_cast<long long>(absl::GetFlag(FLAGS_n)), concurrency, all.size(),
      static_cast<long long>(errors), all.size() / seconds,
      Percentile(all, 0.50), Percentile(all, 0.99),
      first_error.empty() ? "" : " first_error=", first_error.c_str());
  return errors == 0 && !all.empty() ? 0 : 1;
}
