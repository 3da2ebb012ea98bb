// fetchctl: the command line for fetchd.
//
//   fetchctl [--addr=HOST:PORT] [--timeout=5s] [--json] compute KERNEL ARGS
//   fetchctl [--addr=HOST:PORT] [--timeout=5s] [--json] health [--service=S]
//   fetchctl [--addr=HOST:PORT] [--json] fetch URL... | --urls_file=F [...]
//   fetchctl [--addr=HOST:PORT] [--json] pages URL [--strategy=...] [...]
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
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
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
          "count_primes: count the primes below limit");
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
    "Exit codes: 0 ok, 1 an RPC or item failed or not SERVING, 2 usage "
    "error.";

}  // namespace

namespace fetchd::client {

int UsageError(const std::string& message) {
  std::fprintf(stderr, "fetchctl: %s\n\n%s\n", message.c_str(), kUsage);
  return 2;
}

}  // namespace fetchd::client

namespace {

using fetchd::client::UsageError;

int RpcError(const absl::Status& status) {
  std::fprintf(stderr, "fetchctl: %s: %s\n",
               absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  if (absl::GetFlag(FLAGS_json)) {
    std::printf("%s\n", fetchd::client::FormatErrorJson(status).c_str());
  }
  return 1;
}

// Builds the request from the kernel name and flags, or explains why not.
std::optional<fetchd::v1::ComputeRequest> BuildComputeRequest(
    const std::string& kernel, std::string* error) {
  fetchd::v1::ComputeRequest request;
  if (kernel == "sqrt_sum") {
    auto n = absl::GetFlag(FLAGS_n);
    if (!n) return *error = "compute sqrt_sum needs --n=N", std::nullopt;
    request.mutable_sqrt_sum()->set_n(*n);
  } else if (kernel == "count_primes") {
    auto limit = absl::GetFlag(FLAGS_limit);
    if (!limit) {
      return *error = "compute count_primes needs --limit=L", std::nullopt;
    }
    request.mutable_count_primes()->set_limit(*limit);
  } else if (kernel == "sha256_chain") {
    auto* k = request.mutable_sha256_chain();
    const std::string hex = absl::GetFlag(FLAGS_data_hex);
    if (!hex.empty()) {
      if (!absl::GetFlag(FLAGS_data).empty()) {
        return *error = "give --data or --data_hex, not both", std::nullopt;
      }
      std::string bytes = absl::HexStringToBytes(hex);
      if (hex.size() % 2 != 0 ||
          absl::BytesToHexString(bytes) != absl::AsciiStrToLower(hex)) {
        return *error = "--data_hex is not valid hex", std::nullopt;
      }
      k->set_data(std::move(bytes));
    } else {
      k->set_data(absl::GetFlag(FLAGS_data));
    }
    k->set_rounds(absl::GetFlag(FLAGS_rounds));
  } else {
    *error = absl::StrCat("unknown kernel \"", kernel,
                          "\" (sqrt_sum, sha256_chain, count_primes)");
    return std::nullopt;
  }
  return request;
}

int RunCompute(const fetchd::client::Client& client,
               const std::vector<char*>& args) {
  if (args.size() != 3) return UsageError("compute needs one KERNEL");
  std::string error;
  auto request = BuildComputeRequest(args[2], &error);
  if (!request) return UsageError(error);
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

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  // --help lists the flags of every fetchctl source file, not only the one
  // named like the program.
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::StrContains(path, "client/fetch");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
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
  if (command == "fetch") {
    return fetchd::client::RunFetch(
        client, std::vector<std::string>(args.begin() + 2, args.end()));
  }
  return UsageError(absl::StrCat("unknown command \"", command, "\""));
}
