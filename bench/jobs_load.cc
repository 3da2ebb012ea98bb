// jobs_load: the Jobs benchmark's client (bench/jobs.sh). One workload per
// run, --n URLs of ORIGIN/items/{1..10000}.json at --concurrency, timed with
// a steady clock:
//   --mode=live   one StreamBatchFetch of the URLs; items/s from the call's
//                 start to its last result
//   --mode=unary  one unary BatchFetch of the URLs (a second reference: the
//                 whole answer in one message)
//   --mode=job    Submit them as one batch job; items/s from Submit's start
//                 to the terminal Watch event. Also: Submit's own time, the
//                 time from Submit returning to the first result visible in
//                 ListResults (polled every --poll_us) and to the first
//                 Watch event with done > 0, the job's own run rate
//                 (started_at..finished_at from Get), created_at ->
//                 started_at (how long a runner took to claim it), and a
//                 read-back of every result (ListResults pages of 10,000),
//                 checked, then the median time of a Get and of a
//                 ListResults of 1 result on the ended job
//   --mode=probe  nothing but the probe, for --probe_seconds
// With --probe_rate > 0, a probe runs beside the workload: unary BatchFetch
// of 1 URL at that steady rate on its own connection, as --probe_token (a
// different identity), and reports p50/p99/max latency.
//
// Prints one line: LABEL key=value ... ; exits 1 if any item or probe failed.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "fetchd/v1/fetch.grpc.pb.h"
#include "fetchd/v1/jobs.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "fetchd address");
ABSL_FLAG(std::string, base, "http://127.0.0.1:18080", "origin base URL");
ABSL_FLAG(std::string, mode, "job", "live, unary, job or probe");
ABSL_FLAG(int, n, 100000, "URLs in the batch");
ABSL_FLAG(int, concurrency, 64, "max_concurrency of the batch");
ABSL_FLAG(std::string, token, "", "bearer token of the workload's identity");
ABSL_FLAG(std::string, probe_token, "", "bearer token of the probe");
ABSL_FLAG(double, probe_rate, 0, "probe requests a second; 0 = no probe");
ABSL_FLAG(double, probe_seconds, 5, "--mode=probe: how long");
ABSL_FLAG(int, poll_us, 5000, "ListResults poll interval for the first result");
ABSL_FLAG(int, timeout_s, 600, "deadline of every RPC and of the whole run");
ABSL_FLAG(std::string, label, "jobs", "first column of the output line");

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::shared_ptr<grpc::Channel> NewChannel() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Its own connection: channels to one target otherwise share subchannels.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target),
                                   grpc::InsecureChannelCredentials(), args);
}

std::unique_ptr<grpc::ClientContext> Context(const std::string& token,
                                             int timeout_s) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(timeout_s));
  if (!token.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  }
  return context;
}

std::string Url(int i) {
  return absl::StrCat(absl::GetFlag(FLAGS_base), "/items/", i % 10000 + 1,
                      ".json");
}

bool Ok(const fetchd::v1::FetchResult& result) {
  return result.error().code() == 0 && result.http_status() == 200;
}

double ToSeconds(const google::protobuf::Timestamp& t) {
  return t.seconds() + t.nanos() / 1e9;
}

