// saas_faults: the SaaS platform under faults, checked by its invariants (issue 16's harness).
//
// It starts the whole platform (tests/platform.hpp: every service a process, a fresh
// database, its own event namespace) and runs, for --duration seconds, --clients concurrent
// clients that each sign tenants up and drive them through users, a subscription, usage and
// the close of two periods, retrying every request with the SAME Idempotency-Key until an
// answer is definitive. Meanwhile a nemesis, seeded by --seed, injects one fault at a time:
//   pause      SIGSTOP a service (or the gateway) for longer than the gRPC deadline, then
//              SIGCONT: calls it was serving commit after their callers gave up;
//   kill       SIGKILL a service (or the gateway), then start it again;
//   postgres   restart PostgreSQL (scripts/services restart pg);
//   nats       restart NATS JetStream (scripts/services restart nats).
// Then it heals everything, waits for the events to drain, and checks:
//   - every key got a definitive answer (none stuck), and it was the answer of the FIRST
//     effect: the signup's tenant, the user's 201, the usage batch's counts and cents, the
//     invoice with the period's total (never "exists", "accepted 0" or another total);
//   - one effect per key in the databases: one tenant per signup, one user per create, every
//     usage row stored once, one invoice per (tenant, period) with the spec's total to the
//     cent, one provider charge and one payment per invoice, one notification per payment;
//   - every period closed with its invoice, every outbox empty;
//   - no 5xx answer carried internal text.
// It prints what it did and every violation (with the tenant and key) as markdown, and exits
// 1 if there was any violation, 2 on a usage error.
//
// Run under scripts/services (it needs DATABASE_URL, NATS_URL, REDIS_URL and PGPORT):
//   scripts/services run build/release/examples/saas/saas_faults --duration 60
#include "../tests/platform.hpp"

#include <servers.hpp>

#include <lakh/version.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using saas_test::json;
using clock_type = std::chrono::steady_clock;

struct options {
  int duration_s = 60;
  int clients = 4;
  unsigned seed = 1;
};

/// What the run did and found; shared by the clients (under `m`).
struct ledger {
  std::mutex m;
  std::map<std::string, long> ops;    // operation -> definitive answers
  std::map<std::string, long> faults; // fault kind -> injected
  long retries = 0;
  std::vector<std::string> violations;
  // What the clients saw committed, to compare with the databases.
  struct tenant_seen {
    long id = 0;
    std::string name;
    long users = 0;
    long rows = 0;
    std::map<std::string, long> period_cents; // period -> expected total
    std::map<std::string, long> invoice_ids;  // period -> invoice id answered
  };
  std::vector<tenant_seen> tenants;

  void op(const std::string &name) {
    std::lock_guard l(m);
    ++ops[name];
  }
  void violation(const std::string &what) {
    std::lock_guard l(m);
    violations.push_back(what);
  }
};

std::string random_key(std::mt19937_64 &rng) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string k;
  for (int i = 0; i < 32; ++i) {
    k += hex[rng() % 16];
  }
  return k;
}

/// One client: its own HTTP connection to the gateway; every request retried with its key
/// until the answer is definitive (not 5xx, 409 or 429, and the connection held).
class client {
public:
  client(int port, ledger &l, unsigned seed, std::atomic<bool> &stop)
      : http_("127.0.0.1", port), ledger_(l), rng_(seed), stop_(stop) {
    http_.set_connection_timeout(std::chrono::seconds(1));
    http_.set_read_timeout(std::chrono::seconds(10));
  }

  struct answer {
    int status = 0;
    json body;
    bool replayed = false;
  };

