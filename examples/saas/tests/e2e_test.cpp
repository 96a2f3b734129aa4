// End to end through the gateway, against the seven services as real processes and the
// PostgreSQL, Redis and NATS JetStream of scripts/services: signup, users, the bad-input table
// with exact statuses and nothing written, tenant isolation by row-level security (also proven
// by direct SQL), the billing flow signup -> subscribe -> usage -> invoice -> payment ->
// notification with the spec's amounts, concurrent duplicate payments (one charge), services
// killed with SIGKILL and restarted mid-flow (no event lost, no payment duplicated), a
// clean SIGTERM drain of every service, and the gateway cancelling the call of a client that
// went away, answering its in-flight requests when it drains, and sending "100 Continue".
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "platform.hpp"
#include "saas.grpc.pb.h"

#include <doctest/doctest.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

using saas_test::json;
using saas_test::usage;

/// The bytes of one message (`out`) of gRPC method `method` on `channel`, sent as the raw
/// protobuf bytes `request` on a generic stream (no generated stub: health and reflection are
/// gRPC's own services), or the call's error code.
struct raw_answer {
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  std::string bytes;
};
raw_answer raw_call(const std::shared_ptr<grpc::Channel> &channel, const std::string &method,
                    const std::string &request) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(&ctx, method, &cq);
  // Each step completes on the queue, in order; `ok` false ends the exchange early.
  const auto step = [&cq] {
    void *tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && ok;
  };
  grpc::Slice slice(request);
  grpc::ByteBuffer out(&slice, 1);
  grpc::ByteBuffer in;
  raw_answer a;
  call->StartCall(nullptr);
  if (step()) {
    call->Write(out, nullptr);
    if (step()) {
      call->WritesDone(nullptr);
      if (step()) {
        call->Read(&in, nullptr);
        if (step()) {
          std::vector<grpc::Slice> slices;
          (void)in.Dump(&slices);
          for (const auto &sl : slices) {
            a.bytes.append(reinterpret_cast<const char *>(sl.begin()), sl.size());
          }
        }
      }
    }
  }
  grpc::Status st;
  call->Finish(&st, nullptr);
  (void)step();
  a.code = st.error_code();
  return a;
}

/// Sets environment variables (the services' settings) for one scope.
struct env_guard {
  env_guard(std::initializer_list<std::pair<const char *, const char *>> vars) {
    for (const auto &[k, v] : vars) {
      ::setenv(k, v, 1);
      names.push_back(k);
    }
  }
  ~env_guard() {
    for (const char *k : names) {
      ::unsetenv(k);
    }
  }
  std::vector<const char *> names;
};