// Unary BatchFetch of one URL at a steady rate (each send scheduled from the
// start, so a slow answer does not push the schedule back) until stopped.
class Probe {
 public:
  void Start(double rate) {
    thread_ = std::thread([this, rate] { Run(rate); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::string Report() {
    std::sort(ms_.begin(), ms_.end());
    auto at = [this](double q) {
      if (ms_.empty()) return 0.0;
      size_t i = static_cast<size_t>(q * (ms_.size() - 1) + 0.5);
      return ms_[std::min(i, ms_.size() - 1)];
    };
    return absl::StrFormat(
        " probe_n=%d probe_errors=%d probe_p50_ms=%.2f probe_p99_ms=%.2f "
        "probe_max_ms=%.2f",
        ms_.size(), errors_, at(0.5), at(0.99), ms_.empty() ? 0 : ms_.back());
  }
  int errors() const { return errors_; }

 private:
  void Run(double rate) {
    auto stub = fetchd::v1::Fetch::NewStub(NewChannel());
    const std::string token = absl::GetFlag(FLAGS_probe_token);
    const auto interval = std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(1.0 / rate));
    const auto start = Clock::now();
    for (int i = 0; !stop_; ++i) {
      std::this_thread::sleep_until(start + i * interval);
      if (stop_) break;
      fetchd::v1::BatchFetchRequest request;
      request.add_items()->set_url(Url(7919 * i));
      fetchd::v1::BatchFetchResponse response;
      auto context = Context(token, 10);
      const auto t0 = Clock::now();
      grpc::Status status = stub->BatchFetch(context.get(), request, &response);
      const auto t1 = Clock::now();
      if (!status.ok() || response.results_size() != 1 ||
          !Ok(response.results(0))) {
        if (errors_++ == 0) {
          std::fprintf(stderr, "probe: %s %s\n", status.error_message().c_str(),
                       response.results_size() == 1
                           ? response.results(0).error().message().c_str()
                           : "");
        }
        continue;
      }
      ms_.push_back(1e3 * Seconds(t1 - t0));
    }
  }

  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::vector<double> ms_;  // the probe thread's until Stop()
  int errors_ = 0;
};

// BatchRequest: BatchFetchRequest or StreamBatchFetchRequest.
template <typename BatchRequest = fetchd::v1::BatchFetchRequest>
BatchRequest Batch() {
  BatchRequest batch;
  const int n = absl::GetFlag(FLAGS_n);
  for (int i = 0; i < n; ++i) batch.add_items()->set_url(Url(i));
  batch.set_max_concurrency(absl::GetFlag(FLAGS_concurrency));
  return batch;
}

// One StreamBatchFetch of every URL.
bool Live(std::string* line) {
  const auto batch = Batch<fetchd::v1::StreamBatchFetchRequest>();
  auto stub = fetchd::v1::Fetch::NewStub(NewChannel());
  auto context =
      Context(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_timeout_s));
  int64_t ok = 0, failed = 0;
  std::string first_error;
  const auto start = Clock::now();
  auto reader = stub->StreamBatchFetch(context.get(), batch);
  fetchd::v1::StreamBatchFetchResponse response;
  while (reader->Read(&response)) {
    if (Ok(response.result())) {
      ++ok;
    } else if (failed++ == 0) {
      first_error = response.result().error().message();
    }
  }
  grpc::Status status = reader->Finish();
  const double seconds = Seconds(Clock::now() - start);
  if (!status.ok()) first_error = status.error_message();
  *line = absl::StrFormat("ok=%d failed=%d seconds=%.3f items_s=%.0f", ok,
                          failed, seconds, batch.items_size() / seconds);
  if (!first_error.empty()) absl::StrAppend(line, " first_error=", first_error);
  return status.ok() && ok == batch.items_size();
}

// One unary BatchFetch of every URL.
bool Unary(std::string* line) {
  const fetchd::v1::BatchFetchRequest batch = Batch();
  auto stub = fetchd::v1::Fetch::NewStub(NewChannel());
  auto context =
      Context(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_timeout_s));
  fetchd::v1::BatchFetchResponse response;
  const auto start = Clock::now();
  grpc::Status status = stub->BatchFetch(context.get(), batch, &response);
  const double seconds = Seconds(Clock::now() - start);
  int64_t ok = 0;
  std::string first_error = status.error_message();
  for (const auto& result : response.results()) {
    if (Ok(result)) {
      ++ok;
    } else if (first_error.empty()) {
      first_error = result.error().message();
    }
  }
  *line = absl::StrFormat("ok=%d failed=%d seconds=%.3f items_s=%.0f", ok,
                          batch.items_size() - ok, seconds,
                          batch.items_size() / seconds);
  if (!first_error.empty()) absl::StrAppend(line, " first_error=", first_error);
  return status.ok() && ok == batch.items_size();
}