  /// POSTs until definitive, up to 60 s (then: a violation, "stuck"). 202 counts as
  /// definitive only when `accept_202`.
  std::optional<answer> post(const std::string &what, const std::string &path, const json &body,
                             const std::string &key, const std::string &idem,
                             const std::string &bearer = "") {
    const auto give_up = clock_type::now() + std::chrono::seconds(60);
    for (int attempt = 0;; ++attempt) {
      if (attempt > 0) {
        std::lock_guard l(ledger_.m);
        ++ledger_.retries;
      }
      httplib::Headers h{{"Idempotency-Key", idem}};
      const auto auth = !bearer.empty() ? bearer : key;
      if (!auth.empty()) {
        h.emplace("Authorization", "Bearer " + auth);
      }
      auto r = http_.Post(path, h, body.dump(), "application/json");
      if (r) {
        if (r->status >= 500) {
          check_no_internal_text(what, *r);
        }
        const bool again = r->status >= 500 || r->status == 409 || r->status == 429 ||
                           (r->status == 202 && path == "/v1/invoices");
        if (!again) {
          answer a{r->status, json::parse(r->body, nullptr, false),
                   r->get_header_value("Idempotent-Replayed") == "true"};
          ledger_.op(what);
          return a;
        }
      }
      if (clock_type::now() > give_up) {
        ledger_.violation("key stuck: " + what + " " + path + " Idempotency-Key " + idem +
                          " has no definitive answer after 60 s (last: " +
                          (r ? std::to_string(r->status) + " " + r->body : "no connection") + ")");
        return std::nullopt;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng_() % 200));
    }
  }

  /// Signs one tenant up and drives it through two periods; records what it saw.
  void one_tenant(const std::string &name) {
    ledger::tenant_seen t;
    t.name = name;
    const auto s = post("signup", "/v1/signup", {{"name", name}}, "", random_key(rng_));
    if (!s) {
      return;
    }
    if (s->status != 201 && !(s->status == 200 && s->replayed)) {
      return ledger_.violation("signup of " + name + " answered " + std::to_string(s->status) +
                               " " + s->body.dump());
    }
    t.id = s->body.value("tenant_id", 0L);
    std::string key;
    if (s->status == 201) {
      key = s->body.value("api_key", "");
    } else { // delivered in an answer we never saw: an operator rotates the key
      ledger_.op("signup key recovered by rotation");
      auto rot = post("rotation", "/v1/admin/tenants/" + std::to_string(t.id) + "/api-keys",
                      json::object(), "", random_key(rng_), saas_test::platform::admin_token);
      if (!rot || rot->status != 201) {
        return ledger_.violation("rotation for tenant " + std::to_string(t.id) + " failed");
      }
      key = rot->body.value("api_key", "");
    }
    if (key.empty()) {
      return ledger_.violation("signup of " + name + " answered no key: " + s->body.dump());
    }
    const auto expect = [&](const std::optional<answer> &a, int status, const std::string &what) {
      if (a && a->status != status) {
        ledger_.violation(what + " of tenant " + std::to_string(t.id) + " answered " +
                          std::to_string(a->status) + " " + a->body.dump());
      }
      return a && a->status == status;
    };
    if (!expect(post("subscribe", "/v1/subscriptions", {{"plan", "pro"}}, key, random_key(rng_)),
                201, "subscribe")) {
      return record(std::move(t));
    }
    for (int u = 0; u < 2; ++u) {
      const auto email = "u" + std::to_string(u) + "@" + name + ".io";
      if (expect(post("create user", "/v1/users", {{"email", email}}, key, random_key(rng_)), 201,
                 "create user " + email)) {
        ++t.users;
      }
    }
    for (std::uint64_t month = 0; month < 2 && !stop_; ++month) {
      const std::string period = "2026-0" + std::to_string(month + 1);
      long total = 0;
      for (std::uint64_t b = 0; b < 3; ++b) {
        const auto first = month * 60 + b * 20;
        long cents = 0;
        const auto rows = saas_test::usage(first, first + 20, cents, month);
        const auto a = post("usage batch", "/v1/usage", rows, key, random_key(rng_));
        if (!expect(a, 200, "usage batch")) {
          return record(std::move(t));
        }
        if (a->body.value("accepted", -1L) != 20 || a->body.value("charge_cents", -1L) != cents) {
          ledger_.violation("usage batch of tenant " + std::to_string(t.id) + " answered " +
                            a->body.dump() + " (expected accepted 20, charge_cents " +
                            std::to_string(cents) + ")");
        }
        t.rows += 20;
        total += cents;
      }
      t.period_cents[period] = total;
      const auto inv =
          post("close period", "/v1/invoices", {{"period", period}}, key, random_key(rng_));
      if (!expect(inv, 201, "close " + period)) {
        return record(std::move(t));
      }
      if (inv->body.value("total_cents", -1L) != total || inv->body.value("rows", -1L) != 60) {
        ledger_.violation("invoice of tenant " + std::to_string(t.id) + " for " + period +
                          " answered " + inv->body.dump() + " (expected total_cents " +
                          std::to_string(total) + ", rows 60)");
      }
      t.invoice_ids[period] = inv->body.value("id", 0L);
    }
    record(std::move(t));
  }

