// lakh::pg::job_worker (and job_queue's admin API and SQL file) against the real PostgreSQL
// of scripts/services.
#include <lakh/pg/job_worker.hpp>

#include <support/env.hpp>
#include <support/pg.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using lakh::test::exec;
using lakh::test::scalar;

std::string unique_name(const char *what) {
  return lakh::test::unique_name("jw", what);
}

/// Waits up to `limit` for pred().
template <class Pred> bool eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > until) {
      return false;
    }
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

/// A queue in its own table, and a log table the handlers write (job_id is its primary key,
/// so a job whose effects commit twice fails).
struct fixture {
  lakh::pg::pool pool;
  lakh::pg::job_queue queue;
  std::string log;
  explicit fixture(const char *what, std::size_t pool_size = 8)
      : pool(lakh::test::database_url(), pool_size), queue(pool, {unique_name(what)}),
        log(queue.table() + "_log") {
    queue.create_schema();
    exec("CREATE TABLE " + log + " (job_id bigint PRIMARY KEY, payload text NOT NULL)");
  }
  ~fixture() {
    try {
      exec("DROP TABLE IF EXISTS " + queue.table() + ", " + log);
      exec("DROP SEQUENCE IF EXISTS " + queue.table() + "_token_seq");
    } catch (...) {
    }
  }
  fixture(const fixture &) = delete;
  fixture &operator=(const fixture &) = delete;

  std::int64_t enqueue(const std::string &queue_name, const std::string &payload,
                       int max_attempts = 5) {
    auto c = pool.acquire();
    pqxx::work w(*c);
    auto id = queue.enqueue(w, {queue_name, payload, {}, 0ms, max_attempts});
    w.commit();
    return *id;
  }
  /// A handler that logs the job in the worker's transaction.
  lakh::pg::job_handler_tx logger() {
    return [this](const lakh::pg::claimed_job &j, pqxx::transaction_base &w, std::stop_token) {
      lakh::pg::detail::exec(w, "INSERT INTO " + log + " (job_id, payload) VALUES ($1, $2)", j.id,
                             j.payload);
    };
  }
  long long count(const std::string &where) {
    return scalar("SELECT count(*) FROM " + queue.table() + " WHERE " + where);
  }
};

lakh::pg::job_worker_options fast(const std::string &queue_name, int workers = 2) {
  lakh::pg::job_worker_options o;
  o.queue = queue_name;
  o.workers = workers;
  o.poll = 50ms;
  o.backoff = 0ms;
  o.maintenance = 100ms;
  return o;
}

} // namespace

TEST_CASE("pg.job_worker.errors_are_kept_retried_then_dead_and_the_api_retries_them" *
          doctest::timeout(60)) {
  fixture f("errors");
  lakh::registry metrics;
  std::atomic<bool> healed{false};
  std::atomic<int> runs{0};
  auto o = fast("q");
  o.metrics = &metrics;
  lakh::pg::job_worker w(f.pool, f.queue, o,
                         lakh::pg::job_handler_tx([&](const lakh::pg::claimed_job &j,
                                                      pqxx::transaction_base &tx, std::stop_token) {
                           ++runs;
                           lakh::pg::detail::exec(
                               tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                               j.id, j.payload);
                           if (!healed) {
                             throw std::runtime_error("the provider said no (attempt " +
                                                      std::to_string(j.attempts) + ")");
                           }
                         }));
  const auto id = f.enqueue("q", "charge", 3);
  w.start();
  REQUIRE(eventually([&] { return f.count("state = 'dead'") == 1; }));
  CHECK(runs == 3);
  // The handler's writes rolled back with each failure; its error text is kept.
  CHECK(scalar("SELECT count(*) FROM " + f.log) == 0);
  const auto dead = f.queue.list("dead", "q");
  REQUIRE(dead.size() == 1);
  CHECK(dead[0].id == id);
  CHECK(dead[0].attempts == 3);
  CHECK(dead[0].last_error == "the provider said no (attempt 3)");
  const auto text = metrics.prometheus_text();
  CHECK(text.find("lakh_job_worker_failed_total{queue=\"q\"} 2") != std::string::npos);
  CHECK(text.find("lakh_job_worker_dead_total{queue=\"q\"} 1") != std::string::npos);
  // Retried by the API, it runs again and its writes commit with its completion.
  healed = true;
  CHECK(f.queue.retry_dead(id));
  CHECK_FALSE(f.queue.retry_dead(id)); // pending now, not dead
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 1; }));
  CHECK(scalar("SELECT count(*) FROM " + f.log) == 1);
  w.stop();
  // cancel and delete_dead: only pending, resp. dead jobs.
  const auto later = f.enqueue("q", "later");
  CHECK(f.queue.cancel(later));
  CHECK_FALSE(f.queue.cancel(id)); // done
  CHECK(f.queue.list("dead", "q").at(0).last_error == "cancelled");
  CHECK(f.queue.delete_dead(later));
  CHECK_FALSE(f.queue.delete_dead(later));
  CHECK_THROWS_WITH_AS(f.queue.list("finished"),
                       doctest::Contains("state \"finished\" is not one of"),
                       std::invalid_argument);
}

