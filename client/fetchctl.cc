// fetchctl: the command line for fetchd.
//
//   fetchctl [--addr=HOST:PORT] [--timeout=5s] [--json] compute KERNEL ARGS
//   fetchctl [--addr=HOST:PORT] [--timeout=5s] [--json] health [--service=S]
//   fetchctl [--addr=HOST:PORT] [--json] fetch URL... | --urls_file=F [...]
//   fetchctl [--addr=HOST:PORT] [--json] pages URL [--strategy=...] [...]
//   fetchctl [--addr=HOST:PORT] [--json] job submit|get|watch|... (jobs)
//   with [--tls_ca=F] [--tls_cert=F --tls_key=F] [--token_file=F] for TLS,
//   mTLS and a bearer token ($FETCHD_TOKEN works as well as --token_file).
//
// Exit codes: 0 success, 1 the RPC failed (or health is not SERVING),
// 2 usage error. Failures print "CODE: message" on stderr.
#include "client/fetchctl.h"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/client.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051",
          "fetchd's gRPC target: host:port, or several replicas, which get "
          "RPCs round robin (dns:///NAME:PORT for every address of a name, "
          "e.g. a headless Service; ipv4:A:P,B:P); an RPC a replica fails "
          "with UNAVAILABLE is retried on another");
ABSL_FLAG(std::optional<absl::Duration>, timeout, std::nullopt,
          "deadline of each RPC (default 5s; 1h for fetch)");
ABSL_FLAG(bool, json, false, "print one JSON object per line");
ABSL_FLAG(std::optional<int64_t>, n, std::nullopt,
          "sqrt_sum: sum sqrt(i) for i < n");
ABSL_FLAG(std::optional<int64_t>, limit, std::nullopt,
          "count_primes: count the primes below limit; job list: print at "
          "most this many jobs");
ABSL_FLAG(int64_t, rounds, 1, "sha256_chain: how many times to hash");
ABSL_FLAG(std::string, data, "", "sha256_chain: the bytes to hash (text)");
ABSL_FLAG(std::string, data_hex, "",
          "sha256_chain: the bytes to hash, hex-encoded (instead of --data)");
ABSL_FLAG(std::string, service, "", "health: the service name (\"\" = server)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM roots fetchd's certificate must chain to; turns TLS on (so do "
          "--tls_cert/--tls_key, with the system's roots)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate for mTLS (fetchd --tls_client_ca), with "
          "--tls_key");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, token_file, "",
          "file holding the bearer token sent with every RPC but health "
          "(fetchd --auth_tokens_file); default: $FETCHD_TOKEN, if set");

namespace {

constexpr char kUsage[] =
    "call fetchd.\n"
    "Usage:\n"
    "  fetchctl [--addr=127.0.0.1:50051] [--timeout=5s] [--json] COMMAND\n"
    "    [--tls_ca=CA.pem] [--tls_cert=C.pem --tls_key=K.pem] TLS / mTLS\n"
    "    [--token_file=F]  bearer token (or the FETCHD_TOKEN variable)\n"
    "Commands:\n"
    "  compute sqrt_sum --n=N            sum of sqrt(i) for 0 <= i < N\n"
    "  compute sha256_chain --data=S|--data_hex=H [--rounds=R]\n"
    "                                    sha256 applied R times\n"
    "  compute count_primes --limit=L    number of primes below L\n"
    "  health [--service=NAME]           grpc.health.v1 Check\n"
    "  fetch URL... | --urls_file=F|-    fetch through StreamBatchFetch\n"
    "  pages URL [--strategy=page_number|cursor|link_header] [--param=P]\n"
    "        [--cursor_pointer=/next] [--items_pointer=/items] [--items]\n"
    "        [--max_pages=N] [--prefetch=K] [--resume=TOKEN]\n"
    "        [--stop_status=404]        walk a paginated API (FetchPages)\n"
    "      [--concurrency=N] [--retries=N] [--item_timeout=D]\n"
    "      [--process=html_title|sha256|json_validate|json_pointer:/a/b]\n"
    "      [--out_dir=DIR] [--batch_size=N]\n"
    "  job submit fetch URL... | --urls_file=F|-  [fetch's flags, "
    "--drop_body]\n"
    "  job submit pages URL [pages' flags]\n"
    "  job submit compute sqrt_sum N | count_primes L | sha256_chain DATA [R]\n"
    "      [--key=K] [--ttl=D] [--webhook=URL [--webhook_secret=S |\n"
    "      --webhook_secret_id=ID] [--webhook_progress]]\n"
    "                                    run it as a job; prints the job id\n"
    "  job get ID                        state, counts, times, error, webhook\n"
    "  job watch ID [--from_seq=N]       events until the job ends (progress\n"
    "                                    bar on a terminal); 0 if SUCCEEDED\n"
    "  job results ID [--out_dir=DIR]    every result, in item order\n"
    "  job list [--state=queued|running|succeeded|failed|cancelled]\n"
    "           [--limit=N]              your jobs, newest first\n"
    "  job cancel ID | job delete ID\n"
    "Exit codes: 0 ok, 1 an RPC or item failed or not SERVING, 2 usage "
    "error.";

}  // namespace