/// saas_test::platform with the checks of these cases.
struct platform : saas_test::platform {
  /// GETs `path` until it answers 200 and pred(body) holds, up to 20 s; the last body.
  json get_until(const std::string &path, const std::string &key,
                 const std::function<bool(const json &)> &pred) {
    json last;
    for (int i = 0; i < 400; ++i) {
      if (auto r = get(path, key); r && r->status == 200) {
        last = json::parse(r->body);
        if (pred(last)) {
          return last;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    FAIL("GET " << path << " did not reach the expected state within 20 s; last: " << last.dump());
    return last;
  }

  /// The value of an unlabelled counter in a service's GET /metrics (-1 if absent).
  long metric(const std::string &service, const std::string &name) {
    httplib::Client c("127.0.0.1", health_port(service));
    auto r = c.Get("/metrics");
    REQUIRE(r);
    const auto at = r->body.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::stol(r->body.substr(at + name.size() + 2));
  }

  /// Waits (20 s) until `sql` counts `n`.
  void wait_count(const std::string &sql, long n) {
    for (int i = 0; i < 400 && count(sql) != n; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    REQUIRE(count(sql) == n);
  }

  /// Signs a tenant up and subscribes it to `plan`; returns its API key once billing has seen
  /// the subscription.changed event.
  std::string tenant(const std::string &name, const std::string &plan = "pro") {
    auto s =
        post_definitive("/v1/signup", json{{"name", name}}.dump(), "", "signup-" + name + "-" + ns);
    REQUIRE(s);
    REQUIRE(s->status == 201);
    const auto j = json::parse(s->body);
    const auto key = j["api_key"].get<std::string>();
    auto sub =
        post("/v1/subscriptions", json{{"plan", plan}}.dump(), key, "sub-" + name + "-" + ns);
    REQUIRE(sub->status == 201);
    wait_count("SELECT count(*) FROM billing.accounts WHERE tenant_id = " +
                   std::to_string(j["tenant_id"].get<long>()) + " AND plan = '" + plan + "'",
               1);
    return key;
  }
};

} // namespace

TEST_CASE("saas.e2e.signup_users_bad_input_and_tenant_isolation" * doctest::timeout(120)) {
  platform p;
  const std::string sig1 = "3f9c2b1e-6a47-4d8e-9b0f-1c2d3e4f5a61";
  auto s = p.post_definitive("/v1/signup", R"({"name":"acme"})", "", sig1);
  REQUIRE(s);
  REQUIRE(s->status == 201);
  const auto acme = json::parse(s->body);
  const auto key = acme["api_key"].get<std::string>();
  // A replay answers the same tenant WITHOUT the key: the secret is shown once.
  auto again = p.post("/v1/signup", R"({"name":"acme"})", "", sig1);
  CHECK(again->status == 200);
  CHECK(again->get_header_value("Idempotent-Replayed") == "true");
  CHECK(json::parse(again->body)["tenant_id"] == acme["tenant_id"]);
  CHECK(json::parse(again->body)["api_key"].is_null());
  CHECK(again->body.find(key) == std::string::npos);
  CHECK(p.post("/v1/signup", R"({"name":"acme2"})", "", sig1)->status == 422);
  CHECK(p.count("SELECT count(*) FROM users.tenants") == 1);
  CHECK(p.count("SELECT count(*) FROM gateway.api_keys") == 1);
  CHECK(p.count("SELECT count(*) FROM gateway.api_keys WHERE key_sha256 = '" + key + "'") == 0);
  // Nothing stored can give the key back: the salt it came from is erased on delivery.
  CHECK(p.count("SELECT count(*) FROM gateway.signups WHERE salt IS NOT NULL") == 0);
  // A taken name: 409, and the key is free again for another request.
  const std::string sig9 = "9d8c7b6a-5f4e-4d3c-8b2a-19f8e7d6c5b4";
  CHECK(p.post("/v1/signup", R"({"name":"acme"})", "", sig9)->status == 409);
  CHECK(p.post("/v1/signup", R"({"name":"acme-two"})", "", sig9)->status == 201);

  auto u = p.post("/v1/users", R"({"email":"a@acme.io"})", key, "u-1");
  REQUIRE(u->status == 201);
  const auto user_id = json::parse(u->body)["id"].get<long>();

  struct bad_case {
    const char *what;
    std::string body;
    std::string key;
    std::string idem;
    int status;
  };
  const std::string big(1 << 20 | 1, 'x');
  for (const auto &c : std::vector<bad_case>{
           {"malformed JSON", "{bad", key, "b-1", 400},
           {"unknown field", R"({"email":"b@acme.io","admin":"yes"})", key, "b-2", 400},
           {"missing field", R"({})", key, "b-3", 400},
           {"wrong type", R"({"email":42})", key, "b-4", 400},
           {"body over 1 MiB", big, key, "b-5", 413},
           {"no API key", R"({"email":"b@acme.io"})", "", "b-6", 401},
           {"wrong API key", R"({"email":"b@acme.io"})", "lakh_wrong", "b-7", 401},
           {"no Idempotency-Key", R"({"email":"b@acme.io"})", key, "", 400},
           {"malformed Idempotency-Key", R"({"email":"b@acme.io"})", key, "two words", 400},
           {"key reused with another body", R"({"email":"c@acme.io"})", key, "u-1", 422},
       }) {
    CAPTURE(c.what);
    auto r = p.post("/v1/users", c.body, c.key, c.idem);
    REQUIRE(r);
    CHECK(r->status == c.status);
  }
  CHECK(p.count("SELECT count(*) FROM users.users") == 1); // nothing written by the bad ones

  // Another tenant cannot see acme's user: 404 through the API...
  auto g = p.post("/v1/signup", R"({"name":"globex"})", "", "b1d2c3e4-0000-4a5b-8c7d-6e5f4a3b2c1d");
  const auto globex_key = json::parse(g->body)["api_key"].get<std::string>();
  httplib::Headers h{{"Authorization", "Bearer " + globex_key}};
  auto other = p.http.Get("/v1/users/" + std::to_string(user_id), h);
  CHECK(other->status == 404);
  httplib::Headers mine{{"Authorization", "Bearer " + key}};
  CHECK(p.http.Get("/v1/users/" + std::to_string(user_id), mine)->status == 200);
  // ...and by the database itself: logged in as the user service's own role, which can
  // neither step back to a superuser (there is none to RESET ROLE to) nor become one, with
  // globex's tenant set, the row is invisible even to a query without a tenant filter.
  pqxx::connection c(p.service_url("user"));
  {
    pqxx::nontransaction n(c);
    n.exec("RESET ROLE");
    CHECK(n.exec("SELECT current_user")[0][0].as<std::string>() == "saas_user");
    CHECK(n.exec("SELECT count(*) FROM users.users")[0][0].as<long>() == 0); // no tenant: none
  }
  CHECK_THROWS(pqxx::nontransaction(c).exec("SET ROLE postgres"));
  pqxx::work w(c);
  w.exec("SELECT set_config('app.tenant_id', '" +
         std::to_string(json::parse(g->body)["tenant_id"].get<long>()) + "', true)");
  CHECK(w.exec("SELECT count(*) FROM users.users")[0][0].as<long>() == 0);
  CHECK_THROWS((void)w.exec("INSERT INTO users.users (tenant_id, email) VALUES (" +
                            std::to_string(acme["tenant_id"].get<long>()) +
                            ", 'sneaky@globex.io')"));
  w.abort();

  // A key deleted from gateway.api_keys stops working once its cache entry expires (300 ms).
  CHECK(p.http.Get("/v1/users/" + std::to_string(user_id), h)->status == 404); // cached
  (void)p.count("WITH d AS (DELETE FROM gateway.api_keys WHERE tenant_id = " +
                std::to_string(json::parse(g->body)["tenant_id"].get<long>()) +
                " RETURNING 1) SELECT count(*) FROM d");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  CHECK(p.http.Get("/v1/users/" + std::to_string(user_id), h)->status == 401);
  CHECK(p.http.Get("/v1/users/" + std::to_string(user_id), mine)->status == 200);

  // A client that lost its key gets a new one from an operator; the old one stops working.
  const auto rotate =
      "/v1/admin/tenants/" + std::to_string(acme["tenant_id"].get<long>()) + "/api-keys";
  CHECK(
      p.http
          .Post(rotate, httplib::Headers{{"Authorization", "Bearer wrong"}}, "", "application/json")
          ->status == 401);
  auto n = p.http.Post(
      rotate, httplib::Headers{{"Authorization", std::string("Bearer ") + platform::admin_token}},
      "", "application/json");
  REQUIRE(n->status == 201);
  httplib::Headers renewed{
      {"Authorization", "Bearer " + json::parse(n->body)["api_key"].get<std::string>()}};
  CHECK(p.http.Get("/v1/users/" + std::to_string(user_id), renewed)->status == 200);
  CHECK(p.http.Get("/v1/users/" + std::to_string(user_id), mine)->status == 401);
}

TEST_CASE("saas.e2e.usage_to_invoice_to_payment_to_notification" * doctest::timeout(180)) {
  platform p;
  const auto key = p.tenant("initech");

  // The spec's first 10 rows cost 589382 cents (its published figure), then 4990 more rows.
  long first_cents = 0;
  auto r = p.post("/v1/usage", usage(0, 10, first_cents).dump(), key, "usage-1");
  REQUIRE(r->status == 200);
  CHECK(first_cents == 589382);
  CHECK(json::parse(r->body)["charge_cents"] == 589382);
  CHECK(json::parse(r->body)["accepted"] == 10);
  long rest_cents = 0;
  const auto rest = usage(10, 5000, rest_cents).dump();
  r = p.post("/v1/usage", rest, key, "usage-2");
  REQUIRE(r->status == 200);
  CHECK(json::parse(r->body)["charge_cents"] == rest_cents);
  // The same rows under another Idempotency-Key: all duplicates, nothing charged twice.
  r = p.post("/v1/usage", rest, key, "usage-3");
  REQUIRE(r->status == 200);
  CHECK(json::parse(r->body)["duplicates"] == 4990);
  CHECK(json::parse(r->body)["charge_cents"] == 0);
  // A bad row anywhere in a batch: 400 naming it, and no row of the batch written.
  long ignored = 0;
  auto bad = usage(5000, 5010, ignored);
  bad["rows"][7]["metric"] = 9;
  r = p.post("/v1/usage", bad.dump(), key, "usage-bad");
  CHECK(r->status == 400);
  CHECK(json::parse(r->body)["error"].get<std::string>().find("rows[7].metric") !=
        std::string::npos);
  CHECK(p.count("SELECT count(*) FROM billing.usage") == 5000);

  // Close January: the invoice carries the spec's total; the traceparent we send comes back
  // in the notification, through gRPC metadata and the events' NATS headers.
  const std::string trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
  r = p.post("/v1/invoices", R"({"period":"2026-01"})", key, "close-1",
             "00-" + trace_id + "-00f067aa0ba902b7-01");
  REQUIRE(r->status == 201);
  const auto invoice = json::parse(r->body);
  const long total = first_cents + rest_cents;
  CHECK(invoice["total_cents"] == total);
  CHECK(invoice["rows"] == 5000);
  const auto id = std::to_string(invoice["id"].get<long>());
  // Usage for a closed period is refused (409), nothing written.
  r = p.post("/v1/usage", usage(5000, 5010, ignored).dump(), key, "usage-late");
  CHECK(r->status == 409);
  CHECK(p.count("SELECT count(*) FROM billing.usage") == 5000);
  // A 409 depends on the moment: not stored under the key, the retry is evaluated again.
  r = p.post("/v1/usage", usage(5000, 5010, ignored).dump(), key, "usage-late");
  CHECK(r->status == 409);
  CHECK(r->get_header_value("Idempotent-Replayed").empty());
  CHECK(p.count("SELECT count(*) FROM billing.idempotency_keys WHERE key = 'usage-late'") == 0);

  // invoice.issued -> payment captured -> invoice paid -> notification recorded.
  const auto payment =
      p.get_until("/v1/invoices/" + id + "/payment", key, [](const json &) { return true; });
  CHECK(payment["amount_cents"] == total);
  p.get_until("/v1/invoices/" + id, key, [](const json &j) { return j["status"] == "paid"; });
  const auto notes = p.get_until("/v1/notifications", key, [](const json &j) {
    return !j["notifications"].empty();
  })["notifications"];
  REQUIRE(notes.size() == 1);
  CHECK(notes[0]["amount_cents"] == total);
  CHECK(notes[0]["invoice_id"] == invoice["id"]);
  CHECK(notes[0]["traceparent"].get<std::string>().substr(3, 32) == trace_id);

  // Concurrent duplicate payment requests (same key, and other keys): one charge.
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  std::atomic<int> other{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      httplib::Client c("127.0.0.1", p.base);
      auto res = c.Post(
          "/v1/payments",
          httplib::Headers{{"Authorization", "Bearer " + key},
                           {"Idempotency-Key", i < 6 ? "pay-1" : "pay-" + std::to_string(i)}},
          json{{"invoice_id", invoice["id"]}}.dump(), "application/json");
      if (res && res->status == 201 && json::parse(res->body)["amount_cents"] == total) {
        ++ok;
      } else if (res && res->status == 409) {
        ++other; // the same key still in progress: "retry later"
      }
    });
  }
  for (auto &th : threads) {
    th.join();
  }
  CHECK(ok + other == 8);
  CHECK(ok >= 1);
  CHECK(p.count("SELECT count(*) FROM payments.provider_charges") == 1);
  CHECK(p.count("SELECT count(*) FROM payments.payments") == 1);
  CHECK(p.count("SELECT count(*) FROM notifications.sent") == 1);
  // The services' metrics count what was committed: one invoice paid, one notification.
  CHECK(p.metric("invoicing", "saas_invoicing_paid_total") == 1);
  CHECK(p.metric("notification", "saas_notifications_recorded_total") == 1);

  // Another tenant sees none of it (RLS): 404 for the invoice and its payment.
  const auto other_key = p.tenant("hooli", "starter");
  CHECK(p.get("/v1/invoices/" + id, other_key)->status == 404);
  CHECK(p.get("/v1/invoices/" + id + "/payment", other_key)->status == 404);
  CHECK(json::parse(p.get("/v1/notifications", other_key)->body)["notifications"].empty());
}

TEST_CASE("saas.e2e.services_killed_mid_flow_lose_nothing_and_charge_once" *
          doctest::timeout(240)) {
  platform p;
  const auto key = p.tenant("umbrella");
  // Payment and notification die (SIGKILL: no drain); invoices keep being issued; their
  // events wait in JetStream.
  p.svc["payment"]->kill9();
  p.svc["notification"]->kill9();
  long expected = 0;
  constexpr std::uint64_t months = 3;
  for (std::uint64_t m = 0; m < months; ++m) {
    long cents = 0;
    auto r = p.post("/v1/usage", usage(m * 1000, m * 1000 + 1000, cents, m).dump(), key,
                    "u" + std::to_string(m));
    REQUIRE(r->status == 200);
    r = p.post("/v1/invoices", json{{"period", "2026-0" + std::to_string(m + 1)}}.dump(), key,
               "close-" + std::to_string(m));
    REQUIRE(r->status == 201);
    CHECK(json::parse(r->body)["total_cents"] == cents);
    expected += cents;
    if (m == 0) {
      p.restart("payment"); // back while invoices are still being issued
    }
    if (m == 1) {
      p.svc["payment"]->kill9(); // and killed again mid-flow
      p.svc["invoicing"]->kill9();
      p.restart("invoicing");
      p.restart("payment");
    }
  }
  p.wait_count("SELECT count(*) FROM payments.payments", months);
  p.restart("notification");
  p.wait_count("SELECT count(*) FROM notifications.sent", months);
  p.wait_count("SELECT count(*) FROM invoicing.invoices WHERE status = 'paid'", months);
  // Exactly once: one provider charge and one payment per invoice, amounts as invoiced.
  CHECK(p.count("SELECT count(*) FROM payments.provider_charges") == months);
  CHECK(p.count("SELECT coalesce(sum(amount_cents), 0) FROM payments.payments") == expected);
  CHECK(p.count("SELECT coalesce(sum(amount_cents), 0) FROM notifications.sent") == expected);
  CHECK(p.count("SELECT count(DISTINCT invoice_id) FROM notifications.sent") == months);
  // Nothing left behind in the outboxes once the relays caught up.
  p.wait_count("SELECT (SELECT count(*) FROM invoicing.outbox) + "
               "(SELECT count(*) FROM payments.outbox) + (SELECT count(*) FROM billing.outbox)",
               0);
  // Notifications a page at a time.
  auto page = json::parse(p.get("/v1/notifications?limit=2", key)->body);
  CHECK(page["notifications"].size() == 2);
  REQUIRE(page["next_after"].is_number());
  page = json::parse(
      p.get("/v1/notifications?limit=2&after=" + std::to_string(page["next_after"].get<long>()),
            key)
          ->body);
  CHECK(page["notifications"].size() == 1);
  CHECK(page["next_after"].is_null());
  CHECK(p.get("/v1/notifications?limit=500", key)->status == 400);
  // Every service drains and exits 0 on SIGTERM.
  for (auto it = std::rbegin(platform::names); it != std::rend(platform::names); ++it) {
    CAPTURE(*it);
    CHECK(p.svc[*it]->terminate() == 0);
  }
}

TEST_CASE("saas.e2e.per_tenant_rate_and_concurrency_limits" * doctest::timeout(120)) {
  SUBCASE("rate: a burst of 2, then 429 with Retry-After; other tenants unaffected") {
    env_guard e{{"TENANT_RATE", "1"}, {"TENANT_BURST", "2"}};
    platform p;
    const auto key = p.tenant("rated");
    const auto other_key = p.tenant("unrated");
    std::this_thread::sleep_for(std::chrono::milliseconds(2100)); // the bucket refills to 2
    std::vector<int> statuses;
    for (int i = 0; i < 6; ++i) {
      statuses.push_back(p.get("/v1/subscription", key)->status);
    }
    CHECK(statuses[0] == 200);
    CHECK(statuses[1] == 200);
    CHECK(std::count(statuses.begin(), statuses.end(), 429) >= 3);
    auto r = p.get("/v1/subscription", key);
    CHECK(r->status == 429);
    CHECK(r->get_header_value("Retry-After") == "1");
    CHECK(json::parse(r->body)["error"] == "rate limit exceeded");
    std::this_thread::sleep_for(std::chrono::milliseconds(1100));
    CHECK(p.get("/v1/subscription", key)->status == 200); // refilled
    CHECK(p.get("/v1/subscription", other_key)->status == 200);
  }
  SUBCASE("concurrency: one request in flight per tenant, the others 429 at once") {
    env_guard e{{"TENANT_CONCURRENCY", "1"}};
    platform p;
    const auto key = p.tenant("busy");
    long cents = 0;
    const auto big = usage(0, 10000, cents).dump(); // a slow request: 10,000 rows
    std::atomic<int> ok{0};
    std::atomic<int> limited{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < 6; ++i) {
      threads.emplace_back([&, i] {
        httplib::Client c("127.0.0.1", p.base);
        auto res = c.Post("/v1/usage",
                          httplib::Headers{{"Authorization", "Bearer " + key},
                                           {"Idempotency-Key", "busy-" + std::to_string(i)}},
                          big, "application/json");
        if (res && res->status == 200) {
          ++ok;
        } else if (res && res->status == 429 &&
                   json::parse(res->body)["error"] == "too many requests in flight") {
          ++limited;
        }
      });
    }
    for (auto &t : threads) {
      t.join();
    }
    CHECK(ok + limited == 6);
    CHECK(ok >= 1);
    CHECK(limited >= 1);
    // Only admitted requests wrote, and the rows were charged once whatever the order.
    CHECK(p.count("SELECT count(*) FROM billing.usage") == 10000);
    CHECK(p.count("SELECT sum(cents) FROM billing.usage") == cents);
  }
}

// ---- the seams between processes (issue: promises hold across every hop) ------------------

namespace {

/// Runs `fn` (a request) while the platform's database holds `blocker` (a statement run by
/// the test in an open transaction, which makes the service's transaction wait), then lets go
/// after the request returned: the service's work commits after the gateway gave up.
template <class Fn> auto while_blocked(platform &p, const std::string &blocker, Fn &&fn) {
  pqxx::connection c(p.url);
  pqxx::work hold(c);
  hold.exec(blocker);
  auto r = fn();
  hold.abort();
  // The service's transaction goes on and commits: wait until no service session is active or
  // inside a transaction (the relays' and consumers' short polls come and go).
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (p.count("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                 "backend_type = 'client backend' AND usename LIKE 'saas\\_%' AND "
                 "state IN ('active', 'idle in transaction')") > 0 &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return r;
}

} // namespace

TEST_CASE("saas.e2e.hop.retries_after_a_deadline_answer_the_original_effect" *
          doctest::timeout(180)) {
  env_guard e{{"GRPC_DEADLINE_MS", "400"}};
  platform p;
  // Signup: CreateTenant commits after the gateway answered 504; the retry with the key gets
  // the tenant and its API key (once), never "the name is taken".
  const std::string sig = "7e57a11c-e0a4-4b4d-9c1f-2b3a4c5d6e7f";
  auto r = while_blocked(p, "INSERT INTO users.tenants (name) VALUES ('paused')",
                         [&] { return p.post("/v1/signup", R"({"name":"paused"})", "", sig); });
  CHECK(r->status == 504);
  CHECK(json::parse(r->body)["trace_id"].is_string());
  CHECK(p.count("SELECT count(*) FROM users.tenants WHERE name = 'paused'") == 1); // committed
  r = p.post("/v1/signup", R"({"name":"paused"})", "", sig);
  REQUIRE(r->status == 201);
  CHECK(r->get_header_value("Idempotent-Replayed") == "false");
  const auto key = json::parse(r->body)["api_key"].get<std::string>();
  const auto tenant = json::parse(r->body)["tenant_id"].get<long>();
  CHECK(p.post("/v1/signup", R"({"name":"paused"})", "", sig)->status == 200); // no key again
  CHECK(p.count("SELECT count(*) FROM users.tenants WHERE name = 'paused'") == 1);

  // A user created after the gateway gave up: the retry answers that user, not "exists".
  r = while_blocked(
      p,
      "INSERT INTO users.users (tenant_id, email) VALUES (" + std::to_string(tenant) +
          ", 'a@paused.io')",
      [&] { return p.post("/v1/users", R"({"email":"a@paused.io"})", key, "usr-1"); });
  CHECK(r->status == 504);
  r = p.post("/v1/users", R"({"email":"a@paused.io"})", key, "usr-1");
  CHECK(r->status == 201);
  CHECK(r->get_header_value("Idempotent-Replayed") == "true");
  CHECK(p.count("SELECT count(*) FROM users.users") == 1);

  // Usage ingested after the deadline: the retry replays the original counts, not
  // "accepted 0, all duplicates".
  REQUIRE(p.post("/v1/subscriptions", R"({"plan":"pro"})", key, "sub-1")->status == 201);
  long cents = 0;
  const auto rows = usage(0, 100, cents).dump();
  r = while_blocked(p,
                    "SELECT pg_advisory_xact_lock(hashtextextended('saas billing tenant ' || " +
                        std::to_string(tenant) + "::text, 0))",
                    [&] { return p.post("/v1/usage", rows, key, "use-1"); });
  CHECK(r->status == 504);
  r = p.post("/v1/usage", rows, key, "use-1");
  REQUIRE(r->status == 200);
  CHECK(json::parse(r->body)["accepted"] == 100);
  CHECK(json::parse(r->body)["charge_cents"] == cents);
  CHECK(r->get_header_value("Idempotent-Replayed") == "true");
  CHECK(p.count("SELECT count(*) FROM billing.usage") == 100);
}

TEST_CASE("saas.e2e.hop.a_period_closes_before_its_invoice_and_the_invoice_follows" *
          doctest::timeout(180)) {
  platform p;
  const auto key = p.tenant("closing");
  long cents = 0;
  REQUIRE(p.post("/v1/usage", usage(0, 50, cents).dump(), key, "u-1")->status == 200);
  p.svc["invoicing"]->kill9();
  // Invoicing is down: the period is closed to usage at once, its invoice is to follow.
  auto r = p.post("/v1/invoices", R"({"period":"2026-01"})", key, "close-1");
  REQUIRE(r->status == 202);
  CHECK(json::parse(r->body)["status"] == "closing");
  long more = 0;
  CHECK(p.post("/v1/usage", usage(50, 60, more).dump(), key, "u-late")->status == 409);
  CHECK(p.count("SELECT count(*) FROM billing.usage") == 50);
  p.restart("invoicing");
  // Billing's consumer of its own closing event issues the invoice; the same request then
  // answers it, with the total of the rows that were in when the period closed.
  p.wait_count("SELECT count(*) FROM billing.periods WHERE state = 'closed'", 1);
  r = p.post("/v1/invoices", R"({"period":"2026-01"})", key, "close-1");
  REQUIRE(r->status == 201);
  CHECK(json::parse(r->body)["total_cents"] == cents);
  CHECK(json::parse(r->body)["rows"] == 50);
  CHECK(p.count("SELECT count(*) FROM invoicing.invoices") == 1);
  p.wait_count("SELECT count(*) FROM payments.payments", 1);
}

TEST_CASE("saas.e2e.hop.internal_calls_and_failed_logins_are_refused" * doctest::timeout(120)) {
  env_guard e{{"AUTH_FAILURE_BURST", "3"}};
  platform p;
  const auto key = p.tenant("guarded");
  // A caller without the service token, or with a forged one, is refused by every service.
  auto stub = lakh::saas::v1::UserService::NewStub(grpc::CreateChannel(
      "127.0.0.1:" + std::to_string(p.base + 1), grpc::InsecureChannelCredentials()));
  lakh::saas::v1::GetUserRequest in;
  in.set_tenant_id(1);
  in.set_user_id(1);
  lakh::saas::v1::User out;
  grpc::ClientContext anonymous;
  CHECK(stub->GetUser(&anonymous, in, &out).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext forged;
  forged.AddMetadata("x-saas-caller", "gateway");
  forged.AddMetadata("x-saas-token", "9999999999.00");
  CHECK(stub->GetUser(&forged, in, &out).error_code() == grpc::StatusCode::UNAUTHENTICATED);
  // gRPC health and reflection answer without the token, for probes and grpcurl: Check of
  // the server as a whole ("" in the empty request) is SERVING (field 1 = 1), and the
  // reflection's list of services (field 7, list_services) names the user service.
  for (int i = 0; i < 6; ++i) {
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(p.base + 1 + i),
                                       grpc::InsecureChannelCredentials());
    CAPTURE(i);
    const auto health = raw_call(channel, "/grpc.health.v1.Health/Check", "");
    CHECK(health.code == grpc::StatusCode::OK);
    CHECK(health.bytes == std::string("\x08\x01", 2));
    const auto listed =
        raw_call(channel, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                 std::string("\x3a\x00", 2));
    CHECK(listed.code == grpc::StatusCode::OK);
    CHECK(listed.bytes.find("grpc.health.v1.Health") != std::string::npos);
    if (i == 0) {
      CHECK(listed.bytes.find("lakh.saas.v1.UserService") != std::string::npos);
    }
  }
  // An answer for a failure carries no internal error text, only the trace to look it up.
  p.svc["user"]->kill9();
  auto r = p.get("/v1/users/1", key);
  CHECK(r->status == 503);
  CHECK(r->get_header_value("Retry-After") == "1");
  CHECK(r->body.find("127.0.0.1") == std::string::npos);
  CHECK(json::parse(r->body)["trace_id"].is_string());
  p.restart("user");
  // Failed logins from one address: 401 three times, then 429 until the budget refills.
  for (int i = 0; i < 3; ++i) {
    CHECK(p.get("/v1/subscription", "lakh_wrong" + std::to_string(i))->status == 401);
  }
  CHECK(p.get("/v1/subscription", "lakh_wrong3")->status == 429);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  CHECK(p.get("/v1/subscription", key)->status == 200);
}

TEST_CASE("saas.e2e.bounded.expired_records_are_purged" * doctest::timeout(120)) {
  env_guard e{{"PURGE_INTERVAL_MS", "1000"}};
  platform p;
  const auto key = p.tenant("purged"); // a signup, a subscription and its event in billing
  REQUIRE(p.post("/v1/users", R"({"email":"a@purged.io"})", key, "usr-purged-1")->status == 201);
  CHECK(p.count("SELECT count(*) FROM users.idempotency_keys") == 2);
  CHECK(p.count("SELECT count(*) FROM billing.inbox") == 1);
  CHECK(p.count("SELECT count(*) FROM gateway.signups") == 1);
  // What is within its retention stays; what is past it goes, in every table.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500)); // two purges at least
  CHECK(p.count("SELECT count(*) FROM users.idempotency_keys") == 2);
  const auto aged = [&](const std::string &update) {
    return p.count("WITH a AS (" + update + " RETURNING 1) SELECT count(*) FROM a");
  };
  CHECK(aged("UPDATE users.idempotency_keys SET expires_at = now() - interval '1 second' "
             "WHERE key = 'usr-purged-1'") == 1);
  CHECK(aged("UPDATE billing.inbox SET received_at = now() - interval '200 hours'") == 1);
  CHECK(aged("UPDATE gateway.signups SET created_at = now() - interval '25 hours'") == 1);
  p.wait_count("SELECT count(*) FROM users.idempotency_keys", 1);
  p.wait_count("SELECT count(*) FROM billing.inbox", 0);
  p.wait_count("SELECT count(*) FROM gateway.signups", 0);
  // The outboxes need no purge: the relays delete what they published.
  p.wait_count("SELECT count(*) FROM subscriptions.outbox", 0);
  // The purges are periodic jobs of each service's queue, one per slot, each run once.
  for (const auto *schema : {"users", "billing", "gateway"}) {
    CHECK(p.count("SELECT count(*) FROM " + std::string(schema) +
                  ".jobs WHERE queue = 'housekeeping' AND state = 'done'") >= 1);
    CHECK(p.count("SELECT count(*) FROM (SELECT unique_key FROM " + std::string(schema) +
                  ".jobs GROUP BY unique_key HAVING count(*) > 1) d") == 0);
  }
}

namespace {

/// A socket connected to the gateway that has sent `request` (raw HTTP/1.1).
int send_raw(const platform &p, const std::string &request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(p.base));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<const sockaddr *>(&a), sizeof a) == 0);
  REQUIRE(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size()));
  return fd;
}

} // namespace

