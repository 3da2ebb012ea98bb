#include "client/help.h"

#include <algorithm>
#include <set>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace fetchd::client {
namespace {

// A flag as a section lists it. The description is the flag's own help
// text, unless `help` says it differently for this command.
struct FlagDoc {
  const char* name;
  const char* value = "";  // "N" gives --name=N; "" for a boolean
  const char* help = nullptr;
};

struct FlagGroup {
  const char* title;  // "" for the command's own flags
  std::vector<FlagDoc> flags;
};

struct CommandDoc {
  const char* name;
  const char* summary;  // one line, for the command list
  const char* usage;    // lines, each "fetchctl ..."
  const char* about;    // what it prints, exit codes (may be "")
  std::vector<FlagGroup> groups;
  const char* examples;  // lines
};

const std::vector<FlagDoc>& GlobalFlags() {
  static const auto* flags = new std::vector<FlagDoc>{
      {"addr", "HOST:PORT"},  {"timeout", "DURATION"},  {"json"},
      {"tls_ca", "CA.pem"},   {"tls_cert", "CERT.pem"}, {"tls_key", "KEY.pem"},
      {"token_file", "FILE"},
  };
  return *flags;
}

const std::vector<CommandDoc>& Commands() {
  static const auto* commands = new std::vector<CommandDoc>{
      {"compute",
       "run a compute kernel on fetchd's workers (Compute.Run)",
       "fetchctl compute sqrt_sum N | --n=N\n"
       "fetchctl compute count_primes L | --limit=L\n"
       "fetchctl compute sha256_chain DATA [ROUNDS] | "
       "--data=TEXT|--data_hex=HEX "
       "[--rounds=R]",
       "Prints the value, the time queued and the time run; --json: "
       "{\"kernel\",...,\"value\",\"queue_wait_us\",\"run_time_us\"}.",
       {{"",
         {{"n", "N"},
          {"limit", "L", "count_primes: count the primes below L"},
          {"data", "TEXT"},
          {"data_hex", "HEX"},
          {"rounds", "R"}}}},
       "fetchctl compute sqrt_sum 1000000\n"
       "fetchctl --json compute count_primes --limit=100000\n"
       "fetchctl --timeout=30s compute sha256_chain abc 1000000"},
      {"health",
       "is fetchd serving? (grpc.health.v1 Check)",
       "fetchctl health [--service=NAME]",
       "Prints SERVING, NOT_SERVING, ...; exits 0 only for SERVING (1 "
       "otherwise), so it serves as a probe. Sends no token.",
       {{"", {{"service", "NAME"}}}},
       "fetchctl health\n"
       "fetchctl --addr=fetchd:50051 health --service=fetchd.v1.Fetch"},
      {"fetch",
       "fetch many URLs in batches (Fetch.BatchFetch)",
       "fetchctl fetch URL... [flags]\n"
       "fetchctl fetch --urls_file=FILE|- [flags]",
       "Prints one line per result (status, URL, size, time, --process "
       "output), then a summary on stderr; --json: one object per result "
       "with index, url, status, code, attempts, bytes, elapsed_ms, "
       "processed, error. Exits 0 when every item succeeded, 1 otherwise.",
       {{"",
         {{"urls_file", "FILE"},
          {"batch_size", "N"},
          {"concurrency", "N"},
          {"retries", "N"},
          {"item_timeout", "DURATION"},
          {"process", "KIND"},
          {"out_dir", "DIR"},
          {"stream", "auto|always|never"}}}},
       "fetchctl fetch https://example.com/a https://example.com/b\n"
       "fetchctl --json fetch --urls_file=urls.txt --concurrency=64 > "
       "results.jsonl\n"
       "fetchctl fetch --urls_file=- --process=html_title < urls.txt\n"
       "fetchctl fetch --urls_file=urls.txt --out_dir=bodies --retries=2"},
      {"pages",
       "walk a paginated API (Fetch.FetchPages)",
       "fetchctl pages URL [flags]",
       "Prints one line per page (or, with --items, per item); --json: the "
       "fetch fields plus index, items and resume_token. On a failure, "
       "Ctrl-C (exit 130) or --max_pages, the token that resumes the walk "
       "goes to stderr.",
       {{"",
         {{"strategy", "STRATEGY"},
          {"param", "NAME"},
          {"cursor_pointer", "POINTER"},
          {"items_pointer", "POINTER"},
          {"items"},
          {"max_pages", "N"},
          {"prefetch", "K"},
          {"resume", "TOKEN"},
          {"stop_status", "CODES"},
          {"retries", "N", "retries per page after the first attempt"},
          {"item_timeout", "DURATION",
           "per-attempt timeout of each page (default: the server's)"},
          {"process", "KIND"}}}},
       "fetchctl pages 'https://api.example.com/users?per_page=100' "
       "--items_pointer=/data --items\n"
       "fetchctl --json pages https://api.example.com/feed --strategy=cursor "
       "--cursor_pointer=/next --items_pointer=/items\n"
       "fetchctl pages https://api.example.com/issues --strategy=link_header "
       "--max_pages=10\n"
       "fetchctl pages https://api.example.com/feed --strategy=cursor "
       "--resume=TOKEN"},
      {"job",
       "durable jobs: submit, watch, results (fetchd --job_store)",
       "fetchctl job submit fetch URL... | --urls_file=FILE|- [fetch's flags]\n"
       "fetchctl job submit pages URL [pages' flags]\n"
       "fetchctl job submit compute sqrt_sum N | count_primes L | "
       "sha256_chain DATA [ROUNDS]\n"
       "fetchctl job get ID | job cancel ID | job delete ID\n"
       "fetchctl job watch ID [--from_seq=N]\n"
       "fetchctl job results ID [--out_dir=DIR]\n"
       "fetchctl job list [--state=STATE] [--limit=N]",
       "submit prints the job id; get prints its state, counts, times, "
       "error and webhook delivery; watch prints events until the job ends "
       "(a progress bar on a terminal) and exits 0 if it SUCCEEDED; results "
       "prints every result in item order; list prints your jobs, newest "
       "first.",
       {{"job submit",
         {{"key", "KEY"},
          {"ttl", "DURATION"},
          {"webhook", "URL"},
          {"webhook_secret", "SECRET"},
          {"webhook_secret_id", "ID"},
          {"webhook_progress"}}},
        {"job submit fetch, job submit pages", {{"drop_body"}}},
        {"job watch", {{"from_seq", "N"}}},
        {"job results", {{"out_dir", "DIR"}}},
        {"job list",
         {{"state", "STATE"},
          {"limit", "N", "print at most N jobs (default: all)"}}}},
       "id=$(fetchctl job submit fetch --urls_file=urls.txt --key=nightly)\n"
       "fetchctl job watch \"$id\"\n"
       "fetchctl --json job results \"$id\" > results.jsonl\n"
       "fetchctl job list --state=running"},
  };
  return *commands;
}

const CommandDoc* FindCommand(absl::string_view name) {
  for (const CommandDoc& command : Commands()) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

constexpr size_t kWidth = 79;
constexpr size_t kNameColumn = 28;

// `text` wrapped at kWidth, each line indented by `indent` spaces; the first
// line starts `first` columns in (what is already on it).
void AppendWrapped(absl::string_view text, size_t indent, size_t first,
                   std::string* out) {
  size_t column = first;
  bool line_start = true;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line_start && column + 1 + word.size() > kWidth) {
      absl::StrAppend(out, "\n", std::string(indent, ' '));
      column = indent;
      line_start = true;
    }
    if (!line_start) {
      out->push_back(' ');
      ++column;
    }
    absl::StrAppend(out, word);
    column += word.size();
    line_start = false;
  }
  out->push_back('\n');
}