private:
  void record(ledger::tenant_seen t) {
    std::lock_guard l(ledger_.m);
    ledger_.tenants.push_back(std::move(t));
  }

  void check_no_internal_text(const std::string &what, const httplib::Response &r) {
    for (const char *leak : {"127.0.0.1", "pqxx", "postgres", "SQL", "ERROR:", "grpc"}) {
      if (r.body.find(leak) != std::string::npos) {
        ledger_.violation(what + ": a " + std::to_string(r.status) + " answer carries \"" + leak +
                          "\": " + r.body);
      }
    }
  }

  httplib::Client http_;
  ledger &ledger_;
  std::mt19937_64 rng_;
  std::atomic<bool> &stop_;
};

/// The nemesis: one fault at a time until `until`, on the calling thread (a service it
/// restarts is its child, and dies with the thread that started it).
void nemesis(saas_test::platform &p, ledger &l, std::mt19937_64 &rng, clock_type::time_point until,
             std::chrono::milliseconds deadline) {
  static const std::vector<std::string> targets = {
      "user", "subscription", "billing", "invoicing", "payment", "notification", "gateway"};
  const auto count = [&](const std::string &kind) {
    std::lock_guard g(l.m);
    ++l.faults[kind];
  };
  while (clock_type::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500 + rng() % 1500));
    const auto roll = rng() % 100;
    const auto &svc = targets[rng() % targets.size()];
    if (roll < 45) {
      p.signal(svc, SIGSTOP);
      std::this_thread::sleep_for(deadline + std::chrono::milliseconds(200 + rng() % 1300));
      p.signal(svc, SIGCONT);
      count("pause " + svc + " past the deadline");
    } else if (roll < 75) {
      p.restart(svc); // SIGKILL, start, wait until it answers
      count("kill -9 " + svc + " and restart");
    } else if (roll < 88) {
      lakh_examples::services("restart", "pg");
      count("restart PostgreSQL");
    } else {
      lakh_examples::services("restart", "nats");
      count("restart NATS");
    }
  }
}

