// Tests of server/jobs/webhook.cc: signatures, the secrets file, Submit's
// checks, event bodies, and the sender against a real SQLite store, a real
// fetch engine and a receiver on loopback (the engine's address policy is
// wrapped in LoopbackOnly: nothing is ever sent outside loopback).
#include "server/jobs/webhook.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "nlohmann/json.hpp"
#include "server/fetch/address_guard.h"
#include "server/fetch/fetch.h"
#include "server/jobs/store.h"
#include "tests/support/certs.h"
#include "tests/support/loopback_harness.h"
#include "tests/support/test_server.h"
#include "tests/support/webhook_receiver.h"

namespace fetchd::jobs {
namespace {

using ::fetchd::testing::kEventTimeout;
using ::fetchd::testing::TempDir;
using ::fetchd::testing::WaitFor;
using ::fetchd::testing::WebhookReceiver;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr absl::string_view kSecret = "whsec_0123456789abcdef";

// --- signatures
// ---------------------------------------------------------------

TEST(SignWebhookTest, MatchesHmacSha256OfTimestampDotBody) {
  // printf '%s' '1700000000.{"type":"job.completed"}' |
  //   openssl dgst -sha256 -hmac whsec_0123456789abcdef
  EXPECT_EQ(SignWebhook(kSecret, 1700000000, R"({"type":"job.completed"})"),
            "t=1700000000,v1=3b807311422d8c639a06393bedeccffde3be7088a4061e3e"
            "c7c537d631161768");
}

TEST(VerifyWebhookSignatureTest, AcceptsItsOwnSignature) {
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  const std::string body = R"({"a":1})";
  EXPECT_TRUE(VerifyWebhookSignature(
                  kSecret, SignWebhook(kSecret, 1700000000, body), body, now)
                  .ok());
  // Within the tolerance either way (clocks differ a little).
  EXPECT_TRUE(VerifyWebhookSignature(kSecret,
                                     SignWebhook(kSecret, 1700000000, body),
                                     body, now + absl::Seconds(299))
                  .ok());
  EXPECT_TRUE(VerifyWebhookSignature(kSecret,
                                     SignWebhook(kSecret, 1700000000, body),
                                     body, now - absl::Seconds(299))
                  .ok());
}

TEST(VerifyWebhookSignatureTest, RejectsAnotherBodyOrSecret) {
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  const std::string header = SignWebhook(kSecret, 1700000000, R"({"a":1})");
  absl::Status s = VerifyWebhookSignature(kSecret, header, R"({"a":2})", now);
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(s.message(), HasSubstr("no v1 signature that matches"));
  EXPECT_EQ(VerifyWebhookSignature("whsec_another_secret_00", header,
                                   R"({"a":1})", now)
                .code(),
            absl::StatusCode::kPermissionDenied);
  // The signature covers t: moving t breaks it.
  std::string moved = header;
  moved.replace(0, 12, "t=1700000001");
  EXPECT_EQ(VerifyWebhookSignature(kSecret, moved, R"({"a":1})", now).code(),
            absl::StatusCode::kPermissionDenied);
}

TEST(VerifyWebhookSignatureTest, RejectsATimestampOutsideTheTolerance) {
  const std::string body = "{}";
  const std::string header = SignWebhook(kSecret, 1700000000, body);
  const absl::Time signed_at = absl::FromUnixSeconds(1700000000);
  // A replay ten minutes later.
  absl::Status late = VerifyWebhookSignature(
      kSecret, header, body, signed_at + absl::Minutes(10), absl::Minutes(5));
  EXPECT_EQ(late.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(late.message(), HasSubstr("600 s from now"));
  EXPECT_THAT(late.message(), HasSubstr("tolerance is 300 s"));
  // From the future, as far.
  EXPECT_EQ(VerifyWebhookSignature(kSecret, header, body,
                                   signed_at - absl::Minutes(10))
                .code(),
            absl::StatusCode::kPermissionDenied);
  // A tighter tolerance.
  EXPECT_EQ(
      VerifyWebhookSignature(kSecret, header, body,
                             signed_at + absl::Seconds(31), absl::Seconds(30))
          .code(),
      absl::StatusCode::kPermissionDenied);
}

TEST(VerifyWebhookSignatureTest, OneOfSeveralSignaturesMayMatch) {
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  const std::string good = SignWebhook(kSecret, 1700000000, "{}");
  const std::string v1 = good.substr(good.find("v1="));
  EXPECT_TRUE(
      VerifyWebhookSignature(kSecret,
                             absl::StrCat("t=1700000000, v0=abc, v1=",
                                          std::string(64, '0'), ", ", v1),
                             "{}", now)
          .ok());
}

TEST(VerifyWebhookSignatureTest, MalformedHeadersAreInvalidArgument) {
  const absl::Time now = absl::FromUnixSeconds(1700000000);
  for (const std::string header :
       {"", "t=1700000000", "v1=abcd", "t=soon,v1=abcd",
        "t=1700000000,t=1700000000,v1=abcd", "garbage"}) {
    absl::Status s = VerifyWebhookSignature(kSecret, header, "{}", now);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << header;
    EXPECT_THAT(s.message(), HasSubstr("X-Fetchd-Signature")) << header;
  }
  EXPECT_EQ(
      VerifyWebhookSignature("", SignWebhook("", 1700000000, "{}"), "{}", now)
          .code(),
      absl::StatusCode::kInvalidArgument);
}

// --- secrets ----------------------------------------------------------------

TEST(WebhookSecretsTest, ParsesIdsAndSecretsSkippingComments) {
  absl::StatusOr<std::unique_ptr<WebhookSecrets>> secrets =
      WebhookSecrets::Parse(
          "# webhook secrets\n"
          "\n"
          "billing   whsec_billing_0123456789\n"
          "  # indented comment\n"
          "crm\twhsec_crm#with#hashes_01\r\n",
          "/etc/fetchd/webhooks");
  ASSERT_TRUE(secrets.ok()) << secrets.status();
  EXPECT_EQ((*secrets)->size(), 2u);
  EXPECT_EQ((*secrets)->Find("billing"), "whsec_billing_0123456789");
  EXPECT_EQ((*secrets)->Find("crm"), "whsec_crm#with#hashes_01");
  EXPECT_EQ((*secrets)->Find("other"), std::nullopt);
  EXPECT_EQ((*secrets)->path(), "/etc/fetchd/webhooks");
}

TEST(WebhookSecretsTest, BadLinesNameTheFileAndLineNeverTheSecret) {
  struct Case {
    std::string text;
    std::string want;
  };
  const std::vector<Case> cases = {
      {"a whsec_0123456789abcdef\nb short_secret\n",
       "--webhook_secrets_file F line 2: the secret of \"b\" is shorter than "
       "16 bytes"},
      {"a whsec_0123456789abcdef\n\nb whsec_0123456789abcdeg\n"
       "a whsec_0123456789abcdeh\n",
       "--webhook_secrets_file F line 4: the id \"a\" again (first on line "
       "1)"},
      {"only_one_field_0123456789\n",
       "line 1: expected \"ID SECRET\", found 1 fields"},
      {"a whsec_0123456789abcdef extra\n",
       "line 1: expected \"ID SECRET\", found 3 fields"},
      {"b!d whsec_0123456789abcdef\n", "line 1: the id may only have letters"},
      {absl::StrCat("a ", std::string(1025, 'x'), "\n"),
       "line 1: the secret of \"a\" is longer than 1024 bytes"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::unique_ptr<WebhookSecrets>> secrets =
        WebhookSecrets::Parse(c.text, "F");
    ASSERT_FALSE(secrets.ok()) << c.text;
    EXPECT_EQ(secrets.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(secrets.status().message(), HasSubstr(c.want));
    EXPECT_THAT(secrets.status().message(), Not(HasSubstr("whsec_")));
    EXPECT_THAT(secrets.status().message(), Not(HasSubstr("short_secret")));
  }
}

TEST(WebhookSecretsTest, LoadAndReloadKeepTheOldSecretsOnABadFile) {
  TempDir dir;
  const std::string path = dir.File("secrets");
  EXPECT_EQ(WebhookSecrets::Load(path).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(
      ::fetchd::testing::WriteFileAtomically(path, "a whsec_0123456789abcdef\n")
          .ok());
  absl::StatusOr<std::unique_ptr<WebhookSecrets>> secrets =
      WebhookSecrets::Load(path);
  ASSERT_TRUE(secrets.ok()) << secrets.status();
  EXPECT_EQ((*secrets)->Find("a"), "whsec_0123456789abcdef");

  // Rotation: a new secret for a, and b.
  ASSERT_TRUE(::fetchd::testing::WriteFileAtomically(
                  path, "a whsec_rotated_0123456789\nb whsec_b_0123456789ab\n")
                  .ok());
  ASSERT_TRUE((*secrets)->Reload().ok());
  EXPECT_EQ((*secrets)->Find("a"), "whsec_rotated_0123456789");
  EXPECT_EQ((*secrets)->Find("b"), "whsec_b_0123456789ab");

  // A bad file: an error, and the secrets in force stay.
  ASSERT_TRUE(::fetchd::testing::WriteFileAtomically(path, "a short\n").ok());
  absl::Status bad = (*secrets)->Reload();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.message(), HasSubstr("line 1"));
  EXPECT_EQ((*secrets)->Find("a"), "whsec_rotated_0123456789");
  EXPECT_EQ((*secrets)->size(), 2u);

  // A file gone: the same.
  std::remove(path.c_str());
  EXPECT_EQ((*secrets)->Reload().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*secrets)->Find("b"), "whsec_b_0123456789ab");

  // No file at all: nothing to reload, no ids.
  WebhookSecrets none;
  EXPECT_TRUE(none.Reload().ok());
  EXPECT_EQ(none.Find("a"), std::nullopt);
}

// --- ValidateWebhook
// ----------------------------------------------------------

TEST(ValidateWebhookTest, AcceptsNoWebhookAnInlineSecretOrAKnownId) {
  absl::StatusOr<std::unique_ptr<WebhookSecrets>> secrets =
      WebhookSecrets::Parse("billing whsec_billing_0123456789\n", "F");
  ASSERT_TRUE(secrets.ok());
  EXPECT_TRUE(ValidateWebhook({}, **secrets).ok());
  EXPECT_TRUE(ValidateWebhook({.url = "https://hooks.example.com/in",
                               .secret = std::string(kSecret)},
                              **secrets)
                  .ok());
  EXPECT_TRUE(ValidateWebhook({.url = "http://hooks.example.com:8080/in",
                               .secret_id = "billing",
                               .progress = true},
                              **secrets)
                  .ok());
}

TEST(ValidateWebhookTest, NamesTheFieldAndTheLimit) {
  absl::StatusOr<std::unique_ptr<WebhookSecrets>> secrets =
      WebhookSecrets::Parse("billing whsec_billing_0123456789\n", "F");
  ASSERT_TRUE(secrets.ok());
  WebhookSecrets none;
  const std::string good_url = "https://hooks.example.com/in";
  struct Case {
    WebhookConfig config;
    const WebhookSecrets* secrets;
    std::string want;
  };
  const std::vector<Case> cases = {
      {{.secret = std::string(kSecret)},
       secrets->get(),
       "webhook.url is empty"},
      {{.progress = true}, secrets->get(), "webhook.url is empty"},
      {{.url = "ftp://hooks.example.com/", .secret = std::string(kSecret)},
       secrets->get(),
       "webhook.url has scheme \"ftp\"; only http and https are allowed"},
      {{.url = "hooks.example.com/in", .secret = std::string(kSecret)},
       secrets->get(),
       "webhook.url"},
      {{.url = "http://user:pw@hooks.example.com/",
        .secret = std::string(kSecret)},
       secrets->get(),
       "webhook.url"},
      {{.url = good_url},
       secrets->get(),
       "webhook.secret (at least 16 bytes) or webhook.secret_id"},
      {{.url = good_url, .secret = "short"},
       secrets->get(),
       "webhook.secret is 5 bytes; the minimum is 16"},
      {{.url = good_url, .secret = std::string(1025, 's')},
       secrets->get(),
       "webhook.secret is 1025 bytes; the limit is 1024"},
      {{.url = good_url,
        .secret = std::string(kSecret),
        .secret_id = "billing"},
       secrets->get(),
       "webhook.secret and webhook.secret_id are both set"},
      {{.url = good_url, .secret_id = "crm"},
       secrets->get(),
       "webhook.secret_id \"crm\" is not in --webhook_secrets_file"},
      {{.url = good_url, .secret_id = "billing"},
       &none,
       "webhook.secret_id needs a --webhook_secrets_file"},
  };
  for (const Case& c : cases) {
    absl::Status s = ValidateWebhook(c.config, *c.secrets);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.want;
    EXPECT_THAT(s.message(), HasSubstr(c.want));
    EXPECT_THAT(s.message(), Not(HasSubstr(std::string(kSecret))));
  }
}

// --- events
// -------------------------------------------------------------------

Job SampleJob() {
  Job job;
  job.id = "j_abcdefghijklmnopqrstuvwxyz";
  job.identity = "alice";
  job.idempotency_key = "key-1";
  job.kind = Kind::kFetchPages;
  job.state = State::kFailed;
  job.counts = {.total = 10, .done = 7, .failed = 2, .bytes = 12345};
  job.error_code = static_cast<int>(absl::StatusCode::kUnavailable);
  job.error_message = "origin down";
  job.created_at = absl::FromUnixMillis(1700000000123);
  job.started_at = absl::FromUnixSeconds(1700000001);
  job.finished_at = absl::FromUnixSeconds(1700000060);
  job.expires_at = absl::FromUnixSeconds(1700086460);
  job.webhook = {.url = "https://hooks.example.com/in",
                 .secret = std::string(kSecret)};
  return job;
}

TEST(WebhookEventBodyTest, HasTheDocumentedFields) {
  const std::string body = WebhookEventBody(kJobFailed, SampleJob(),
                                            absl::FromUnixSeconds(1700000061));
  nlohmann::json json = nlohmann::json::parse(body);
  EXPECT_EQ(json["type"], "job.failed");
  EXPECT_EQ(json["created"], 1700000061);
  const nlohmann::json& job = json["job"];
  EXPECT_EQ(job["id"], "j_abcdefghijklmnopqrstuvwxyz");
  EXPECT_EQ(job["kind"], "fetch_pages");
  EXPECT_EQ(job["state"], "failed");
  EXPECT_EQ(job["idempotency_key"], "key-1");
  EXPECT_EQ(job["counts"],
            nlohmann::json::parse(
                R"({"total":10,"done":7,"failed":2,"bytes":12345})"));
  EXPECT_EQ(job["created_at"], "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(job["started_at"], "2023-11-14T22:13:21.000Z");
  EXPECT_EQ(job["finished_at"], "2023-11-14T22:14:20.000Z");
  EXPECT_EQ(job["expires_at"], "2023-11-15T22:14:20.000Z");
  EXPECT_EQ(job["error"], nlohmann::json::parse(
                              R"({"code":14,"status":"UNAVAILABLE",
                                  "message":"origin down"})"));
  // The identity is not the receiver's business; the secret never.
  EXPECT_THAT(body, Not(HasSubstr("alice")));
  EXPECT_THAT(body, Not(HasSubstr(std::string(kSecret))));
  // Stable: the same job gives the same bytes.
  EXPECT_EQ(body, WebhookEventBody(kJobFailed, SampleJob(),
                                   absl::FromUnixSeconds(1700000061)));
}

TEST(WebhookEventBodyTest, UnsetTimesAndNoErrorAreNull) {
  Job job = SampleJob();
  job.state = State::kRunning;
  job.error_code = 0;
  job.error_message.clear();
  job.finished_at = absl::InfinitePast();
  nlohmann::json json = nlohmann::json::parse(
      WebhookEventBody(kJobProgress, job, absl::FromUnixSeconds(1700000030)));
  EXPECT_EQ(json["type"], "job.progress");
  EXPECT_EQ(json["job"]["state"], "running");
  EXPECT_TRUE(json["job"]["finished_at"].is_null());
  EXPECT_TRUE(json["job"]["error"].is_null());
}

TEST(WebhookEventBodyTest, BytesThatAreNotUtf8AreReplacedNotThrown) {
  Job job = SampleJob();
  job.error_message = "bad \xff\xfe bytes";
  std::string body;
  ASSERT_NO_THROW(body = WebhookEventBody(kJobFailed, job, absl::Now()));
  nlohmann::json json = nlohmann::json::parse(body);
  EXPECT_THAT(json["job"]["error"]["message"].get<std::string>(),
              HasSubstr("bytes"));
}

TEST(NewWebhookDeliveryTest, OnlyWithAWebhookAndProgressOnlyIfAsked) {
  Job job = SampleJob();
  const absl::Time now = absl::FromUnixSeconds(1700000061);
  std::optional<Delivery> d = NewWebhookDelivery(job, kJobFailed, now);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->job_id, job.id);
  EXPECT_EQ(d->event, "job.failed");
  EXPECT_EQ(d->body, WebhookEventBody(kJobFailed, job, now));
  EXPECT_EQ(d->state, DeliveryState::kPending);
  EXPECT_EQ(d->attempts, 0);
  EXPECT_EQ(d->next_attempt_at, now);
  EXPECT_EQ(NewWebhookDelivery(job, kJobProgress, now), std::nullopt);
  job.webhook.progress = true;
  EXPECT_TRUE(NewWebhookDelivery(job, kJobProgress, now).has_value());
  job.webhook = {};
  EXPECT_EQ(NewWebhookDelivery(job, kJobCompleted, now), std::nullopt);
}

TEST(TerminalWebhookEventTest, CompletedOnlyForSucceeded) {
  EXPECT_EQ(TerminalWebhookEvent(State::kSucceeded), "job.completed");
  EXPECT_EQ(TerminalWebhookEvent(State::kFailed), "job.failed");
  EXPECT_EQ(TerminalWebhookEvent(State::kCancelled), "job.failed");
}

TEST(ProgressDueTest, AtMostOnePerInterval) {
  const absl::Time t0 = absl::FromUnixSeconds(1700000000);
  const absl::Duration every = absl::Seconds(10);
  EXPECT_TRUE(ProgressDue(absl::InfinitePast(), t0, every));
  EXPECT_FALSE(ProgressDue(t0, t0, every));
  EXPECT_FALSE(ProgressDue(t0, t0 + absl::Seconds(9), every));
  EXPECT_TRUE(ProgressDue(t0, t0 + absl::Seconds(10), every));
  EXPECT_TRUE(ProgressDue(t0, t0 + absl::Hours(1), every));
}

TEST(WebhookBackoffTest, DoublesWithEqualJitterUpToTheCap) {
  const absl::Duration base = absl::Seconds(5), cap = absl::Minutes(10);
  // Without jitter's randomness: half the wait at 0, all of it near 1.
  EXPECT_EQ(WebhookBackoff(1, base, cap, 0.0), absl::Milliseconds(2500));
  EXPECT_EQ(WebhookBackoff(1, base, cap, 1.0), absl::Seconds(5));
  EXPECT_EQ(WebhookBackoff(2, base, cap, 1.0), absl::Seconds(10));
  EXPECT_EQ(WebhookBackoff(4, base, cap, 1.0), absl::Seconds(40));
  EXPECT_EQ(WebhookBackoff(8, base, cap, 1.0),
            absl::Seconds(640) > cap ? cap : absl::Seconds(640));
  EXPECT_EQ(WebhookBackoff(1000, base, cap, 1.0), cap);
  EXPECT_EQ(WebhookBackoff(1000, base, cap, 0.0), cap / 2);
  for (int attempts = 1; attempts < 12; ++attempts) {
    const absl::Duration d = WebhookBackoff(attempts, base, cap, 0.37);
    EXPECT_GE(d, base / 2);
    EXPECT_LE(d, cap);
  }
}

// --- the sender, against a real SQLite store ---------------------------------

class WebhookSenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<JobStore>> store = OpenStore();
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  absl::StatusOr<std::unique_ptr<JobStore>> OpenStore() {
    return OpenJobStore(absl::StrCat("sqlite:", dir_.File("jobs.db")));
  }

  // An engine whose connections can only reach loopback: `guard` (may be
  // empty: allow) inside the test harness.
  static std::unique_ptr<fetch::Engine> StartEngine(
      fetch::AddressPolicy guard = nullptr,
      std::vector<std::string> resolve = {}) {
    fetch::Engine::Options options;
    options.address_policy = ::fetchd::testing::LoopbackOnly(std::move(guard));
    options.resolve = std::move(resolve);
    absl::StatusOr<std::unique_ptr<fetch::Engine>> engine =
        fetch::Engine::Start(std::move(options));
    EXPECT_TRUE(engine.ok()) << engine.status();
    return engine.ok() ? *std::move(engine) : nullptr;
  }

  // Fast polls and retries (milliseconds), so tests wait on outcomes, not
  // on timers.
  WebhookSenderOptions FastOptions() const {
    WebhookSenderOptions options;
    options.replica = "replica-a";
    options.poll_interval = absl::Milliseconds(20);
    options.backoff_base = absl::Milliseconds(1);
    options.backoff_cap = absl::Milliseconds(4);
    options.timeout = absl::Seconds(5);
    options.lease = absl::Seconds(30);
    return options;
  }

  // A SUCCEEDED job with `webhook`, its job.completed delivery pending in
  // `store` (as a runner's Finish leaves it).
  static std::string FinishedJob(JobStore& store, WebhookConfig webhook) {
    const absl::Time now = absl::Now();
    NewJob job;
    job.id = NewJobId();
    job.identity = "alice";
    job.kind = Kind::kBatchFetch;
    job.request = "request";
    job.request_hash = "hash";
    job.total = 1;
    job.ttl = absl::Hours(1);
    job.webhook = std::move(webhook);
    job.now = now;
    absl::StatusOr<Created> created = store.Create(job, {});
    EXPECT_TRUE(created.ok()) << created.status();
    absl::StatusOr<std::vector<Job>> claimed =
        store.Claim("runner", 1, absl::Minutes(1), now);
    EXPECT_TRUE(claimed.ok()) << claimed.status();
    if (!claimed.ok() || claimed->size() != 1) {
      ADD_FAILURE() << "the job was not claimed";
      return job.id;
    }
    Job finished = (*claimed)[0];
    finished.state = State::kSucceeded;
    finished.finished_at = now;
    std::optional<Delivery> delivery =
        NewWebhookDelivery(finished, kJobCompleted, now);
    EXPECT_TRUE(delivery.has_value());
    EXPECT_TRUE(store
                    .Finish(job.id, "runner", State::kSucceeded,
                            absl::OkStatus(), delivery, now)
                    .ok());
    return job.id;
  }

  Delivery LastDelivery(JobStore& store, const std::string& id) {
    absl::StatusOr<Job> job = store.Get("alice", id, absl::Now());
    EXPECT_TRUE(job.ok()) << job.status();
    return job.ok() ? job->last_delivery : Delivery{};
  }

  ::testing::AssertionResult WaitForState(JobStore& store,
                                          const std::string& id,
                                          DeliveryState want) {
    return WaitFor([&] { return LastDelivery(store, id).state == want; },
                   kEventTimeout,
                   absl::StrCat("delivery state ", static_cast<int>(want)));
  }

  TempDir dir_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(WebhookSenderTest, PostsASignedEventTheReceiverVerifies) {
  std::atomic<int> verified{0};
  WebhookReceiver receiver([&](const WebhookReceiver::Request& request, int) {
    auto it = request.headers.find("x-fetchd-signature");
    if (it == request.headers.end()) return 400;
    if (!VerifyWebhookSignature(kSecret, it->second, request.body, absl::Now())
             .ok()) {
      return 401;
    }
    ++verified;
    return 204;
  });
  ASSERT_TRUE(receiver.ok());
  const std::string id = FinishedJob(*store_, {.url = receiver.Url("/hooks/in"),
                                               .secret = std::string(kSecret)});
  std::unique_ptr<fetch::Engine> engine = StartEngine();
  ASSERT_NE(engine, nullptr);
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(store_.get(), engine.get(), FastOptions());
  ASSERT_TRUE(sender.ok()) << sender.status();

  ASSERT_TRUE(WaitForState(*store_, id, DeliveryState::kDelivered));
  const Delivery d = LastDelivery(*store_, id);
  EXPECT_EQ(d.attempts, 1);
  EXPECT_EQ(d.last_error, "");
  EXPECT_EQ(d.event, "job.completed");
  EXPECT_EQ(verified.load(), 1);

  std::vector<WebhookReceiver::Request> seen = receiver.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].path, "/hooks/in");
  EXPECT_EQ(seen[0].headers["content-type"], "application/json");
  EXPECT_EQ(seen[0].headers["x-fetchd-event"], "job.completed");
  EXPECT_EQ(seen[0].headers["x-fetchd-delivery"], absl::StrCat(d.id));
  nlohmann::json body = nlohmann::json::parse(seen[0].body);
  EXPECT_EQ(body["type"], "job.completed");
  EXPECT_EQ(body["job"]["id"], id);
  EXPECT_EQ(body["job"]["state"], "succeeded");
  // The body is what the store kept.
  EXPECT_EQ(seen[0].body, d.body);
  // The sender counts a delivery just after the store has it.
  EXPECT_TRUE(WaitFor([&] { return (*sender)->stats().delivered == 1; },
                      kEventTimeout, "the delivery counted"));
}

TEST_F(WebhookSenderTest, SignsWithTheSecretOfASecretId) {
  absl::StatusOr<std::unique_ptr<WebhookSecrets>> secrets =
      WebhookSecrets::Parse("billing whsec_billing_0123456789\n", "F");
  ASSERT_TRUE(secrets.ok());
  WebhookReceiver receiver([&](const WebhookReceiver::Request& request, int) {
    return VerifyWebhookSignature("whsec_billing_0123456789",
                                  request.headers.at("x-fetchd-signature"),
                                  request.body, absl::Now())
                   .ok()
               ? 200
               : 401;
  });
  ASSERT_TRUE(receiver.ok());
  const std::string id = FinishedJob(
      *store_, {.url = receiver.Url("/in"), .secret_id = "billing"});
  std::unique_ptr<fetch::Engine> engine = StartEngine();
  ASSERT_NE(engine, nullptr);
  WebhookSenderOptions options = FastOptions();
  options.secrets = secrets->get();
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(store_.get(), engine.get(), options);
  ASSERT_TRUE(sender.ok()) << sender.status();
  ASSERT_TRUE(WaitForState(*store_, id, DeliveryState::kDelivered));
  EXPECT_EQ(LastDelivery(*store_, id).attempts, 1);
  ASSERT_EQ(receiver.count(), 1);
  EXPECT_EQ(receiver.requests()[0].status, 200);
}

TEST_F(WebhookSenderTest, RetriesAfterTwoFailuresThenDelivers) {
  WebhookReceiver receiver([](const WebhookReceiver::Request&, int index) {
    return index < 2 ? 500 : 200;
  });
  ASSERT_TRUE(receiver.ok());
  const std::string id = FinishedJob(
      *store_, {.url = receiver.Url("/in"), .secret = std::string(kSecret)});
  std::unique_ptr<fetch::Engine> engine = StartEngine();
  ASSERT_NE(engine, nullptr);
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(store_.get(), engine.get(), FastOptions());
  ASSERT_TRUE(sender.ok()) << sender.status();
  ASSERT_TRUE(WaitForState(*store_, id, DeliveryState::kDelivered));
  const Delivery d = LastDelivery(*store_, id);
  EXPECT_EQ(d.attempts, 3);
  EXPECT_EQ(d.last_error, "");
  ASSERT_EQ(receiver.count(), 3);
  // One delivery id across the retries (receivers drop duplicates by it),
  // each attempt signed afresh.
  std::vector<WebhookReceiver::Request> seen = receiver.requests();
  for (const WebhookReceiver::Request& r : seen) {
    EXPECT_EQ(r.headers.at("x-fetchd-delivery"), absl::StrCat(d.id));
    EXPECT_TRUE(VerifyWebhookSignature(kSecret,
                                       r.headers.at("x-fetchd-signature"),
                                       r.body, absl::Now())
                    .ok());
  }
  EXPECT_EQ((*sender)->stats().retrying, 2);
  // The sender counts a delivery just after the store has it.
  EXPECT_TRUE(WaitFor([&] { return (*sender)->stats().delivered == 1; },
                      kEventTimeout, "the delivery counted"));
}

TEST_F(WebhookSenderTest, FailsAfterMaxAttemptsSayingWhatHappened) {
  WebhookReceiver receiver(
      [](const WebhookReceiver::Request&, int) { return 500; });
  ASSERT_TRUE(receiver.ok());
  const std::string id = FinishedJob(
      *store_, {.url = receiver.Url("/in"), .secret = std::string(kSecret)});
  std::unique_ptr<fetch::Engine> engine = StartEngine();
  ASSERT_NE(engine, nullptr);
  WebhookSenderOptions options = FastOptions();
  options.max_attempts = 4;
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(store_.get(), engine.get(), options);
  ASSERT_TRUE(sender.ok()) << sender.status();
  ASSERT_TRUE(WaitForState(*store_, id, DeliveryState::kFailed));
  const Delivery d = LastDelivery(*store_, id);
  EXPECT_EQ(d.attempts, 4);
  EXPECT_EQ(d.last_error, "HTTP 500: receiver says 500");
  EXPECT_EQ(receiver.count(), 4);
  // Failed is final: no fifth attempt comes.
  (*sender)->Wake();
  (*sender)->Shutdown();
  EXPECT_EQ(receiver.count(), 4);
  EXPECT_EQ((*sender)->stats().failed, 1);
}

TEST_F(WebhookSenderTest, RedirectsAreNotFollowed) {
  WebhookReceiver receiver(
      [](const WebhookReceiver::Request&, int) { return 307; });
  ASSERT_TRUE(receiver.ok());
  const std::string id = FinishedJob(
      *store_, {.url = receiver.Url("/in"), .secret = std::string(kSecret)});
  std::unique_ptr<fetch::Engine> engine = StartEngine();
  ASSERT_NE(engine, nullptr);
  WebhookSenderOptions options = FastOptions();
  options.max_attempts = 2;
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(store_.get(), engine.get(), options);
  ASSERT_TRUE(sender.ok()) << sender.status();
  ASSERT_TRUE(WaitForState(*store_, id, DeliveryState::kFailed));
  EXPECT_EQ(LastDelivery(*store_, id).last_error,
            "HTTP 307 (webhook redirects are not followed)");
  EXPECT_EQ(receiver.count(), 2);
}

TEST_F(WebhookSenderTest, ATimeoutIsAnAttemptThatFailed) {
  absl::Notification release;
  WebhookReceiver receiver([&](const WebhookReceiver::Request&, int) {
    release.WaitForNotificationWithTimeout(kEventTimeout);
    return 200;
  });
  ASSERT_TRUE(receiver.ok());
  const std::string id = FinishedJob(
      *store_, {.url = receiver.Url("/in"), .secret = std::string(kSecret)});
  std::unique_ptr<fetch::Engine> engine = StartEngine();
  ASSERT_NE(engine, nullptr);
  WebhookSenderOptions options = FastOptions();
  options.timeout = absl::Milliseconds(200);
  options.max_attempts = 1;
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(store_.get(), engine.get(), options);
  ASSERT_TRUE(sender.ok()) << sender.status();
  ASSERT_TRUE(WaitForState(*store_, id, DeliveryState::kFailed));
  release.Notify();
  const Delivery d = LastDelivery(*store_, id);
  EXPECT_EQ(d.attempts, 1);
  EXPECT_THAT(d.last_error, HasSubstr("DEADLINE_EXCEEDED"));
}

TEST_F(WebhookSenderTest, TheAddressGuardRefusesAndNothingIsSent) {
  WebhookReceiver receiver;
  ASSERT_TRUE(receiver.ok());
  // fetchd's default guard: loopback, private and link-local refused.
  absl::StatusOr<std::unique_ptr<fetch::AddressGuard>> guard =
      fetch::AddressGuard::Create({});
  ASSERT_TRUE(guard.ok());
  const fetch::AddressGuard* g = guard->get();
  // hooks.example.test resolves (CURLOPT_RESOLVE, no DNS) to the receiver.
  std::unique_ptr<fetch::Engine> engine = StartEngine(
      [g](const sockaddr* address, socklen_t length, absl::string_view host) {
        return g->CheckConnection(address, length, host);
      },
      {absl::StrCat("hooks.example.test:", receiver.port(), ":127.0.0.1")});
  ASSERT_NE(engine, nullptr);
  const std::string by_name = FinishedJob(
      *store_, {.url = absl::StrCat(
                    "http://hooks.example.test:", receiver.port(), "/in"),
                .secret = std::string(kSecret)});
  const std::string metadata =
      FinishedJob(*store_, {.url = "http://169.254.169.254/latest/meta-data/",
                            .secret = std::string(kSecret)});
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(store_.get(), engine.get(), FastOptions());
  ASSERT_TRUE(sender.ok()) << sender.status();
  for (const std::string& id : {by_name, metadata}) {
    ASSERT_TRUE(WaitForState(*store_, id, DeliveryState::kFailed));
    const Delivery d = LastDelivery(*store_, id);
    // Refused is final at once: a retry would be refused the same way.
    EXPECT_EQ(d.attempts, 1);
    EXPECT_THAT(d.last_error, HasSubstr("PERMISSION_DENIED"));
  }
  EXPECT_THAT(LastDelivery(*store_, by_name).last_error, HasSubstr("loopback"));
  EXPECT_THAT(LastDelivery(*store_, metadata).last_error,
              HasSubstr("link_local"));
  EXPECT_EQ(receiver.count(), 0);
}

TEST_F(WebhookSenderTest, AnUnknownSecretIdIsAFailedAttempt) {
  WebhookReceiver receiver;
  ASSERT_TRUE(receiver.ok());
  const std::string id =
      FinishedJob(*store_, {.url = receiver.Url("/in"), .secret_id = "gone"});
  std::unique_ptr<fetch::Engine> engine = StartEngine();
  ASSERT_NE(engine, nullptr);
  WebhookSenderOptions options = FastOptions();
  options.max_attempts = 2;
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(store_.get(), engine.get(), options);
  ASSERT_TRUE(sender.ok()) << sender.status();
  ASSERT_TRUE(WaitForState(*store_, id, DeliveryState::kFailed));
  const Delivery d = LastDelivery(*store_, id);
  EXPECT_EQ(d.attempts, 2);
  EXPECT_THAT(d.last_error, HasSubstr("webhook.secret_id \"gone\" is not in "
                                      "--webhook_secrets_file"));
  EXPECT_EQ(receiver.count(), 0);
}

TEST_F(WebhookSenderTest, WakeSendsWithoutWaitingForThePoll) {
  WebhookReceiver receiver;
  ASSERT_TRUE(receiver.ok());
  std::unique_ptr<fetch::Engine> engine = StartEngine();
  ASSERT_NE(engine, nullptr);
  WebhookSenderOptions options = FastOptions();
  options.poll_interval = absl::Hours(1);
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(store_.get(), engine.get(), options);
  ASSERT_TRUE(sender.ok()) << sender.status();
  // The first poll (at start) found nothing; the next is an hour away.
  ASSERT_TRUE(WaitFor([&] { return (*sender)->stats().polls == 1; },
                      kEventTimeout, "the first poll"));
  const std::string id = FinishedJob(
      *store_, {.url = receiver.Url("/in"), .secret = std::string(kSecret)});
  (*sender)->Wake();
  ASSERT_TRUE(WaitForState(*store_, id, DeliveryState::kDelivered));
  EXPECT_EQ(receiver.count(), 1);
  EXPECT_EQ((*sender)->stats().polls, 2);
}

TEST_F(WebhookSenderTest, ADeliveryInFlightAtShutdownIsSentAfterARestart) {
  absl::Notification first_arrived, release;
  WebhookReceiver receiver([&](const WebhookReceiver::Request&, int index) {
    if (index == 0) {  // held until the first sender is gone
      first_arrived.Notify();
      release.WaitForNotificationWithTimeout(kEventTimeout);
    }
    return 200;
  });
  ASSERT_TRUE(receiver.ok());
  const std::string id = FinishedJob(
      *store_, {.url = receiver.Url("/in"), .secret = std::string(kSecret)});
  {
    std::unique_ptr<fetch::Engine> engine = StartEngine();
    ASSERT_NE(engine, nullptr);
    absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
        WebhookSender::Start(store_.get(), engine.get(), FastOptions());
    ASSERT_TRUE(sender.ok()) << sender.status();
    ASSERT_TRUE(first_arrived.WaitForNotificationWithTimeout(kEventTimeout));
    (*sender)->Shutdown();  // cancels the POST in flight
    EXPECT_EQ((*sender)->stats().released, 1);
    EXPECT_EQ((*sender)->stats().delivered, 0);
  }
  release.Notify();
  // Cut off, not failed: still pending, and not counted as an attempt.
  Delivery d = LastDelivery(*store_, id);
  EXPECT_EQ(d.state, DeliveryState::kPending);
  EXPECT_EQ(d.attempts, 0);

  // A restart: the store file opened again, a new engine and sender.
  store_.reset();
  absl::StatusOr<std::unique_ptr<JobStore>> reopened = OpenStore();
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  std::unique_ptr<fetch::Engine> engine = StartEngine();
  ASSERT_NE(engine, nullptr);
  WebhookSenderOptions options = FastOptions();
  options.replica = "replica-b";
  absl::StatusOr<std::unique_ptr<WebhookSender>> sender =
      WebhookSender::Start(reopened->get(), engine.get(), options);
  ASSERT_TRUE(sender.ok()) << sender.status();
  ASSERT_TRUE(WaitForState(**reopened, id, DeliveryState::kDelivered));
  d = LastDelivery(**reopened, id);
  EXPECT_EQ(d.attempts, 1);
  EXPECT_EQ(receiver.count(), 2);
  (*sender)->Shutdown();
}

TEST(WebhookSenderStartTest, RefusesBadOptionsNamingThem) {
  // No store is needed to be refused.
  std::unique_ptr<fetch::Engine> engine;
  {
    fetch::Engine::Options options;
    options.address_policy = ::fetchd::testing::LoopbackOnly(nullptr);
    absl::StatusOr<std::unique_ptr<fetch::Engine>> e =
        fetch::Engine::Start(std::move(options));
    ASSERT_TRUE(e.ok());
    engine = *std::move(e);
  }
  EXPECT_THAT(
      WebhookSender::Start(nullptr, engine.get(), {}).status().message(),
      HasSubstr("needs a job store"));
  TempDir dir;
  absl::StatusOr<std::unique_ptr<JobStore>> store =
      OpenJobStore(absl::StrCat("sqlite:", dir.File("jobs.db")));
  ASSERT_TRUE(store.ok()) << store.status();
  WebhookSenderOptions options;
  options.timeout = absl::Minutes(2);
  options.lease = absl::Minutes(1);
  absl::Status s =
      WebhookSender::Start(store->get(), engine.get(), options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("must be longer than --webhook_timeout"));
  options = {};
  options.timeout = absl::Minutes(6);
  options.lease = absl::Minutes(7);
  s = WebhookSender::Start(store->get(), engine.get(), options).status();
  EXPECT_THAT(s.message(), HasSubstr("timeout must be"));
  EXPECT_THAT(s.message(), HasSubstr("5m"));
  options = {};
  options.max_attempts = 0;
  EXPECT_THAT(WebhookSender::Start(store->get(), engine.get(), options)
                  .status()
                  .message(),
              HasSubstr("--webhook_max_attempts must be at least 1"));
}

}  // namespace
}  // namespace fetchd::jobs