// "  --name=VALUE   description (default: D)".
void AppendFlag(const FlagDoc& doc, std::string* out) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(doc.name);
  std::string help = doc.help != nullptr ? doc.help
                     : flag != nullptr   ? flag->Help()
                                         : "";
  if (flag != nullptr) {
    const std::string fallback = flag->DefaultValue();
    if (!fallback.empty() && fallback != "false" && fallback != "0" &&
        !absl::StrContains(help, "default")) {
      absl::StrAppend(&help, " (default: ", fallback, ")");
    }
  }
  std::string name = absl::StrCat("  --", doc.name);
  if (*doc.value != '\0') absl::StrAppend(&name, "=", doc.value);
  out->append(name);
  if (name.size() + 2 > kNameColumn) {
    absl::StrAppend(out, "\n", std::string(kNameColumn, ' '));
  } else {
    out->append(std::string(kNameColumn - name.size(), ' '));
  }
  AppendWrapped(help, kNameColumn, kNameColumn, out);
}

void AppendLines(absl::string_view lines, absl::string_view prefix,
                 std::string* out) {
  for (absl::string_view line : absl::StrSplit(lines, '\n')) {
    absl::StrAppend(out, prefix, line, "\n");
  }
}

void AppendGlobalFlags(std::string* out) {
  out->append(
      "Global flags (before or after the command; every command takes "
      "them):\n");
  for (const FlagDoc& flag : GlobalFlags()) AppendFlag(flag, out);
  out->append(
      "  The bearer token can also come from the FETCHD_TOKEN environment "
      "variable.\n");
}