TEST_CASE("saas.e2e.gateway.continue_cancel_on_client_gone_and_drain" * doctest::timeout(120)) {
  platform p;
  const auto key = p.tenant("leaver");
  auto u = p.post("/v1/users", R"({"email":"a@leaver.io"})", key, "leaver-u1");
  REQUIRE(u->status == 201);
  const auto path = "/v1/users/" + std::to_string(json::parse(u->body)["id"].get<long>());
  REQUIRE(p.get(path, key)->status == 200); // the key is cached
  const auto get =
      "GET " + path + " HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + key + "\r\n\r\n";
  {
    // A client that waits for "100 Continue" before its body (curl, over 1 KiB) gets it.
    const std::string body = R"({"email":"b@leaver.io"})";
    const int fd = send_raw(
        p, "POST /v1/users HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + key +
               "\r\nIdempotency-Key: leaver-u2\r\nExpect: " + "100-continue\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n");
    char buf[4096];
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    CHECK(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0) ==
          "HTTP/1.1 100 Continue\r\n\r\n");
    REQUIRE(::send(fd, body.data(), body.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(body.size()));
    std::string answer;
    for (ssize_t m = 0; (m = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      answer.append(buf, static_cast<std::size_t>(m));
    }
    ::close(fd);
    CHECK(answer.rfind("HTTP/1.1 201 Created\r\n", 0) == 0);
  }
  {
    // GetUser waits for the table; the client gives up: the gateway cancels the call.
    pqxx::connection c(p.url);
    pqxx::work hold(c);
    hold.exec("LOCK TABLE users.users IN ACCESS EXCLUSIVE MODE");
    const int fd = send_raw(p, get);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::close(fd);
    long cancelled = 0;
    for (int i = 0; i < 100 && cancelled != 1; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      cancelled = p.metric("gateway", "saas_gateway_cancelled_total");
    }
    CHECK(cancelled == 1);
  }
  CHECK(p.get(path, key)->status == 200);
  {
    // SIGTERM with a request in flight: it is answered, then the gateway exits 0.
    pqxx::connection c(p.url);
    pqxx::work hold(c);
    hold.exec("LOCK TABLE users.users IN ACCESS EXCLUSIVE MODE");
    const int fd = send_raw(p, get);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    REQUIRE(p.svc["gateway"]->signal(SIGTERM));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    hold.abort();
    std::string answer;
    char buf[4096];
    for (ssize_t n = 0; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      answer.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    CHECK(answer.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
    CHECK(answer.find("Connection: close\r\n") != std::string::npos);
    CHECK(p.svc["gateway"]->terminate() == 0);
  }
}