// One batch job of every URL, watched to its end, then read back.
bool Job(std::string* line) {
  fetchd::v1::SubmitRequest submit;
  *submit.mutable_batch_fetch() = Batch();
  const int n = absl::GetFlag(FLAGS_n);
  const int timeout_s = absl::GetFlag(FLAGS_timeout_s);
  const std::string token = absl::GetFlag(FLAGS_token);
  auto stub = fetchd::v1::Jobs::NewStub(NewChannel());

  const auto start = Clock::now();
  fetchd::v1::SubmitResponse submitted;
  grpc::Status status =
      stub->Submit(Context(token, timeout_s).get(), submit, &submitted);
  const auto returned = Clock::now();
  if (!status.ok()) {
    *line = absl::StrCat("submit_error=", status.error_message());
    return false;
  }
  const std::string id = submitted.job().id();

  // Watch: the first event with done > 0, and the terminal one.
  Clock::time_point first_watch{}, end{};
  fetchd::v1::WatchResponse last;
  grpc::Status watch_status;
  std::thread watcher([&] {
    fetchd::v1::WatchRequest request;
    request.set_id(id);
    auto context = Context(token, timeout_s);
    auto reader = stub->Watch(context.get(), request);
    fetchd::v1::WatchResponse event;
    while (reader->Read(&event)) {
      if (event.counts().done() > 0 && first_watch == Clock::time_point{}) {
        first_watch = Clock::now();
      }
      last = event;
    }
    end = Clock::now();
    watch_status = reader->Finish();
  });

  // ListResults: the first result visible.
  Clock::time_point first_list{};
  {
    fetchd::v1::ListResultsRequest request;
    request.set_id(id);
    request.set_page_size(1);
    const auto poll = std::chrono::microseconds(absl::GetFlag(FLAGS_poll_us));
    while (Clock::now() - returned < std::chrono::seconds(timeout_s)) {
      fetchd::v1::ListResultsResponse response;
      grpc::Status s = stub->ListResults(Context(token, timeout_s).get(),
                                         request, &response);
      if (s.ok() && response.results_size() > 0) {
        first_list = Clock::now();
        break;
      }
      if (!s.ok()) {
        std::fprintf(stderr, "ListResults: %s\n", s.error_message().c_str());
        break;
      }
      std::this_thread::sleep_for(poll);
    }
  }
  watcher.join();
  const double seconds = Seconds(end - start);

  fetchd::v1::GetRequest get;
  get.set_id(id);
  fetchd::v1::GetResponse job;
  status = stub->Get(Context(token, timeout_s).get(), get, &job);
  const double run = status.ok() ? ToSeconds(job.job().finished_at()) -
                                       ToSeconds(job.job().started_at())
                                 : 0;
  // Submit stored it -> a runner claimed it (the server's clock).
  const double claim = status.ok() ? ToSeconds(job.job().started_at()) -
                                         ToSeconds(job.job().created_at())
                                   : 0;

  // Read back every result.
  int64_t read = 0, ok = 0;
  std::string first_error;
  const auto read_start = Clock::now();
  {
    fetchd::v1::ListResultsRequest request;
    request.set_id(id);
    request.set_page_size(10000);
    for (;;) {
      fetchd::v1::ListResultsResponse response;
      grpc::Status s = stub->ListResults(Context(token, timeout_s).get(),
                                         request, &response);
      if (!s.ok()) {
        first_error = s.error_message();
        break;
      }
      for (const auto& result : response.results()) {
        ++read;
        if (result.has_fetch() && Ok(result.fetch())) {
          ++ok;
        } else if (first_error.empty()) {
          first_error = result.fetch().error().message();
        }
      }
      if (response.next_page_token().empty()) break;
      request.set_page_token(response.next_page_token());
    }
  }
  const double read_seconds = Seconds(Clock::now() - read_start);

  // What one small call costs on this job (ended): Get, and ListResults of
  // one result; medians of 21.
  auto median_ms = [](auto call) {
    std::vector<double> ms;
    for (int i = 0; i < 21; ++i) {
      const auto t0 = Clock::now();
      call();
      ms.push_back(1e3 * Seconds(Clock::now() - t0));
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  const double get_ms = median_ms([&] {
    fetchd::v1::GetResponse response;
    (void)stub->Get(Context(token, timeout_s).get(), get, &response);
  });
  const double list1_ms = median_ms([&] {
    fetchd::v1::ListResultsRequest request;
    request.set_id(id);
    request.set_page_size(1);
    fetchd::v1::ListResultsResponse response;
    (void)stub->ListResults(Context(token, timeout_s).get(), request,
                            &response);
  });
  auto ms = [returned](Clock::time_point t) {
    return t == Clock::time_point{} ? -1.0 : 1e3 * Seconds(t - returned);
  };
  *line = absl::StrFormat(
      "id=%s state=%s ok=%d failed=%d seconds=%.3f items_s=%.0f "
      "submit_ms=%.1f claim_ms=%.1f first_result_ms=%.1f first_watch_ms=%.1f "
      "run_items_s=%.0f readback_items_s=%.0f get_ms=%.2f list1_ms=%.2f",
      id, fetchd::v1::JobState_Name(last.state()), ok, read - ok, seconds,
      n / seconds, 1e3 * Seconds(returned - start), 1e3 * claim, ms(first_list),
      ms(first_watch), run > 0 ? n / run : 0, read / read_seconds, get_ms,
      list1_ms);
  if (!watch_status.ok()) first_error = watch_status.error_message();
  if (!first_error.empty()) absl::StrAppend(line, " first_error=", first_error);
  return watch_status.ok() && last.state() == fetchd::v1::JOB_STATE_SUCCEEDED &&
         ok == n;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const double rate = absl::GetFlag(FLAGS_probe_rate);
  // The run bounds its own time, whatever fetchd does.
  std::thread([] {
    std::this_thread::sleep_for(
        std::chrono::seconds(absl::GetFlag(FLAGS_timeout_s) + 30));
    std::fprintf(stderr, "jobs_load: --timeout_s passed, giving up\n");
    std::_Exit(2);
  }).detach();
  Probe probe;
  if (rate > 0 || mode == "probe") probe.Start(rate > 0 ? rate : 100);
  std::string line;
  bool ok = true;
  if (mode == "live") {
    ok = Live(&line);
  } else if (mode == "unary") {
    ok = Unary(&line);
  } else if (mode == "job") {
    ok = Job(&line);
  } else if (mode == "probe") {
    std::this_thread::sleep_for(
        std::chrono::duration<double>(absl::GetFlag(FLAGS_probe_seconds)));
  } else {
    std::fprintf(stderr,
                 "jobs_load: --mode must be live, unary, job or probe\n");
    return 2;
  }
  probe.Stop();
  if (rate > 0 || mode == "probe") line += probe.Report();
  std::printf("%s mode=%s n=%d c=%d %s\n", absl::GetFlag(FLAGS_label).c_str(),
              mode.c_str(), absl::GetFlag(FLAGS_n),
              absl::GetFlag(FLAGS_concurrency), line.c_str());
  return ok && probe.errors() == 0 ? 0 : 1;
}