TEST_CASE("pg.job_worker.a_retryable_failure_runs_again_in_place_with_options_retry" *
          doctest::timeout(60)) {
  // A real server error with SQLSTATE 40001 (serialization_failure) on a handler's first two
  // attempts of each job.
  const auto flaky = [](fixture &f, std::atomic<int> &runs) {
    return lakh::pg::job_handler_tx(
        [&f, &runs](const lakh::pg::claimed_job &j, pqxx::transaction_base &tx, std::stop_token) {
          lakh::pg::detail::exec(tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                                 j.id, j.payload);
          if (++runs % 3 != 0) {
            tx.exec("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$");
          }
        });
  };
  SUBCASE("with a retrier: the whole attempt again, the job's attempts untouched") {
    fixture f("retry");
    std::atomic<int> runs{0};
    lakh::pg::retry_options ro;
    ro.backoff = lakh::backoff{1ms, 5ms};
    lakh::pg::retrier retry(ro);
    auto o = fast("q", 1);
    o.retry = &retry;
    lakh::pg::job_worker w(f.pool, f.queue, o, flaky(f, runs));
    w.start();
    f.enqueue("q", "a");
    REQUIRE(eventually([&] { return f.count("state = 'done'") == 1; }));
    w.stop();
    CHECK(runs == 3);
    CHECK(w.failed() == 0);
    CHECK(retry.stats().retries_for(lakh::pg::retry_cause::serialization) == 2);
    CHECK(f.count("attempts = 1 AND last_error IS NULL") == 1);
    CHECK(scalar("SELECT count(*) FROM " + f.log) == 1); // the retried writes rolled back
  }
  SUBCASE("without: each failure counts against the job and waits its backoff") {
    fixture f("noretry");
    std::atomic<int> runs{0};
    lakh::pg::job_worker w(f.pool, f.queue, fast("q", 1), flaky(f, runs));
    w.start();
    f.enqueue("q", "a");
    REQUIRE(eventually([&] { return f.count("state = 'done'") == 1; }));
    w.stop();
    CHECK(runs == 3);
    CHECK(w.failed() == 2);
    CHECK(f.count("attempts = 3") == 1);
    CHECK(scalar("SELECT count(*) FROM " + f.log) == 1);
  }
}

TEST_CASE("pg.job_worker.a_completion_refused_by_the_fence_rolls_its_effects_back" *
          doctest::timeout(60)) {
  fixture f("fenced");
  lakh::registry metrics;
  std::atomic<int> runs{0};
  auto o = fast("q", 1);
  o.lease = 600ms;
  o.metrics = &metrics;
  lakh::pg::job_worker w(
      f.pool, f.queue, o,
      lakh::pg::job_handler_tx([&](const lakh::pg::claimed_job &j, pqxx::transaction_base &tx,
                                   std::stop_token) {
        lakh::pg::detail::exec(tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                               j.id, std::to_string(runs));
        if (++runs == 1) {
          // Another worker takes the job over (as after a rescue): a new token.
          exec("UPDATE " + f.queue.table() + " SET token = nextval('" + f.queue.table() +
               "_token_seq') WHERE id = " + std::to_string(j.id));
        }
      }));
  w.start();
  f.enqueue("q", "a");
  // The taken-over lease runs out (no heartbeat matches the old token), the rescue returns
  // the job, and its second run completes.
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 1; }));
  w.stop();
  CHECK(runs == 2);
  CHECK(w.fenced() == 1);
  CHECK(scalar("SELECT count(*) FROM " + f.log + " WHERE payload = '1'") == 1); // run 2 only
  CHECK(scalar("SELECT count(*) FROM " + f.log) == 1);
  CHECK(metrics.prometheus_text().find("lakh_job_worker_fenced_total{queue=\"q\"} 1") !=
        std::string::npos);
}