/// Waits (up to `limit`) until the platform has drained: no period closing, a payment per
/// invoice, a notification per payment, outboxes empty. Returns whether it did.
bool drained(saas_test::platform &p, std::chrono::seconds limit) {
  const auto until = clock_type::now() + limit;
  const std::string sql =
      "SELECT (SELECT count(*) FROM billing.periods WHERE state <> 'closed') + "
      "abs((SELECT count(*) FROM invoicing.invoices) - (SELECT count(*) FROM payments.payments)) + "
      "abs((SELECT count(*) FROM payments.payments) - (SELECT count(*) FROM notifications.sent)) + "
      "(SELECT count(*) FROM subscriptions.outbox) + (SELECT count(*) FROM billing.outbox) + "
      "(SELECT count(*) FROM invoicing.outbox) + (SELECT count(*) FROM payments.outbox)";
  while (clock_type::now() < until) {
    try {
      if (p.count(sql) == 0) {
        return true;
      }
    } catch (const std::exception &) { // PostgreSQL still coming back
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return false;
}

/// Compares the databases with what the clients saw; appends violations.
void check(saas_test::platform &p, ledger &l) {
  pqxx::connection c(p.url);
  const auto expect = [&](const std::string &what, const std::string &sql, long want) {
    const long got = pqxx::nontransaction(c).exec(sql)[0][0].as<long>();
    if (got != want) {
      l.violations.push_back(what + ": " + std::to_string(got) + ", expected " +
                             std::to_string(want) + " (" + sql + ")");
    }
  };
  long users = 0, rows = 0, invoices = 0;
  for (const auto &t : l.tenants) {
    users += t.users;
    rows += t.rows;
    invoices += static_cast<long>(t.invoice_ids.size());
    const auto id = std::to_string(t.id);
    expect("tenants named " + t.name,
           "SELECT count(*) FROM users.tenants WHERE name = '" + t.name + "' AND id = " + id, 1);
    expect("users of tenant " + id, "SELECT count(*) FROM users.users WHERE tenant_id = " + id,
           t.users);
    expect("usage rows of tenant " + id,
           "SELECT count(*) FROM billing.usage WHERE tenant_id = " + id, t.rows);
    for (const auto &[period, cents] : t.period_cents) {
      if (!t.invoice_ids.contains(period)) {
        continue;
      }
      const auto where = " WHERE tenant_id = " + id + " AND period = '" + period + "'";
      expect("invoices of tenant " + id + " for " + period,
             "SELECT count(*) FROM invoicing.invoices" + where +
                 " AND id = " + std::to_string(t.invoice_ids.at(period)) +
                 " AND total_cents = " + std::to_string(cents),
             1);
      expect("billed cents of tenant " + id + " for " + period,
             "SELECT coalesce(sum(cents), 0) FROM billing.usage" + where, cents);
      expect(
          "closed period of tenant " + id + " for " + period,
          "SELECT count(*) FROM billing.periods" + where +
              " AND state = 'closed' AND invoice_id = " + std::to_string(t.invoice_ids.at(period)),
          1);
    }
  }
  expect("tenants", "SELECT count(*) FROM users.tenants", static_cast<long>(l.tenants.size()));
  expect("users", "SELECT count(*) FROM users.users", users);
  expect("usage rows", "SELECT count(*) FROM billing.usage", rows);
  expect("invoices", "SELECT count(*) FROM invoicing.invoices", invoices);
  expect("invoices without exactly one payment of their total",
         "SELECT count(*) FROM invoicing.invoices i WHERE (SELECT count(*) FROM "
         "payments.payments p WHERE p.tenant_id = i.tenant_id AND p.invoice_id = i.id AND "
         "p.amount_cents = i.total_cents) <> 1",
         0);
  expect("invoices without exactly one provider charge of their total",
         "SELECT count(*) FROM invoicing.invoices i WHERE (SELECT count(*) FROM "
         "payments.provider_charges c WHERE c.tenant_id = i.tenant_id AND c.idempotency_key = "
         "'invoice-' || i.id AND c.amount_cents = i.total_cents) <> 1",
         0);
  expect("provider charges", "SELECT count(*) FROM payments.provider_charges", invoices);
  expect("payments without exactly one notification",
         "SELECT count(*) FROM payments.payments p WHERE (SELECT count(*) FROM "
         "notifications.sent n WHERE n.tenant_id = p.tenant_id AND n.invoice_id = "
         "p.invoice_id) <> 1",
         0);
  expect("invoices not paid", "SELECT count(*) FROM invoicing.invoices WHERE status <> 'paid'", 0);
  expect("periods not closed", "SELECT count(*) FROM billing.periods WHERE state <> 'closed'", 0);
  for (const char *box :
       {"subscriptions.outbox", "billing.outbox", "invoicing.outbox", "payments.outbox"}) {
    expect(std::string("events left in ") + box, std::string("SELECT count(*) FROM ") + box, 0);
  }
}

int run(const options &o) {
  const auto deadline = std::chrono::milliseconds(800);
  ::setenv("GRPC_DEADLINE_MS", std::to_string(deadline.count()).c_str(), 0);
  saas_test::platform p;
  p.keep_database = true; // kept for a post-mortem when something failed (dropped otherwise)
  ledger l;
  std::mt19937_64 rng(o.seed);
  std::atomic<bool> stop{false};
  std::atomic<int> next_tenant{0};
  const auto until = clock_type::now() + std::chrono::seconds(o.duration_s);
  std::vector<std::jthread> clients;
  for (int i = 0; i < o.clients; ++i) {
    clients.emplace_back([&, i] {
      client c(p.base, l, o.seed * 1000 + static_cast<unsigned>(i), stop);
      while (!stop) {
        c.one_tenant("t" + std::to_string(next_tenant++) + "-" + p.ns);
      }
    });
  }
  const auto started = clock_type::now();
  try {
    nemesis(p, l, rng, until, deadline);
  } catch (const std::exception &e) { // a service or server that did not come back
    l.violation(std::string("the nemesis could not heal a fault: ") + e.what());
  }
  stop = true;
  clients.clear(); // each finishes its tenant (every request retried to an answer)
  const auto workload_s =
      std::chrono::duration_cast<std::chrono::seconds>(clock_type::now() - started).count();
  const bool drained_in_time = drained(p, std::chrono::seconds(90));
  if (!drained_in_time) {
    l.violations.push_back("the platform did not drain within 90 s after the faults ended");
  }
  check(p, l);

  std::cout << "## saas_faults --duration " << o.duration_s << " --clients " << o.clients
            << " --seed " << o.seed << "\n\n"
            << "Workload " << workload_s << " s (GRPC_DEADLINE_MS " << deadline.count() << "), "
            << l.tenants.size() << " tenants, " << l.retries
            << " retries with the same Idempotency-Key.\n\n"
            << "| operation | definitive answers |\n|---|---|\n";
  for (const auto &[k, v] : l.ops) {
    std::cout << "| " << k << " | " << v << " |\n";
  }
  std::cout << "\n| fault injected | times |\n|---|---|\n";
  for (const auto &[k, v] : l.faults) {
    std::cout << "| " << k << " | " << v << " |\n";
  }
  std::cout << "\n| invariant | result |\n|---|---|\n";
  for (const char *inv :
       {"every key answered (none stuck), with the first effect's answer",
        "one tenant per signup, one user per create, every usage row stored once",
        "one invoice per period with the spec's total; one charge and payment per invoice",
        "one notification per payment; every period closed; outboxes empty",
        "no internal text in a 5xx answer"}) {
    std::cout << "| " << inv << " | " << (l.violations.empty() ? "held" : "see below") << " |\n";
  }
  if (!l.violations.empty()) {
    std::cout << "\n**" << l.violations.size() << " violations** (database " << p.db
              << " kept):\n\n";
    for (const auto &v : l.violations) {
      std::cout << "- " << v << "\n";
    }
    return 1;
  }
  p.keep_database = false;
  std::cout << "\nAll invariants held.\n";
  return 0;
}

int usage_error(const std::string &msg) {
  std::cerr << "saas_faults: " << msg << " (try --help)\n";
  return 2;
}

} // namespace

int main(int argc, char **argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::cout << "usage: saas_faults [--duration SECONDS (1..3600, 60)] [--clients N (1..64, "
                   "4)] [--seed S (1)] | --version\n"
                   "The SaaS platform under faults, checked by its invariants (see the header "
                   "of examples/saas/faults/main.cpp). Run under scripts/services.\n";
      return 0;
    }
    if (a == "--version") {
      std::cout << lakh::version_string << "\n";
      return 0;
    }
    if (i + 1 >= argc) {
      return usage_error(a + " needs a value");
    }
    const std::string v = argv[++i];
    long n = 0;
    try {
      std::size_t used = 0;
      n = std::stol(v, &used);
      if (used != v.size()) {
        throw std::invalid_argument(v);
      }
    } catch (const std::exception &) {
      return usage_error(a + " must be a number, got \"" + v + "\"");
    }
    if (a == "--duration" && n >= 1 && n <= 3600) {
      o.duration_s = static_cast<int>(n);
    } else if (a == "--clients" && n >= 1 && n <= 64) {
      o.clients = static_cast<int>(n);
    } else if (a == "--seed" && n >= 0) {
      o.seed = static_cast<unsigned>(n);
    } else {
      return usage_error("unknown option or value out of range: " + a + " " + v);
    }
  }
  try {
    return run(o);
  } catch (const std::exception &e) {
    std::cerr << "saas_faults: " << e.what() << "\n";
    return 1;
  }
}