namespace fetchd::client {

int UsageError(const std::string& message) {
  std::fprintf(stderr, "fetchctl: %s\n\n%s\n", message.c_str(), kUsage);
  return 2;
}

}  // namespace fetchd::client

namespace fetchd::client {

int RpcError(const absl::Status& status) {
  std::fprintf(stderr, "fetchctl: %s: %s\n",
               absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", FormatErrorJson(status).c_str());
  }
  return 1;
}

absl::StatusOr<v1::RunRequest> BuildComputeRequest(
    const std::string& kernel, const std::vector<std::string>& args) {
  // Positional arguments, when given, stand for the kernel's flags.
  auto number = [&](size_t i, const char* what) -> absl::StatusOr<int64_t> {
    int64_t value = 0;
    if (!absl::SimpleAtoi(args[i], &value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          kernel, ": ", what, " \"", args[i], "\" is not an integer"));
    }
    return value;
  };
  auto too_many = [&](size_t most) {
    return absl::InvalidArgumentError(
        absl::StrCat(kernel, " takes at most ", most, " argument",
                     most == 1 ? "" : "s", ", got ", args.size()));
  };
  v1::RunRequest request;
  if (kernel == "sqrt_sum") {
    std::optional<int64_t> n = absl::GetFlag(FLAGS_n);
    if (args.size() > 1) return too_many(1);
    if (args.size() == 1) {
      absl::StatusOr<int64_t> value = number(0, "N");
      if (!value.ok()) return value.status();
      n = *value;
    }
    if (!n) return absl::InvalidArgumentError("compute sqrt_sum needs --n=N");
    request.mutable_sqrt_sum()->set_n(*n);
  } else if (kernel == "count_primes") {
    std::optional<int64_t> limit = absl::GetFlag(FLAGS_limit);
    if (args.size() > 1) return too_many(1);
    if (args.size() == 1) {
      absl::StatusOr<int64_t> value = number(0, "LIMIT");
      if (!value.ok()) return value.status();
      limit = *value;
    }
    if (!limit) {
      return absl::InvalidArgumentError("compute count_primes needs --limit=L");
    }
    request.mutable_count_primes()->set_limit(*limit);
  } else if (kernel == "sha256_chain") {
    auto* k = request.mutable_sha256_chain();
    int64_t rounds = absl::GetFlag(FLAGS_rounds);
    if (args.size() > 2) return too_many(2);
    if (args.size() == 2) {
      absl::StatusOr<int64_t> value = number(1, "ROUNDS");
      if (!value.ok()) return value.status();
      rounds = *value;
    }
    const std::string hex = absl::GetFlag(FLAGS_data_hex);
    if (!args.empty()) {
      if (!hex.empty() || !absl::GetFlag(FLAGS_data).empty()) {
        return absl::InvalidArgumentError(
            "give DATA or --data/--data_hex, not both");
      }
      k->set_data(args[0]);
    } else if (!hex.empty()) {
      if (!absl::GetFlag(FLAGS_data).empty()) {
        return absl::InvalidArgumentError(
            "give --data or --data_hex, not both");
      }
      std::string bytes = absl::HexStringToBytes(hex);
      if (hex.size() % 2 != 0 ||
          absl::BytesToHexString(bytes) != absl::AsciiStrToLower(hex)) {
        return absl::InvalidArgumentError("--data_hex is not valid hex");
      }
      k->set_data(std::move(bytes));
    } else {
      k->set_data(absl::GetFlag(FLAGS_data));
    }
    k->set_rounds(rounds);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown kernel \"", kernel,
                     "\" (sqrt_sum, sha256_chain, count_primes)"));
  }
  return request;
}

}  // namespace fetchd::client