TEST_CASE("pg.job_worker.a_commit_in_doubt_is_left_to_the_lease_never_rerun_blindly" *
          doctest::timeout(60)) {
  // A real commit of unknown outcome: a deferred trigger terminates the session inside the
  // COMMIT of the first run, so the client sees its connection lost while committing.
  fixture f("in_doubt");
  exec("CREATE FUNCTION " + f.log +
       "_die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.payload = 'die' THEN "
       "PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NULL; END $$");
  exec("CREATE CONSTRAINT TRIGGER die AFTER INSERT ON " + f.log +
       " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION " + f.log + "_die()");
  lakh::registry metrics;
  lakh::pg::retry_options ro;
  ro.backoff = lakh::backoff{1ms, 5ms};
  lakh::pg::retrier retry(ro);
  auto o = fast("q", 1);
  o.lease = 600ms;
  o.retry = &retry;
  o.metrics = &metrics;
  std::atomic<int> runs{0};
  std::mutex m;
  std::vector<std::chrono::steady_clock::time_point> started;
  lakh::pg::job_worker w(f.pool, f.queue, o,
                         lakh::pg::job_handler_tx([&](const lakh::pg::claimed_job &j,
                                                      pqxx::transaction_base &tx, std::stop_token) {
                           {
                             std::lock_guard l(m);
                             started.push_back(std::chrono::steady_clock::now());
                           }
                           lakh::pg::detail::exec(
                               tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                               j.id, ++runs == 1 ? std::string("die") : std::to_string(runs));
                         }));
  w.start();
  f.enqueue("q", "a");
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 1; }));
  w.stop();
  CHECK(runs == 2);
  CHECK(w.in_doubt() == 1);
  CHECK(w.failed() == 0); // not recorded as a failure: the commit may have landed
  CHECK(w.fenced() == 0);
  CHECK(retry.stats().errors_for(lakh::pg::retry_cause::in_doubt) == 1);
  CHECK(retry.stats().attempts == 2); // never attempted again in place
  // The second run came from the rescue, after the lease.
  REQUIRE(started.size() == 2);
  CHECK(started[1] - started[0] >= o.lease);
  CHECK(f.count("attempts = 2 AND last_error = 'lease expired'") == 1);
  CHECK(scalar("SELECT count(*) FROM " + f.log + " WHERE payload = '2'") == 1);
  CHECK(scalar("SELECT count(*) FROM " + f.log) == 1);
  CHECK(metrics.prometheus_text().find("lakh_job_worker_in_doubt_total{queue=\"q\"} 1") !=
        std::string::npos);
  exec("DROP FUNCTION " + f.log + "_die() CASCADE");
}

TEST_CASE("pg.job_worker.heartbeats_keep_a_job_longer_than_its_lease" * doctest::timeout(60)) {
  fixture f("heartbeat");
  std::atomic<int> runs{0};
  auto o = fast("q", 1);
  o.lease = 300ms; // heartbeat 100 ms; the rescue runs every 100 ms
  lakh::pg::job_worker w(f.pool, f.queue, o,
                         lakh::pg::job_handler([&](const lakh::pg::claimed_job &, std::stop_token) {
                           ++runs;
                           std::this_thread::sleep_for(1500ms); // five leases
                         }));
  f.enqueue("q", "long");
  w.start();
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 1; }));
  CHECK(runs == 1);
  CHECK(f.count("attempts = 1 AND last_error IS NULL") == 1);
}

TEST_CASE("pg.job_worker.a_job_whose_worker_died_is_rescued_and_runs_again" *
          doctest::timeout(60)) {
  fixture f("rescue");
  const auto id = f.enqueue("q", "orphan");
  // A worker process claims the job and dies (nothing heartbeats it, nothing completes it).
  REQUIRE(f.queue.claim("q", 1, 200ms).size() == 1);
  lakh::pg::job_worker w(f.pool, f.queue, fast("q"), f.logger());
  w.start();
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 1; }));
  CHECK(f.count("id = " + std::to_string(id) + " AND attempts = 2") == 1);
  CHECK(scalar("SELECT count(*) FROM " + f.log) == 1);
}

