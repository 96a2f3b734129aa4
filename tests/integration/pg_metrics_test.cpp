// lakh::pg::register_metrics against the real PostgreSQL of scripts/services: every figure is
// read back from the registry's Prometheus text, as a scrape reads it. The broker of the
// relay case is an acknowledging publisher (a test double of the BROKER; the database is real).
#include <lakh/pg/metrics.hpp>
#include <lakh/pg/wal_relay.hpp>
#include <lakh/prometheus.hpp>

#include <support/env.hpp>
#include <support/outbox.hpp>
#include <support/pg.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace pg = lakh::pg;

namespace {

/// The value of `series` (name and labels, as written) in Prometheus text; FAILs when the
/// text has no such sample.
double value_of(const std::string &text, const std::string &series) {
  const std::string head = series + " ";
  for (std::size_t at = 0; at < text.size();) {
    const auto end = text.find('\n', at);
    const std::string line = text.substr(at, end - at);
    if (line.rfind(head, 0) == 0) {
      return std::stod(line.substr(head.size())); // reads "NaN" too
    }
    at = end == std::string::npos ? text.size() : end + 1;
  }
  FAIL("no sample " << series << " in:\n" << text);
  return 0;
}

/// Whether `text` has a line starting with `prefix`.
bool has_line(const std::string &text, const std::string &prefix) {
  return text.rfind(prefix, 0) == 0 || text.find("\n" + prefix) != std::string::npos;
}

/// Inserts one job per payload into `queue` of `q`, in one transaction.
void enqueue(pg::pool &p, pg::job_queue &q, const std::string &queue,
             const std::vector<std::string> &payloads) {
  pg::with_connection(p, [&](pqxx::connection &c) {
    pqxx::work w(c);
    for (const auto &payload : payloads) {
      pg::job_spec spec;
      spec.queue = queue;
      spec.payload = payload;
      REQUIRE(q.enqueue(w, spec).has_value());
    }
    w.commit();
  });
}

/// A job queue over a table of its own, dropped at scope exit.
struct scratch_queue {
  explicit scratch_queue(pg::pool &p, std::chrono::milliseconds acquire_timeout = 30s)
      : queue(p, {lakh::test::unique_name("metrics", "jobs"), true, acquire_timeout}) {
    queue.create_schema();
  }
  ~scratch_queue() {
    try {
      lakh::test::exec("DROP TABLE IF EXISTS " + queue.table());
      lakh::test::exec("DROP SEQUENCE IF EXISTS " + queue.table() + "_token_seq");
    } catch (...) {
    }
  }
  scratch_queue(const scratch_queue &) = delete;
  scratch_queue &operator=(const scratch_queue &) = delete;
  pg::job_queue queue;
};

/// Acknowledges every event.
struct acking_publisher : pg::outbox_publisher {
  void publish(std::span<const pg::outbox_event> events,
               std::span<pg::publish_outcome> outcomes) override {
    for (std::size_t i = 0; i < events.size(); ++i) {
      outcomes[i] = pg::publish_outcome::acked;
    }
  }
};

/// An outbox over a table of its own, dropped at scope exit.
struct scratch_outbox {
  explicit scratch_outbox(pg::pool &p) : box(p, {lakh::test::unique_name("metrics", "outbox")}) {
    box.create_schema();
  }
  ~scratch_outbox() {
    try {
      lakh::test::exec("DROP TABLE IF EXISTS " + box.table());
    } catch (...) {
    }
  }
  scratch_outbox(const scratch_outbox &) = delete;
  scratch_outbox &operator=(const scratch_outbox &) = delete;
  pg::outbox box;
};

/// Whether a relay of type Relay registers through the overload for its metrics().
template <class Relay> constexpr bool registers = requires(lakh::registry &r, const Relay &relay) {
  pg::register_metrics(r, relay, {});
};
static_assert(registers<pg::outbox_relay> && registers<pg::outbox_relay_thread> &&
              registers<pg::wal_relay> && registers<pg::wal_relay_thread>);

const std::string job_figures[] = {
    R"(lakh_pg_job_queue_jobs{queue="mail",state="pending"})",
    R"(lakh_pg_job_queue_jobs{queue="mail",state="running"})",
    R"(lakh_pg_job_queue_jobs{queue="mail",state="done"})",
    R"(lakh_pg_job_queue_jobs{queue="mail",state="dead"})",
    R"(lakh_pg_job_queue_oldest_pending_seconds{queue="mail"})",
    R"(lakh_pg_job_queue_dead_tuples{queue="mail"})",
    R"(lakh_pg_job_queue_oldest_transaction_seconds{queue="mail"})",
};

} // namespace