void AppendCommand(const CommandDoc& command, std::string* out) {
  absl::StrAppend(out, command.name, ": ", command.summary, "\n");
  AppendLines(command.usage, "  ", out);
  if (*command.about != '\0') {
    out->append("\n  ");
    AppendWrapped(command.about, 2, 2, out);
  }
  for (const FlagGroup& group : command.groups) {
    if (*group.title == '\0') {
      out->append("\nFlags:\n");
    } else {
      absl::StrAppend(out, "\nFlags of ", group.title, ":\n");
    }
    for (const FlagDoc& flag : group.flags) AppendFlag(flag, out);
  }
  out->append("\nExamples:\n");
  AppendLines(command.examples, "  ", out);
}

// Flags defined by fetchctl's own sources that no section lists: shown, so
// a new flag is never hidden (a test keeps this list empty).
std::vector<std::string> UnlistedFlags() {
  std::set<std::string> listed;
  for (const FlagDoc& flag : GlobalFlags()) listed.insert(flag.name);
  for (const CommandDoc& command : Commands()) {
    for (const FlagGroup& group : command.groups) {
      for (const FlagDoc& flag : group.flags) listed.insert(flag.name);
    }
  }
  std::vector<std::string> unlisted;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), "client/") &&
        !listed.contains(std::string(name))) {
      unlisted.emplace_back(name);
    }
  }
  std::sort(unlisted.begin(), unlisted.end());
  return unlisted;
}

}  // namespace

const std::vector<std::string>& CommandNames() {
  static const auto* names = [] {
    auto* names = new std::vector<std::string>;
    for (const CommandDoc& command : Commands()) names->push_back(command.name);
    return names;
  }();
  return *names;
}

bool IsCommand(absl::string_view name) { return FindCommand(name) != nullptr; }

std::string CommandList() {
  return absl::StrCat("commands: ", absl::StrJoin(CommandNames(), ", "),
                      "; fetchctl --help shows them");
}

std::string FullHelp() {
  std::string out =
      "fetchctl: call fetchd from the command line.\n\n"
      "Usage: fetchctl [global flags] COMMAND [ARGS] [flags]\n"
      "       fetchctl help [COMMAND]      (or fetchctl COMMAND --help)\n\n"
      "Commands:\n";
  for (const CommandDoc& command : Commands()) {
    std::string name = absl::StrCat("  ", command.name);
    name.resize(12, ' ');
    absl::StrAppend(&out, name, command.summary, "\n");
  }
  out.push_back('\n');
  AppendGlobalFlags(&out);
  for (const CommandDoc& command : Commands()) {
    out.push_back('\n');
    AppendCommand(command, &out);
  }
  if (const std::vector<std::string> other = UnlistedFlags(); !other.empty()) {
    out.append("\nOther flags:\n");
    for (const std::string& name : other) {
      AppendFlag({.name = name.c_str()}, &out);
    }
  }
  out.append(
      "\nExit codes: 0 success; 1 an RPC or an item failed, or health is "
      "not SERVING;\n2 usage error; 130 pages interrupted (Ctrl-C).\n");
  return out;
}

std::string CommandHelp(absl::string_view name) {
  const CommandDoc* command = FindCommand(name);
  if (command == nullptr) return "";
  std::string out;
  AppendCommand(*command, &out);
  out.push_back('\n');
  AppendGlobalFlags(&out);
  return out;
}

std::string CommandUsage(absl::string_view name) {
  const CommandDoc* command = FindCommand(name);
  if (command == nullptr) return CommandList();
  std::string out = "Usage: ";
  bool first = true;
  for (absl::string_view line : absl::StrSplit(command->usage, '\n')) {
    absl::StrAppend(&out, first ? "" : "       ", line, "\n");
    first = false;
  }
  absl::StrAppend(&out, "fetchctl help ", command->name,
                  " shows its flags and examples.");
  return out;
}

}  // namespace fetchd::client