TEST_CASE("pg.job_worker.stop_mid_run_loses_nothing" * doctest::timeout(120)) {
  fixture f("stop");
  constexpr int n = 300;
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    std::vector<std::string> payloads(n, "x");
    f.queue.enqueue_bulk(w, "q", payloads);
    w.commit();
  }
  const auto slow = [&](const lakh::pg::claimed_job &j, pqxx::transaction_base &tx,
                        std::stop_token) {
    std::this_thread::sleep_for(2ms);
    lakh::pg::detail::exec(tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)", j.id,
                           j.payload);
  };
  {
    lakh::pg::job_worker first(f.pool, f.queue, fast("q", 4), lakh::pg::job_handler_tx(slow));
    first.start();
    REQUIRE(eventually([&] { return first.done() >= 50; }));
    first.stop(); // mid-run: handlers finish, claimed jobs go back
    CHECK(f.count("state = 'running'") == 0);
    CHECK(scalar("SELECT count(*) FROM " + f.log) == f.count("state = 'done'"));
  }
  lakh::pg::job_worker second(f.pool, f.queue, fast("q", 4), lakh::pg::job_handler_tx(slow));
  second.start();
  REQUIRE(eventually([&] { return f.count("state = 'done'") == n; }, 60s));
  CHECK(scalar("SELECT count(*) FROM " + f.log) == n); // every job's effects once
  CHECK(f.count("attempts <> 1") == 0);                // a released claim is no attempt
}

TEST_CASE("pg.job_worker.n_workers_on_a_pool_of_n_never_deadlock" * doctest::timeout(60)) {
  fixture f("pool", 3);
  for (int i = 0; i < 60; ++i) {
    f.enqueue("q", std::to_string(i));
  }
  auto o = fast("q", 3);
  o.lease = 600ms; // heartbeats every 200 ms while handlers hold every pooled connection
  lakh::pg::job_worker w(f.pool, f.queue, o,
                         lakh::pg::job_handler_tx([&](const lakh::pg::claimed_job &j,
                                                      pqxx::transaction_base &tx, std::stop_token) {
                           std::this_thread::sleep_for(20ms);
                           lakh::pg::detail::exec(
                               tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                               j.id, j.payload);
                         }));
  w.start();
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 60; }, 30s));
  CHECK(scalar("SELECT count(*) FROM " + f.log) == 60);
}

TEST_CASE("pg.job_worker.n_workers_on_a_pool_of_n_finish_with_every_kind_of_handler" *
          doctest::timeout(240)) {
  // Three workers on a pool of three, with heartbeats and maintenance every 50-200 ms (on
  // their own connections), each kind of handler in turn: a handler without a transaction
  // leases a connection of its own for job_queue::heartbeat (it holds none while it runs).
  constexpr int n = 150;
  const auto run = [&](const char *what, lakh::pg::job_claim claim, int batch, auto handler) {
    CAPTURE(what);
    fixture f(what, 3);
    {
      auto c = f.pool.acquire();
      pqxx::work w(*c);
      f.queue.enqueue_bulk(w, "q", std::vector<std::string>(n, "x"));
      w.commit();
    }
    auto o = fast("q", 3);
    o.lease = 600ms;
    o.maintenance = 50ms;
    o.claim = claim;
    o.batch = batch;
    lakh::pg::job_worker w(f.pool, f.queue, o, handler(f));
    w.start();
    // Bounded: a worker stuck on the pool never finishes, and the test says so.
    REQUIRE(eventually([&] { return f.count("state = 'done'") == n; }, 60s));
    w.stop();
    CHECK(f.count("state <> 'done'") == 0);
  };
  const auto tx_log = [](fixture &f) { return f.logger(); };
  run("nn_tx", lakh::pg::job_claim::lease, 1, tx_log);
  run("nn_row_lock", lakh::pg::job_claim::row_lock, 1, tx_log);
  run("nn_batch", lakh::pg::job_claim::lease, 5, [](fixture &f) {
    return lakh::pg::job_batch_handler([&f](const std::vector<lakh::pg::claimed_job> &jobs,
                                            pqxx::transaction_base &tx, std::stop_token) {
      for (const auto &j : jobs) {
        lakh::pg::detail::exec(tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                               j.id, j.payload);
      }
    });
  });
  run("nn_no_tx", lakh::pg::job_claim::lease, 1, [](fixture &f) {
    return lakh::pg::job_handler([&f](const lakh::pg::claimed_job &j, std::stop_token st) {
      if (!f.queue.heartbeat(j, 600ms, st)) {
        throw std::runtime_error("lost the lease");
      }
    });
  });
}

