// The engine's admission and scheduling (engine_scheduler.cc): what the
// per-host cap counts, and how transfer slots are shared.
#include "server/fetch/engine_scheduler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "server/fetch/fetch.h"
#include "tests/support/origin.h"

namespace fetchd::fetch {
namespace {

using ::fetchd::testing::Origin;
using internal::HostKey;

constexpr absl::Duration kWait = absl::Seconds(20);

TEST(HostKeyTest, OneKeyPerHostAndPortWhateverTheSpelling) {
  EXPECT_EQ(HostKey("http://example.com/a"), "example.com:80");
  EXPECT_EQ(HostKey("https://example.com/a"), "example.com:443");
  EXPECT_EQ(HostKey("http://EXAMPLE.Com/a"), "example.com:80");
  EXPECT_EQ(HostKey("http://example.com./a"), "example.com:80");
  EXPECT_EQ(HostKey("HTTP://example.com:80/a?b#c"), "example.com:80");
  EXPECT_EQ(HostKey("http://example.com:8080"), "example.com:8080");
  EXPECT_EQ(HostKey("https://Example.COM.:443/x"), "example.com:443");
  EXPECT_EQ(HostKey("http://10.0.0.1:81/"), "10.0.0.1:81");
  EXPECT_EQ(HostKey("http://0x0a.0.0.1/"), "10.0.0.1:80");
  EXPECT_EQ(HostKey("http://167772161/"), "10.0.0.1:80");
  EXPECT_EQ(HostKey("http://[2001:DB8:0::1]:8443/"), "2001:db8::1:8443");
  EXPECT_EQ(HostKey("https://[::1]/"), "::1:443");
  EXPECT_NE(HostKey("http://example.com:81/"), HostKey("http://example.com/"));
}

std::unique_ptr<Engine> NewEngine(Engine::Options options) {
  auto engine = Engine::Start(std::move(options));
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

FetchSpec Get(const std::string& url) {
  FetchSpec spec;
  spec.url = url;
  return spec;
}

// Letter case and a trailing dot are no way around --max_per_host.
TEST(EngineSchedulerTest, PerHostCapKeysOnTheNormalizedHost) {
  Origin origin;
  const std::string port = absl::StrCat(origin.port());
  Engine::Options options;
  options.max_per_host = 2;
  for (const char* name : {"origin.test", "ORIGIN.test", "Origin.Test",
                           "origin.test.", "ORIGIN.TEST."}) {
    options.resolve.push_back(absl::StrCat(name, ":", port, ":127.0.0.1"));
  }
  auto engine = NewEngine(options);
  std::vector<FetchSpec> specs;
  for (int i = 0; i < 4; ++i) {
    for (const char* name :
         {"origin.test", "ORIGIN.test", "Origin.Test", "origin.test."}) {
      specs.push_back(
          Get(absl::StrCat("http://", name, ":", port, "/delay/100")));
    }
  }
  std::vector<FetchResult> results(specs.size());
  absl::Notification done;
  engine->Submit(
      std::move(specs), {.max_concurrency = 16},
      [&](size_t i, FetchResult result) { results[i] = std::move(result); },
      [&] { done.Notify(); });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kWait));
  for (const FetchResult& r : results) EXPECT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(origin.requests(), 16);
  EXPECT_EQ(origin.peak_concurrency(), 2);
}

}  // namespace
}  // namespace fetchd::fetch