TEST_CASE("pg.metrics.pool_figures_follow_leases" * doctest::timeout(30)) {
  pg::pool pool(lakh::test::database_url(), 2);
  lakh::registry metrics;
  pg::register_metrics(metrics, pool, {{"pool", "main"}});
  const auto figure = [&](const std::string &name) {
    return value_of(metrics.prometheus_text(), name + R"({pool="main"})");
  };
  CHECK(has_line(metrics.prometheus_text(), "# TYPE lakh_pg_pool_in_use gauge"));
  CHECK(figure("lakh_pg_pool_max_size") == 2);
  CHECK(figure("lakh_pg_pool_size") == 0);
  CHECK(figure("lakh_pg_pool_in_use") == 0);
  {
    auto a = pool.acquire();
    REQUIRE(a);
    CHECK(figure("lakh_pg_pool_in_use") == 1);
    CHECK(figure("lakh_pg_pool_size") == 1);
    CHECK(figure("lakh_pg_pool_idle") == 0);
    auto b = pool.acquire();
    REQUIRE(b);
    CHECK(figure("lakh_pg_pool_in_use") == 2);
    // Both leased: an acquire that waits and times out is counted twice.
    CHECK_FALSE(pool.acquire_for(10ms));
    CHECK(figure("lakh_pg_pool_waits_total") == 1);
    CHECK(figure("lakh_pg_pool_timeouts_total") == 1);
  }
  CHECK(figure("lakh_pg_pool_in_use") == 0);
  CHECK(figure("lakh_pg_pool_idle") == 2);
  CHECK(figure("lakh_pg_pool_max_in_use") == 2);
  CHECK(figure("lakh_pg_pool_acquired_total") == 2);
  CHECK(figure("lakh_pg_pool_created_total") == 2);
  CHECK(figure("lakh_pg_pool_replaced_total") == 0);
  CHECK(figure("lakh_pg_pool_cancellations_total") == 0);
  CHECK(figure("lakh_pg_pool_connect_failures_total") == 0);
  // The same pool under the same labels is refused by the registry; under others it is not.
  CHECK_THROWS_AS(pg::register_metrics(metrics, pool, {{"pool", "main"}}), std::invalid_argument);
  pg::register_metrics(metrics, pool, {{"pool", "again"}});
  CHECK(value_of(metrics.prometheus_text(), R"(lakh_pg_pool_idle{pool="again"})") == 2);
}

TEST_CASE("pg.metrics.retrier_counts_attempts_and_causes" * doctest::timeout(30)) {
  pg::pool pool(lakh::test::database_url(), 1);
  pg::retry_options o;
  o.max_attempts = 3;
  o.backoff = lakh::backoff(1ms, 5ms);
  pg::retrier retrier(o);
  lakh::registry metrics;
  pg::register_metrics(metrics, retrier, {{"retrier", "billing"}});
  const auto figure = [&](const std::string &name, const std::string &cause = {}) {
    return value_of(metrics.prometheus_text(),
                    name + R"({retrier="billing")" +
                        (cause.empty() ? std::string() : R"(,cause=")" + cause + "\"") + "}");
  };
  CHECK(figure("lakh_pg_retry_attempts_total") == 0);
  int calls = 0;
  CHECK(retrier.run(pool, [&](pqxx::work &tx) {
    if (++calls == 1) { // the first attempt fails as a write skew would
      tx.exec("DO $$ BEGIN RAISE EXCEPTION 'write skew' USING ERRCODE = '40001'; END $$");
    }
    return 7;
  }) == 7);
  CHECK(figure("lakh_pg_retry_calls_total") == 1);
  CHECK(figure("lakh_pg_retry_attempts_total") == 2);
  CHECK(figure("lakh_pg_retry_successes_total") == 1);
  CHECK(figure("lakh_pg_retry_failures_total") == 0);
  CHECK(figure("lakh_pg_retry_retries_total", "serialization") == 1);
  CHECK(figure("lakh_pg_retry_errors_total", "serialization") == 1);
  CHECK(figure("lakh_pg_retry_retries_total", "deadlock") == 0);
  CHECK(figure("lakh_pg_retry_errors_total", "deadlock") == 0);
  // A division by zero is not retried: an error, a failure, and no retries series for it.
  CHECK_THROWS(retrier.run(pool, [](pqxx::work &tx) { tx.exec("SELECT 1 / 0"); }));
  CHECK(figure("lakh_pg_retry_calls_total") == 2);
  CHECK(figure("lakh_pg_retry_attempts_total") == 3);
  CHECK(figure("lakh_pg_retry_failures_total") == 1);
  CHECK(figure("lakh_pg_retry_errors_total", "not_retryable") == 1);
  CHECK(figure("lakh_pg_retry_exhausted_attempts_total") == 0);
  const auto text = metrics.prometheus_text();
  CHECK_FALSE(
      has_line(text, R"(lakh_pg_retry_retries_total{retrier="billing",cause="not_retryable"})"));
  CHECK_FALSE(has_line(text, R"(lakh_pg_retry_retries_total{retrier="billing",cause="in_doubt"})"));
}