namespace {

using fetchd::client::RpcError;
using fetchd::client::UsageError;

int RunCompute(const fetchd::client::Client& client,
               const std::vector<char*>& args) {
  if (args.size() < 3) return UsageError("compute needs one KERNEL");
  auto request = fetchd::client::BuildComputeRequest(
      args[2], std::vector<std::string>(args.begin() + 3, args.end()));
  if (!request.ok()) return UsageError(std::string(request.status().message()));
  auto response = client.Compute(*request);
  if (!response.ok()) return RpcError(response.status());
  const std::string line =
      absl::GetFlag(FLAGS_json)
          ? fetchd::client::FormatComputeJson(*request, *response)
          : fetchd::client::FormatComputeHuman(*request, *response);
  std::printf("%s\n", line.c_str());
  return 0;
}

int RunHealth(const fetchd::client::Client& client,
              const std::vector<char*>& args) {
  if (args.size() != 2) return UsageError("health takes no arguments");
  auto status = client.Health(absl::GetFlag(FLAGS_service));
  if (!status.ok()) return RpcError(status.status());
  const std::string name =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("{\"status\":\"%s\"}\n", name.c_str());
  } else {
    std::printf("%s\n", name.c_str());
  }
  return *status == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

// absl::ParseCommandLine exits 1 on an unknown flag or a bad value; fetchctl
// says so in one line and exits 2, as for every usage error. Empty: fine.
std::string CheckFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (absl::StartsWith(argv[i], "--undefok")) return "";  // absl decides
  }
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    absl::string_view flag =
        absl::StripPrefix(absl::StripPrefix(arg, "-"), "-");
    const size_t eq = flag.find('=');
    const absl::string_view name = flag.substr(0, eq);
    absl::CommandLineFlag* found = absl::FindCommandLineFlag(name);
    if (found == nullptr && absl::StartsWith(name, "no")) {
      found = absl::FindCommandLineFlag(name.substr(2));
      if (found != nullptr && !found->IsOfType<bool>()) found = nullptr;
      if (found != nullptr && eq == absl::string_view::npos) continue;
    }
    // absl's usage flags (--help, --helpfull, --version, ...) are handled
    // by ParseCommandLine itself and not looked up by name.
    if (found == nullptr && (absl::StartsWith(name, "help") ||
                             name == "version" || name == "only_check_args")) {
      continue;
    }
    if (found == nullptr) {
      return absl::StrCat("unknown flag --", name,
                          " (fetchctl --help lists them)");
    }
    // absl checks the rest (--flag VALUE, and the flags that read files).
    if (eq == absl::string_view::npos || name == "flagfile" ||
        name == "fromenv" || name == "tryfromenv" || name == "undefok") {
      continue;
    }
    // ParseFrom sets the flag; ParseCommandLine then sets it again, alike.
    std::string error;
    if (!found->ParseFrom(flag.substr(eq + 1), &error)) {
      return absl::StrCat("--", flag, ": ", error);
    }
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  // --help lists the flags of every fetchctl source file, not only the one
  // named like the program.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::StrContains(path, "client/");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  if (const std::string bad = CheckFlags(argc, argv); !bad.empty()) {
    std::fprintf(stderr, "fetchctl: %s\n", bad.c_str());
    return 2;
  }
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) return UsageError("no command given");
  fetchd::client::ClientOptions options{
      .target = absl::GetFlag(FLAGS_addr),
      .timeout = absl::GetFlag(FLAGS_timeout).value_or(absl::Seconds(5))};
  if (absl::Status tls = fetchd::client::LoadTlsFiles(
          absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_cert),
          absl::GetFlag(FLAGS_tls_key), &options);
      !tls.ok()) {
    return UsageError(std::string(tls.message()));
  }
  if (const std::string file = absl::GetFlag(FLAGS_token_file); !file.empty()) {
    absl::StatusOr<std::string> token = fetchd::client::ReadTokenFile(file);
    if (!token.ok()) return UsageError(std::string(token.status().message()));
    options.token = *std::move(token);
  } else if (const char* env = std::getenv("FETCHD_TOKEN");
             env != nullptr && *env != '\0') {
    options.token = std::string(absl::StripAsciiWhitespace(env));
  }
  fetchd::client::Client client(options);
  const std::string command = args[1];
  if (command == "compute") return RunCompute(client, args);
  if (command == "health") return RunHealth(client, args);
  if (command == "pages") {
    return fetchd::client::RunPages(
        client, std::vector<std::string>(args.begin() + 2, args.end()));
  }
  if (command == "job") {
    return fetchd::client::RunJob(
        client, std::vector<std::string>(args.begin() + 2, args.end()));
  }
  if (command == "fetch") {
    return fetchd::client::RunFetch(
        client, std::vector<std::string>(args.begin() + 2, args.end()));
  }
  return UsageError(absl::StrCat("unknown command \"", command, "\""));
}
