// html_title against hostile documents (#16): any 8 MB document is answered
// within 50 ms of CPU, and a CPU budget ends the scan. The everyday cases
// are in process_test.cc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <time.h>

#include <functional>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/process/process.h"

namespace fetchd::process {
namespace {

using Kind = Processor::Kind;
using ::testing::HasSubstr;

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FETCHD_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FETCHD_SANITIZED 1
#endif
#ifdef FETCHD_SANITIZED
constexpr int kSlowdown = 20;  // sanitizers cost several times the CPU
#else
constexpr int kSlowdown = 1;
#endif
const absl::Duration kCpuLimit = absl::Milliseconds(50 * kSlowdown);

absl::Duration ThreadCpu() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

std::string Repeat(absl::string_view piece, size_t bytes) {
  std::string out;
  out.reserve(bytes + piece.size());
  while (out.size() < bytes) out.append(piece.data(), piece.size());
  return out;
}

constexpr size_t k8MB = 8 << 20;

struct HostileCase {
  const char* name;
  std::string body;
  absl::StatusCode want;
  std::string title;  // when `want` is OK
};

std::vector<HostileCase> HostileCases() {
  std::vector<HostileCase> cases;
  auto not_found = absl::StatusCode::kNotFound;
  // The document: 2.2 MB of nested <div> (4 min 27 s before).
  cases.push_back({"nested div 2.2MB", Repeat("<div>", 2'200'000), not_found});
  cases.push_back({"nested div 8MB", Repeat("<div>", k8MB), not_found});
  cases.push_back({"div then title",
                   absl::StrCat(Repeat("<div>", kMaxTitleScanBytes - 100),
                                "<title>t</title>", Repeat("<div>", k8MB)),
                   absl::StatusCode::kOk, "t"});
  cases.push_back(
      {"formatting elements", Repeat("<b><i><a>", k8MB), not_found});
  cases.push_back({"tables", Repeat("<table><tr><td>", k8MB), not_found});
  cases.push_back({"svg", Repeat("<svg><g>", k8MB), not_found});
  cases.push_back(
      {"attributes", Repeat("<p a=1 b='x' c=\"<y>\">", k8MB), not_found});
  cases.push_back(
      {"unclosed comment", "<!--" + Repeat("<title>", k8MB), not_found});
  cases.push_back({"text", Repeat("words and more words ", k8MB), not_found});
  cases.push_back({"unclosed title", "<title>" + Repeat("<div>x", k8MB),
                   absl::StatusCode::kOk, ""});
  cases.push_back(
      {"many scripts", Repeat("<script>a<b</script>", k8MB), not_found});
  cases.push_back({"lone angles", Repeat("<", k8MB), not_found});
  cases.push_back({"tag names", Repeat("<titl<titlex<svgx ", k8MB), not_found});
  return cases;
}

TEST(HtmlTitleTest, AnyDocumentWithinFiftyMsOfCpu) {
  for (const HostileCase& c : HostileCases()) {
    const absl::Duration start = ThreadCpu();
    absl::StatusOr<std::string> got =
        Process({.kind = Kind::kHtmlTitle}, c.body);
    const absl::Duration spent = ThreadCpu() - start;
    EXPECT_LT(spent, kCpuLimit) << c.name;
    EXPECT_EQ(got.status().code(), c.want) << c.name << ": " << got.status();
    if (got.ok() && !c.title.empty()) {
      EXPECT_EQ(*got, c.title) << c.name;
    }
  }
}

TEST(HtmlTitleTest, UnclosedTitleIsCutNotScannedToTheEnd) {
  absl::StatusOr<std::string> got =
      Process({.kind = Kind::kHtmlTitle}, "<title>" + Repeat("abc ", k8MB));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_LE(got->size(), kMaxTitleBytes);
  EXPECT_GT(got->size(), kMaxTitleBytes / 2);
}

TEST(HtmlTitleTest, TitlesPastTheScanAreNotFoundAndSaySo) {
  absl::StatusOr<std::string> got =
      Process({.kind = Kind::kHtmlTitle},
              absl::StrCat(Repeat("<p>", kMaxTitleScanBytes), "<title>t"));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(),
              HasSubstr(absl::StrCat("first ", kMaxTitleScanBytes, " bytes")));
}

TEST(HtmlTitleTest, TitlesThatAreNotTheDocumentsAreSkipped) {
  const std::pair<const char*, const char*> cases[] = {
      {"<!-- <title>c</title> --><title>real</title>", "real"},
      {"<script>x='<title>s</title>'</script><title>real</title>", "real"},
      {"<style>/*<title>*/</style><title>real</title>", "real"},
      {"<svg><title>icon</title></svg><title>real</title>", "real"},
      {"<svg><svg/><title>icon</title></svg><title>real</title>", "real"},
      {"<math><title>m</title></math><title>real</title>", "real"},
      {"<template><title>t</title></template><title>real</title>", "real"},
      {"<textarea><title>t</title></textarea><title>real</title>", "real"},
      {"<p title='<title>a</title>'>x</p><title>real</title>", "real"},
      {"<p data-x=\"<title>\"><TITLE>real</TITLE>", "real"},
      {"<!doctype html><Title lang=en>A &lt; B</tItle >", "A < B"},
      {"<titlex>no</titlex><title>real</title>", "real"},
      {"<title>first</title><title>second</title>", "first"},
      {"<!--><title>real</title>", "real"},
      {"<!---><title>real</title>", "real"},
  };
  for (const auto& [doc, want] : cases) {
    absl::StatusOr<std::string> got = Process({.kind = Kind::kHtmlTitle}, doc);
    ASSERT_TRUE(got.ok()) << doc << ": " << got.status();
    EXPECT_EQ(*got, want) << doc;
  }
}

TEST(HtmlTitleTest, SpentBudgetIsResourceExhausted) {
  absl::StatusOr<std::string> got = Process(
      {.kind = Kind::kHtmlTitle}, Repeat("<div>", k8MB), absl::Nanoseconds(1));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted)
      << got.status();
  EXPECT_THAT(got.status().message(), HasSubstr("--max_process_time"));
}

}  // namespace
}  // namespace fetchd::process
