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
// `fetchctl --help` and `fetchctl help [COMMAND]` show the flags by command
// (client/help.cc). Exit codes: 0 success, 1 the RPC failed (or health is
// not SERVING), 2 usage error. Failures print "CODE: message" on stderr.
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
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "client/help.h"

ABSL_FLAG(std::string, addr, "127.0.0.1:50051",
          "fetchd's gRPC target: host:port, or several replicas, which get "
          "RPCs round robin (dns:///NAME:PORT for every address of a name, "
          "e.g. a headless Service; ipv4:A:P,B:P); an RPC a replica fails "
          "with UNAVAILABLE is retried on another");
ABSL_FLAG(std::optional<absl::Duration>, timeout, std::nullopt,
          "deadline of each RPC (default 5s; 1h for fetch)");
ABSL_FLAG(bool, json, false, "print one JSON object per line");
ABSL_FLAG(std::optional<int64_t>, n, std::nullopt,
          "sqrt_sum: sum sqrt(i) for 0 <= i < N");
ABSL_FLAG(std::optional<int64_t>, limit, std::nullopt,
          "count_primes: count the primes below L; job list: print at most "
          "L jobs");
ABSL_FLAG(int64_t, rounds, 1, "sha256_chain: how many times to hash");
ABSL_FLAG(std::string, data, "", "sha256_chain: the bytes to hash (text)");
ABSL_FLAG(std::string, data_hex, "",
          "sha256_chain: the bytes to hash, hex-encoded (instead of --data)");
ABSL_FLAG(std::string, service, "",
          "the service to ask about, e.g. fetchd.v1.Fetch (\"\": the whole "
          "server)");
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

// The command being run, for usage errors ("" before one is known).
std::string current_command;

}  // namespace

namespace fetchd::client {

int UsageError(const std::string& message) {
  if (current_command.empty()) {
    std::fprintf(stderr, "fetchctl: %s\n", message.c_str());
  } else {
    std::fprintf(stderr, "fetchctl: %s\n\n%s\n", message.c_str(),
                 CommandUsage(current_command).c_str());
  }
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

// A flag's name ("help" for --help=x or -help), or "" for no flag.
absl::string_view FlagName(absl::string_view arg) {
  if (arg.size() < 2 || arg[0] != '-') return "";
  absl::string_view flag = absl::StripPrefix(absl::StripPrefix(arg, "-"), "-");
  return flag.substr(0, flag.find('='));
}

// --help, -h, absl's other help flags (--helpfull, --helpshort, --helpon,
// --helpmatch, --helppackage), `help [COMMAND]` and --version: what they
// print and the exit code, or nullopt to go on. The command is the first
// argument that is no flag (nor a flag's separate value).
std::optional<int> MaybeHelp(int argc, char** argv) {
  bool help = false, version = false;
  std::vector<absl::string_view> positional;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    const absl::string_view name = FlagName(arg);
    if (name.empty()) {
      positional.push_back(arg);
      continue;
    }
    if (name == "h" || absl::StartsWith(name, "help")) help = true;
    if (name == "version") version = true;
    // "--addr HOST:PORT": the next argument is the flag's value.
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag != nullptr && !flag->IsOfType<bool>() &&
        !absl::StrContains(arg, '=') && i + 1 < argc) {
      ++i;
    }
  }
  if (!positional.empty() && positional[0] == "help") {
    if (positional.size() > 2) {
      std::fprintf(stderr, "fetchctl: help takes one COMMAND at most\n");
      return 2;
    }
    if (positional.size() == 1) {
      help = true;
      positional.clear();
    } else {
      positional.erase(positional.begin());
      help = true;
    }
  }
  if (version && !help) {
    std::printf("fetchctl %s\n", FETCHD_VERSION);
    return 0;
  }
  if (!help) return std::nullopt;
  std::string text;
  if (positional.empty()) {
    text = fetchd::client::FullHelp();
  } else if (fetchd::client::IsCommand(positional[0])) {
    text = fetchd::client::CommandHelp(positional[0]);
  } else {
    std::fprintf(stderr, "fetchctl: unknown command \"%s\" (%s)\n",
                 std::string(positional[0]).c_str(),
                 fetchd::client::CommandList().c_str());
    return 2;
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // As in fetchd: gRPC's mutexes are absl's, and cycle detection (on in
  // Debian's build) costs each lock a graph lookup.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage("call fetchd (fetchctl --help)");
  // fetchctl's own help, before absl's (which lists flags by source file).
  if (const std::optional<int> code = MaybeHelp(argc, argv)) return *code;
  if (const std::string bad = CheckFlags(argc, argv); !bad.empty()) {
    std::fprintf(stderr, "fetchctl: %s\n", bad.c_str());
    return 2;
  }
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    return UsageError(
        absl::StrCat("no command given (", fetchd::client::CommandList(), ")"));
  }
  const std::string command = args[1];
  if (!fetchd::client::IsCommand(command)) {
    return UsageError(absl::StrCat("unknown command \"", command, "\" (",
                                   fetchd::client::CommandList(), ")"));
  }
  current_command = command;
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