TEST_CASE("pg.job_worker.a_job_claimed_with_a_completion_gets_its_whole_lease" *
          doctest::timeout(60)) {
  // The next job is claimed in the transaction of the previous one's completion, which began
  // before that handler ran: its lease counts from the claim, not from that transaction's
  // start, or it is born expired and another process's rescue takes it before its first
  // heartbeat.
  fixture f("lease_start");
  for (int i = 0; i < 3; ++i) {
    f.enqueue("q", std::to_string(i));
  }
  auto o = fast("q", 1);
  o.lease = 2s;
  o.heartbeat = 1s;
  o.maintenance = 1h; // the rescuer is the other process below
  lakh::pg::job_worker w(f.pool, f.queue, o,
                         lakh::pg::job_handler_tx([&](const lakh::pg::claimed_job &j,
                                                      pqxx::transaction_base &tx, std::stop_token) {
                           std::this_thread::sleep_for(2500ms); // longer than the lease
                           lakh::pg::detail::exec(
                               tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                               j.id, j.payload);
                         }));
  std::atomic<std::size_t> rescued{0};
  std::jthread rescuer([&](std::stop_token st) {
    while (!st.stop_requested()) {
      rescued += f.queue.rescue_expired();
      std::this_thread::sleep_for(20ms);
    }
  });
  w.start();
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 3; }, 40s));
  CHECK(rescued.load() == 0);
  CHECK(w.fenced() == 0);
  CHECK(f.count("attempts = 1 AND last_error IS NULL") == 3);
}

TEST_CASE("pg.job_worker.a_row_lock_held_elsewhere_does_not_stall_the_other_heartbeats" *
          doctest::timeout(60)) {
  // Another transaction holds job A's row for longer than the lease (a user's own
  // heartbeat(tx, ...) in a long transaction; a worker's completion, briefly). The helper's
  // beat skips A instead of waiting behind that lock, so B's lease is extended meanwhile and
  // a rescuer in another process never takes B.
  fixture f("beat_skip");
  const auto a = f.enqueue("q", "a");
  const auto b = f.enqueue("q", "b");
  auto o = fast("q", 2);
  o.lease = 600ms; // heartbeat 200 ms
  o.maintenance = 1h;
  std::atomic<int> running{0};
  lakh::pg::job_worker w(f.pool, f.queue, o,
                         lakh::pg::job_handler([&](const lakh::pg::claimed_job &, std::stop_token) {
                           ++running;
                           std::this_thread::sleep_for(3s);
                         }));
  w.start();
  REQUIRE(eventually([&] { return running == 2; }));
  std::atomic<std::size_t> rescued{0};
  std::jthread rescuer([&](std::stop_token st) {
    while (!st.stop_requested()) {
      rescued += f.queue.rescue_expired(0ms);
      std::this_thread::sleep_for(20ms);
    }
  });
  {
    auto c = f.pool.acquire();
    pqxx::work tx(*c);
    const auto token = lakh::pg::detail::exec(
                           tx, "SELECT token FROM " + f.queue.table() + " WHERE id = $1", a)[0][0]
                           .as<std::int64_t>();
    REQUIRE(f.queue.heartbeat(tx, {{a, "a", 1, token}}, 10s).size() == 1);
    std::this_thread::sleep_for(1500ms); // A's row stays locked: 2.5 leases
    tx.commit();
  }
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 2; }));
  CHECK(rescued.load() == 0);
  CHECK(w.fenced() == 0);
  CHECK(f.count("id = " + std::to_string(b) + " AND attempts = 1") == 1);
}