TEST_CASE("pg.metrics.job_queue_figures_one_query_per_scrape" * doctest::timeout(30)) {
  pg::pool pool(lakh::test::database_url(), 2);
  scratch_queue jobs(pool);
  lakh::registry metrics;
  pg::register_metrics(metrics, jobs.queue, {{"queue", "mail"}});
  // health() leases one pooled connection: one acquire per scrape, for all seven figures.
  const auto scrape = [&] {
    const auto before = pool.stats().acquired;
    auto text = metrics.prometheus_text();
    CHECK(pool.stats().acquired - before == 1);
    return text;
  };
  auto text = scrape();
  CHECK(value_of(text, job_figures[0]) == 0);
  CHECK(value_of(text, job_figures[4]) == 0); // no runnable job: age 0
  enqueue(pool, jobs.queue, "mail", {"a", "b", "c"});
  text = scrape();
  CHECK(value_of(text, job_figures[0]) == 3);
  CHECK(value_of(text, job_figures[1]) == 0);
  CHECK(value_of(text, job_figures[4]) >= 0);
  CHECK(value_of(text, job_figures[5]) >= 0);
  CHECK(value_of(text, job_figures[6]) >= 0);
  const auto claimed = jobs.queue.claim("mail", 1, 30s);
  REQUIRE(claimed.size() == 1);
  text = scrape();
  CHECK(value_of(text, job_figures[0]) == 2);
  CHECK(value_of(text, job_figures[1]) == 1);
  CHECK(jobs.queue.complete(claimed[0]));
  text = scrape();
  CHECK(value_of(text, job_figures[1]) == 0);
  CHECK(value_of(text, job_figures[2]) == 1);
  CHECK(value_of(text, job_figures[3]) == 0);
}

TEST_CASE("pg.metrics.job_queue_figures_are_reused_within_max_age" * doctest::timeout(30)) {
  pg::pool pool(lakh::test::database_url(), 2);
  scratch_queue jobs(pool);
  lakh::registry metrics;
  pg::register_metrics(metrics, jobs.queue, {{"queue", "mail"}}, std::chrono::hours(1));
  auto before = pool.stats().acquired;
  CHECK(value_of(metrics.prometheus_text(), job_figures[0]) == 0);
  CHECK(pool.stats().acquired - before == 1);
  enqueue(pool, jobs.queue, "mail", {"a"});
  before = pool.stats().acquired;
  CHECK(value_of(metrics.prometheus_text(), job_figures[0]) == 0); // an hour is not over
  CHECK(pool.stats().acquired == before);
  lakh::registry other; // a registration of its own reads afresh
  pg::register_metrics(other, jobs.queue, {{"queue", "mail"}});
  CHECK(value_of(other.prometheus_text(), job_figures[0]) == 1);
  CHECK_THROWS_AS(pg::register_metrics(other, jobs.queue, {{"queue", "x"}}, -1ms),
                  std::invalid_argument);
}

