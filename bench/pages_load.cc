// pages_load: walks one paginated API through fetchd's FetchPages and prints
// the rate, for bench/pages.sh.
//
//   pages_load --target=127.0.0.1:PORT --url=http://.../pages/1.json
//              [--strategy=cursor|page_number] [--prefetch=K]
//              [--max_pages=N] [--read_delay_us=D] [--progress_every=N]
//
// Prints "fetchd pages=N <seconds> s <rate> pages/s". With
// --progress_every=N it also prints "progress pages=N" every N pages (the
// script samples the server's memory at those points). --read_delay_us
// makes it a slow reader: it sleeps that long after each page.
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "bench/cancel_probe.h"
#include "fetchd/v1/fetch.grpc.pb.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "fetchd address");
ABSL_FLAG(std::string, url, "", "the first page");
ABSL_FLAG(std::string, strategy, "cursor",
          "cursor (pointer /next, a URL) "
          "or page_number (?page=N)");
ABSL_FLAG(std::string, items_pointer, "/items",
          "the items array (an empty one ends a page_number walk)");
ABSL_FLAG(int, prefetch, 2, "pages fetched ahead of the reader");
ABSL_FLAG(int64_t, max_pages, 0, "0 = to the end");
ABSL_FLAG(int64_t, read_delay_us, 0, "sleep after each page (slow reader)");
ABSL_FLAG(int64_t, progress_every, 0, "print progress every N pages");
ABSL_FLAG(int, rounds, 1, "walks; the rate of the best one is printed");
ABSL_FLAG(int, cancel_probes, 0,
          "instead of a walk: this many times, walk a page-number API on a "
          "local origin that never answers with --prefetch pages in flight, "
          "cancel once they have all arrived, and report how long fetchd "
          "takes to close them");

namespace {

int CancelProbes(fetchd::v1::Fetch::Stub* stub, int probes, int prefetch) {
  const auto times =
      fetchd::bench::RunCancelProbes<fetchd::v1::FetchPagesResponse>(
          probes, prefetch, [&](int port, grpc::ClientContext* context) {
            fetchd::v1::FetchPagesRequest request;
            request.mutable_first()->set_url(
                absl::StrCat("http://127.0.0.1:", port, "/list"));
            request.mutable_page_number();
            request.set_prefetch(prefetch);
            return stub->FetchPages(context, request);
          });
  if (!times.has_value()) return 1;
  std::printf(
      "fetchd cancel_probes=%d pages_in_flight=%d "
      "all_transfers_closed_p50_ms=%.2f max_ms=%.2f\n",
      probes, prefetch, times->p50_ms, times->max_ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  auto stub = fetchd::v1::Fetch::NewStub(grpc::CreateCustomChannel(
      absl::GetFlag(FLAGS_target), grpc::InsecureChannelCredentials(), args));
  if (const int probes = absl::GetFlag(FLAGS_cancel_probes); probes > 0) {
    return CancelProbes(stub.get(), probes, absl::GetFlag(FLAGS_prefetch));
  }
  fetchd::v1::FetchPagesRequest req;
  req.mutable_first()->set_url(absl::GetFlag(FLAGS_url));
  if (absl::GetFlag(FLAGS_strategy) == "page_number") {
    req.mutable_page_number();
  } else {
    req.mutable_cursor()->set_pointer("/next");
  }
  req.set_items_pointer(absl::GetFlag(FLAGS_items_pointer));
  req.set_prefetch(absl::GetFlag(FLAGS_prefetch));
  req.set_max_pages(absl::GetFlag(FLAGS_max_pages));
  const absl::Duration read_delay =
      absl::Microseconds(absl::GetFlag(FLAGS_read_delay_us));
  const int64_t every = absl::GetFlag(FLAGS_progress_every);
  double best = 0;
  int64_t pages = 0;
  double seconds = 0;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::minutes(10));
    const absl::Time start = absl::Now();
    auto reader = stub->FetchPages(&context, req);
    fetchd::v1::FetchPagesResponse page;
    pages = 0;
    while (reader->Read(&page)) {
      ++pages;
      if (every > 0 && pages % every == 0) {
        std::printf("progress pages=%lld\n", static_cast<long long>(pages));
        std::fflush(stdout);
      }
      if (read_delay > absl::ZeroDuration()) absl::SleepFor(read_delay);
    }
    grpc::Status status = reader->Finish();
    if (!status.ok()) {
      std::fprintf(stderr, "pages_load: %d %s\n", status.error_code(),
                   status.error_message().c_str());
      return 1;
    }
    seconds = absl::ToDoubleSeconds(absl::Now() - start);
    best = std::max(best, pages / seconds);
  }
  std::printf("fetchd pages=%lld %.3f s %.0f pages/s\n",
              static_cast<long long>(pages), seconds, best);
  return 0;
}