TEST_CASE("pg.job_worker.batches_commit_effects_with_their_fenced_completion" *
          doctest::timeout(120)) {
  fixture f("batch");
  constexpr int n = 2000;
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    std::vector<std::string> payloads;
    for (int i = 0; i < n; ++i) {
      payloads.push_back(std::to_string(i));
    }
    f.queue.enqueue_bulk(w, "q", payloads);
    w.commit();
  }
  const auto first_id = scalar("SELECT min(id) FROM " + f.queue.table());
  std::atomic<int> batches{0};
  std::atomic<bool> failed_once{false}, stolen_once{false};
  auto o = fast("q");
  o.batch = 100;
  lakh::pg::job_worker w(
      f.pool, f.queue, o,
      lakh::pg::job_batch_handler([&](const std::vector<lakh::pg::claimed_job> &jobs,
                                      pqxx::transaction_base &tx, std::stop_token) {
        ++batches;
        CHECK(jobs.size() <= 100);
        for (const auto &j : jobs) {
          lakh::pg::detail::exec(tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                                 j.id, j.payload);
        }
        if (!failed_once.exchange(true)) {
          throw std::runtime_error("first batch refused");
        }
        if (jobs.front().id > first_id + n / 2 && !stolen_once.exchange(true)) {
          // Another worker took one job of this batch over (its lease expired, it was
          // rescued and claimed again): the batch's fenced completion must roll it all back.
          exec("UPDATE " + f.queue.table() +
               " SET token = token + 1000000 WHERE id = " + std::to_string(jobs.back().id));
        }
      }));
  w.start();
  // The stolen job keeps its foreign token until its lease passes and the rescue hands it
  // back: the loop below makes the lease pass at once.
  REQUIRE(eventually(
      [&] {
        exec("UPDATE " + f.queue.table() +
             " SET lease_until = now() - interval '1 second' WHERE state = 'running' AND token > "
             "1000000");
        return f.count("state = 'done'") == n;
      },
      60s));
  w.stop();
  CHECK(stolen_once);
  CHECK(scalar("SELECT count(*) FROM " + f.log) == n); // every job's effects exactly once
  CHECK(f.count("last_error = 'first batch refused'") >= 1);
  CHECK(batches < n / 10); // batches, not jobs one by one
}

TEST_CASE("pg.job_worker.refuses_bad_options_naming_them") {
  fixture f("options");
  auto o = fast("q");
  o.batch = 10;
  CHECK_THROWS_WITH_AS(lakh::pg::job_worker(f.pool, f.queue, o, f.logger()),
                       doctest::Contains("batch (10) must be within 1..10000, and 1 unless"),
                       std::invalid_argument);
  o.batch = 1;
  o.workers = 0;
  CHECK_THROWS_WITH_AS(lakh::pg::job_worker(f.pool, f.queue, o, f.logger()),
                       doctest::Contains("workers (0) must be within 1..1024"),
                       std::invalid_argument);
  o.workers = 1;
  o.queue.clear();
  CHECK_THROWS_WITH_AS(lakh::pg::job_worker(f.pool, f.queue, o, f.logger()),
                       doctest::Contains("queue name must be"), std::invalid_argument);
  o.queue = "q";
  o.claim = lakh::pg::job_claim::row_lock;
  CHECK_THROWS_WITH_AS(
      lakh::pg::job_worker(
          f.pool, f.queue, o,
          lakh::pg::job_handler([](const lakh::pg::claimed_job &, std::stop_token) {})),
      doctest::Contains("claim row_lock needs a handler that runs in the worker's transaction"),
      std::invalid_argument);
}

TEST_CASE("pg.job_worker.row_lock_claims_run_each_job_once_in_its_own_transaction" *
          doctest::timeout(60)) {
  fixture f("rowlock");
  constexpr int n = 400;
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    f.queue.enqueue_bulk(w, "q", std::vector<std::string>(n, "x"));
    w.commit();
  }
  std::atomic<long> seen_running{0};
  auto o = fast("q", 3);
  o.claim = lakh::pg::job_claim::row_lock;
  o.batch = 7;
  lakh::pg::job_worker w(
      f.pool, f.queue, o,
      lakh::pg::job_batch_handler([&](const std::vector<lakh::pg::claimed_job> &jobs,
                                      pqxx::transaction_base &tx, std::stop_token) {
        for (const auto &j : jobs) {
          CHECK(j.token == 0);
          lakh::pg::detail::exec(tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                                 j.id, j.payload);
        }
        // Held by row locks, never by a lease: no job is 'running' at any time.
        seen_running +=
            scalar("SELECT count(*) FROM " + f.queue.table() + " WHERE state = 'running'");
      }));
  w.start();
  REQUIRE(eventually([&] { return f.count("state = 'done'") == n; }, 30s));
  w.stop();
  CHECK(w.done() == n);
  CHECK(seen_running == 0);
  CHECK(scalar("SELECT count(*) FROM " + f.log) == n); // each job's effects once
  CHECK(f.count("attempts = 1 AND finished_at IS NOT NULL AND lease_until IS NULL") == n);
}