TEST_CASE("pg.metrics.job_queue_failure_reads_nan_and_never_throws" * doctest::timeout(30)) {
  pg::pool pool(lakh::test::database_url(), 1);
  SUBCASE("the table is missing: one failed query per scrape") {
    pg::job_queue missing(pool, {lakh::test::unique_name("metrics", "missing")});
    lakh::registry metrics;
    pg::register_metrics(metrics, missing, {{"queue", "mail"}});
    const auto before = pool.stats().acquired;
    std::string text;
    REQUIRE_NOTHROW(text = metrics.prometheus_text());
    CHECK(pool.stats().acquired - before == 1);
    for (const auto &series : job_figures) {
      CHECK(std::isnan(value_of(text, series)));
    }
  }
  SUBCASE("the pool is exhausted: one timed-out wait per scrape, then figures again") {
    scratch_queue jobs(pool, 50ms);
    lakh::registry metrics;
    pg::register_metrics(metrics, jobs.queue, {{"queue", "mail"}});
    std::string text;
    {
      auto held = pool.acquire();
      REQUIRE(held);
      REQUIRE_NOTHROW(text = metrics.prometheus_text());
      CHECK(pool.stats().timeouts == 1); // not one per figure
      for (const auto &series : job_figures) {
        CHECK(std::isnan(value_of(text, series)));
      }
    }
    text = metrics.prometheus_text();
    CHECK(value_of(text, job_figures[0]) == 0);
    CHECK(pool.stats().timeouts == 1);
  }
}

TEST_CASE("pg.metrics.relay_published_follows_relaying" * doctest::timeout(60)) {
  pg::pool pool(lakh::test::database_url(), 4);
  scratch_outbox out(pool);
  acking_publisher pub;
  pg::outbox_relay relay(out.box, pub, {100});
  lakh::registry metrics;
  pg::register_metrics(metrics, relay, {{"relay", "orders"}});
  pg::register_metrics(metrics, relay.metrics(), {{"relay", "same"}}); // the counters alone
  const auto figure = [&](const std::string &name) {
    return value_of(metrics.prometheus_text(), name + R"({relay="orders"})");
  };
  CHECK(figure("lakh_pg_outbox_relay_published_total") == 0);
  CHECK(figure("lakh_pg_outbox_relay_rounds_total") == 0);
  pg::with_connection(pool, [&](pqxx::connection &c) {
    pqxx::work w(c);
    for (int i = 0; i < 3; ++i) {
      (void)out.box.enqueue(w, "invoice.issued", "k" + std::to_string(i), "{}");
    }
    w.commit();
  });
  lakh::test::wait_eligible(pool, out.box, 3);
  CHECK(relay.run_once().published == 3);
  CHECK(figure("lakh_pg_outbox_relay_published_total") == 3);
  CHECK(figure("lakh_pg_outbox_relay_rounds_total") == 1);
  CHECK(figure("lakh_pg_outbox_relay_failed_total") == 0);
  CHECK(figure("lakh_pg_outbox_relay_parked_total") == 0);
  CHECK(figure("lakh_pg_outbox_relay_duplicates_total") == 0);
  CHECK(figure("lakh_pg_outbox_relay_lag_seconds") >= 0);
  const double since = figure("lakh_pg_outbox_relay_since_last_round_seconds");
  CHECK(since >= 0);
  CHECK(since < 30);
  CHECK(value_of(metrics.prometheus_text(),
                 R"(lakh_pg_outbox_relay_published_total{relay="same"})") == 3);
}

TEST_CASE("pg.metrics.one_registry_serves_all_four" * doctest::timeout(30)) {
  pg::pool pool(lakh::test::database_url(), 2);
  pg::retrier retrier;
  scratch_queue jobs(pool);
  scratch_outbox out(pool);
  acking_publisher pub;
  pg::outbox_relay relay(out.box, pub);
  auto &queue = jobs.queue;
  // [doc:pg_metrics]
  lakh::registry metrics;
  lakh::pg::register_metrics(metrics, pool, {{"pool", "main"}});
  lakh::pg::register_metrics(metrics, retrier, {{"retrier", "billing"}});
  lakh::pg::register_metrics(metrics, queue, {{"queue", "mail"}}); // one query per scrape
  lakh::pg::register_metrics(metrics, relay, {{"relay", "orders"}});
  // GET /metrics: metrics.prometheus_text(). Serve no scrape once one of them is destroyed.
  // [doc:pg_metrics]
  const auto text = metrics.prometheus_text();
  CHECK(value_of(text, R"(lakh_pg_pool_max_size{pool="main"})") == 2);
  CHECK(value_of(text, R"(lakh_pg_retry_calls_total{retrier="billing"})") == 0);
  CHECK(value_of(text, job_figures[0]) == 0);
  CHECK(value_of(text, R"(lakh_pg_outbox_relay_published_total{relay="orders"})") == 0);
  CHECK(text.find("NaN") == std::string::npos);
}