TEST_CASE("pg.job_worker.row_lock_failures_roll_back_and_count_then_dead" * doctest::timeout(60)) {
  fixture f("rowlockfail");
  std::atomic<int> runs{0};
  std::atomic<bool> healed{false};
  auto o = fast("q", 1);
  o.claim = lakh::pg::job_claim::row_lock;
  lakh::pg::job_worker w(
      f.pool, f.queue, o,
      lakh::pg::job_handler_tx([&](const lakh::pg::claimed_job &j, pqxx::transaction_base &tx,
                                   std::stop_token) {
        ++runs;
        lakh::pg::detail::exec(tx, "INSERT INTO " + f.log + " (job_id, payload) VALUES ($1, $2)",
                               j.id, j.payload);
        if (!healed) {
          throw std::runtime_error("no (attempt " + std::to_string(j.attempts) + ")");
        }
      }));
  const auto dead = f.enqueue("q", "a", 2);
  w.start();
  REQUIRE(eventually([&] { return f.count("state = 'dead'") == 1; }));
  CHECK(runs == 2);
  CHECK(w.failed() == 1);
  CHECK(f.queue.list("dead", "q").at(0).last_error == "no (attempt 2)");
  CHECK(f.count("id = " + std::to_string(dead) + " AND attempts = 2") == 1);
  CHECK(scalar("SELECT count(*) FROM " + f.log) == 0); // rolled back each time
  healed = true;
  f.enqueue("q", "b");
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 1; }));
  w.stop();
  CHECK(scalar("SELECT count(*) FROM " + f.log) == 1);
}

TEST_CASE("pg.job_worker.a_handler_without_a_transaction_holds_no_connection" *
          doctest::timeout(60)) {
  fixture f("noconn", 1); // one pooled connection for two workers
  for (int i = 0; i < 4; ++i) {
    f.enqueue("q", std::to_string(i));
  }
  std::atomic<int> running{0}, most{0};
  lakh::pg::job_worker w(f.pool, f.queue, fast("q", 2),
                         lakh::pg::job_handler([&](const lakh::pg::claimed_job &, std::stop_token) {
                           const int now = ++running;
                           int seen = most.load();
                           while (now > seen && !most.compare_exchange_weak(seen, now)) {
                           }
                           std::this_thread::sleep_for(300ms); // calls another service
                           --running;
                         }));
  w.start();
  REQUIRE(eventually([&] { return f.count("state = 'done'") == 4; }));
  CHECK(most == 2); // both handlers ran at once on a pool of one
}

TEST_CASE("pg.job_worker.a_periodic_job_runs_once_per_slot_across_processes" *
          doctest::timeout(60)) {
  fixture f("periodic");
  std::atomic<int> runs{0};
  // Three workers, each with its own pool as three processes would have.
  std::vector<std::unique_ptr<lakh::pg::pool>> pools;
  std::vector<std::unique_ptr<lakh::pg::job_queue>> queues;
  std::vector<std::unique_ptr<lakh::pg::job_worker>> workers;
  for (int i = 0; i < 3; ++i) {
    pools.push_back(std::make_unique<lakh::pg::pool>(lakh::test::database_url(), 3));
    queues.push_back(std::make_unique<lakh::pg::job_queue>(
        *pools.back(), lakh::pg::job_queue_options{f.queue.table()}));
    auto o = fast("cron", 1);
    o.maintenance = 20ms;
    o.periodic = {{"tick", 1s, "tick", 1}};
    workers.push_back(std::make_unique<lakh::pg::job_worker>(
        *pools.back(), *queues.back(), o,
        lakh::pg::job_handler([&](const lakh::pg::claimed_job &, std::stop_token) { ++runs; })));
    workers.back()->start();
  }
  std::this_thread::sleep_for(2500ms); // at least two slots begin
  workers.clear();
  CHECK(scalar("SELECT count(*) FROM (SELECT unique_key FROM " + f.queue.table() +
               " GROUP BY unique_key HAVING count(*) > 1) d") == 0);
  const auto slots = f.count("queue = 'cron'");
  CHECK(slots >= 2);
  CHECK(slots <= 4);
  CHECK(runs == f.count("state = 'done'"));
}

TEST_CASE("pg.job_worker.notify_wakes_an_idle_worker" * doctest::timeout(60)) {
  fixture f("notify");
  auto o = fast("q", 1);
  o.poll = 30s; // so only a notification can wake it within the test
  lakh::pg::job_worker w(f.pool, f.queue, o, f.logger());
  w.start();
  std::this_thread::sleep_for(300ms); // idle, listening
  f.enqueue("q", "wake up");
  REQUIRE(eventually([&] { return w.done() == 1; }));
  CHECK(w.notify_wakeups() >= 1);
  // A notification for another queue of the table does not wake it.
  const auto before = w.notify_wakeups();
  f.enqueue("other", "not for us");
  std::this_thread::sleep_for(300ms);
  CHECK(w.notify_wakeups() == before);
}

TEST_CASE("pg.job_worker.runs_as_a_non_owner_role_with_the_documented_grants" *
          doctest::timeout(60)) {
  const auto schema = unique_name("schema");
  const auto role = unique_name("role");
  const auto table = schema + ".jobs";
  exec("CREATE ROLE " + role + " LOGIN NOSUPERUSER");
  {
    // As the owner: the schema is created when missing, then the grants of docs/job_queue.md.
    lakh::pg::pool owner(lakh::test::database_url(), 1);
    lakh::pg::job_queue(owner, {table}).create_schema();
    exec("GRANT USAGE ON SCHEMA " + schema + " TO " + role);
    exec("GRANT SELECT, INSERT, UPDATE, DELETE ON " + table + " TO " + role);
    exec("GRANT USAGE, SELECT ON SEQUENCE " + table + "_id_seq, " + table + "_token_seq TO " +
         role);
  }
  auto url = lakh::test::database_url();
  const auto at = url.find("postgres@");
  REQUIRE(at != std::string::npos);
  url.replace(at, 8, role);
  {
    lakh::pg::pool app(url, 3);
    lakh::pg::job_queue queue(app, {table});
    auto o = fast("q", 1);
    o.periodic = {{"purge", 60s, "", 1}};
    lakh::pg::job_worker w(
        app, queue, o,
        lakh::pg::job_handler([](const lakh::pg::claimed_job &, std::stop_token) {}));
    {
      auto c = app.acquire();
      pqxx::work tx(*c);
      CHECK(tx.exec("SELECT current_user")[0][0].as<std::string>() == role);
      queue.enqueue(tx, {"q", "by the app", {}, 0ms, 1});
      tx.commit();
    }
    w.start();
    CHECK(eventually([&] { return w.done() == 2; })); // the job and the periodic one
    CHECK(queue.list("done", "q").size() == 2);
  }
  exec("DROP SCHEMA " + schema + " CASCADE");
  exec("DROP ROLE " + role);
}

TEST_CASE("pg.job_queue.the_sql_file_makes_the_table_create_schema_makes") {
  const auto a = unique_name("file");
  const auto b = unique_name("code");
  std::ifstream in(LAKH_JOB_QUEUE_SQL);
  REQUIRE(in);
  std::stringstream sql;
  sql << in.rdbuf();
  {
    pqxx::connection c(lakh::test::database_url());
    pqxx::work w(c);
    w.exec("CREATE SCHEMA " + a);
    w.exec("SET LOCAL search_path = " + a);
    w.exec(sql.str());
    w.exec(sql.str()); // idempotent
    w.commit();
  }
  lakh::pg::pool p(lakh::test::database_url(), 2);
  lakh::pg::job_queue(p, {b + ".lakh_jobs"}).create_schema(); // creates schema b too
  const auto shape = [](const std::string &schema) {
    return "SELECT string_agg(column_name || ' ' || data_type || ' ' || is_nullable || ' ' || "
           "coalesce(column_default, ''), ', ' ORDER BY ordinal_position) FROM "
           "information_schema.columns WHERE table_schema = '" +
           schema + "' AND table_name = 'lakh_jobs'";
  };
  const auto indexes = [](const std::string &schema) {
    return "SELECT string_agg(replace(indexdef, '" + schema +
           ".', ''), '; ' ORDER BY indexname) "
           "FROM pg_indexes WHERE schemaname = '" +
           schema + "' AND tablename = 'lakh_jobs'";
  };
  pqxx::connection c(lakh::test::database_url());
  pqxx::nontransaction n(c);
  auto strip = [&](std::string s, const std::string &schema) {
    for (auto at = s.find(schema + "."); at != std::string::npos; at = s.find(schema + ".")) {
      s.erase(at, schema.size() + 1);
    }
    return s;
  };
  const auto file_cols = strip(n.exec(shape(a))[0][0].as<std::string>(), a);
  CHECK(file_cols.find("token bigint") != std::string::npos);
  CHECK(file_cols == strip(n.exec(shape(b))[0][0].as<std::string>(), b));
  CHECK(n.exec(indexes(a))[0][0].as<std::string>() == n.exec(indexes(b))[0][0].as<std::string>());
  n.exec("DROP SCHEMA " + a + " CASCADE");
  n.exec("DROP SCHEMA " + b + " CASCADE");
}
