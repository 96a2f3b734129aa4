// lakh::pg::job_queue against the real PostgreSQL of scripts/services.
#include <lakh/pg/job_queue.hpp>

#include <support/env.hpp>
#include <support/pg.hpp>
#include <support/process.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using lakh::test::exec;
using lakh::test::scalar;

std::string unique_table(const char *what) {
  return lakh::test::unique_name("jq", what);
}

struct fixture {
  lakh::pg::pool pool{lakh::test::database_url(), 8};
  lakh::pg::job_queue queue;
  explicit fixture(const char *what) : queue(pool, {unique_table(what)}) {
    queue.create_schema();
    queue.create_schema(); // idempotent
  }
  ~fixture() {
    try {
      exec("DROP TABLE IF EXISTS " + queue.table());
      exec("DROP SEQUENCE IF EXISTS " + queue.table() + "_token_seq");
    } catch (...) {
    }
  }
  fixture(const fixture &) = delete;
  fixture &operator=(const fixture &) = delete;

  std::optional<std::int64_t> enqueue(lakh::pg::job_spec spec) {
    auto c = pool.acquire();
    pqxx::work w(*c);
    auto id = queue.enqueue(w, spec);
    w.commit();
    return id;
  }
  std::string state_of(std::int64_t id) {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    return lakh::pg::detail::exec(tx, "SELECT state FROM " + queue.table() + " WHERE id = $1",
                                  id)[0][0]
        .as<std::string>();
  }
};

} // namespace

TEST_CASE("pg.job_queue.enqueue_claim_complete") {
  fixture f("basic");
  auto id = f.enqueue({"mail", "hello", {}, 0ms, 5});
  REQUIRE(id.has_value());
  CHECK(f.queue.claim("other-queue", 10, 30s).empty());
  auto jobs = f.queue.claim("mail", 10, 30s);
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0].id == *id);
  CHECK(jobs[0].payload == "hello");
  CHECK(jobs[0].attempts == 1);
  CHECK(jobs[0].token > 0);
  CHECK(f.queue.claim("mail", 10, 30s).empty()); // running jobs are not claimed again
  CHECK(f.queue.heartbeat(jobs[0], 30s));
  CHECK(f.queue.complete(jobs[0]));
  CHECK_FALSE(f.queue.complete(jobs[0])); // already done
  CHECK(f.state_of(*id) == "done");
  auto h = f.queue.health();
  CHECK(h.done == 1);
  CHECK(h.pending == 0);
  CHECK(h.running == 0);
}

TEST_CASE("pg.job_queue.calls_without_a_transaction_wait_for_a_connection_until_stopped" *
          doctest::timeout(30)) {
  fixture f("stop");
  f.enqueue({"q", "a", {}, 0ms, 5});
  auto jobs = f.queue.claim("q", 1, 30s);
  REQUIRE(jobs.size() == 1);
  // Every pooled connection is taken: each call waits for one until its stop_token stops.
  std::vector<lakh::pg::pooled_connection> held;
  for (int i = 0; i < 8; ++i) {
    held.push_back(f.pool.acquire());
  }
  const auto stopped = [&](auto call) {
    std::stop_source stop;
    std::thread stopper([&] {
      std::this_thread::sleep_for(50ms);
      stop.request_stop();
    });
    lakh::status s = lakh::status::ok;
    try {
      call(stop.get_token());
    } catch (const lakh::pg::acquire_error &e) {
      s = e.status();
    }
    stopper.join();
    return s;
  };
  CHECK(stopped([&](std::stop_token st) { f.queue.claim("q", 1, 30s, st); }) ==
        lakh::status::cancelled);
  CHECK(stopped([&](std::stop_token st) { f.queue.heartbeat(jobs[0], 30s, st); }) ==
        lakh::status::cancelled);
  CHECK(stopped([&](std::stop_token st) { f.queue.fail(jobs[0], "x", 1s, st); }) ==
        lakh::status::cancelled);
  CHECK(stopped([&](std::stop_token st) { (void)f.queue.complete(jobs[0], st); }) ==
        lakh::status::cancelled);
  CHECK(stopped([&](std::stop_token st) { f.queue.rescue_expired(1s, st); }) ==
        lakh::status::cancelled);
  held.clear();
  CHECK(f.state_of(jobs[0].id) == "running"); // none of them ran
  CHECK(f.queue.complete(jobs[0]));
}

TEST_CASE("pg.job_queue.calls_without_a_transaction_give_up_at_their_deadline" *
          doctest::timeout(60)) {
  // A caller that holds the pool's only connection and calls a member that leases its own
  // (a hand-written worker with as many threads as connections): the call fails with
  // status timeout at options().acquire_timeout instead of waiting forever. The pool itself
  // has no acquire_timeout.
  lakh::pg::pool pool(lakh::test::database_url(), 1);
  lakh::pg::job_queue queue(pool, {unique_table("deadline"), true, 200ms});
  queue.create_schema();
  struct drop {
    std::string table;
    ~drop() {
      try {
        exec("DROP TABLE IF EXISTS " + table);
        exec("DROP SEQUENCE IF EXISTS " + table + "_token_seq");
      } catch (...) {
      }
    }
  } dropper{queue.table()};
  {
    auto c = pool.acquire();
    pqxx::work w(*c);
    REQUIRE(queue.enqueue(w, {"q", "a", {}, 0ms, 5}));
    w.commit();
  }
  const auto jobs = queue.claim("q", 1, 30s);
  REQUIRE(jobs.size() == 1);
  auto held = pool.acquire();
  // Each call runs on a thread of its own and must end well within a bounded wait; a call
  // that blocked past it is reported, then let go by giving the connection back.
  const auto timed_out = [&](std::string what, auto call) {
    CAPTURE(what);
    auto result = std::async(std::launch::async, [&] {
      try {
        call();
      } catch (const lakh::pg::acquire_error &e) {
        return e.status();
      }
      return lakh::status::ok;
    });
    const bool ended = result.wait_for(5s) == std::future_status::ready;
    CHECK(ended);
    if (!ended) {
      held = lakh::pg::pooled_connection();
    }
    return result.get() == lakh::status::timeout;
  };
  CHECK(timed_out("create_schema", [&] { queue.create_schema(); }));
  CHECK(timed_out("claim", [&] { queue.claim("q", 1, 30s); }));
  CHECK(timed_out("heartbeat", [&] { queue.heartbeat(jobs[0], 30s); }));
  CHECK(timed_out("complete", [&] { (void)queue.complete(jobs[0]); }));
  CHECK(timed_out("fail", [&] { queue.fail(jobs[0], "x"); }));
  CHECK(timed_out("rescue_expired", [&] { queue.rescue_expired(); }));
  CHECK(timed_out("list", [&] { queue.list("dead"); }));
  CHECK(timed_out("retry_dead", [&] { queue.retry_dead(jobs[0].id); }));
  CHECK(timed_out("cancel", [&] { queue.cancel(jobs[0].id); }));
  CHECK(timed_out("delete_dead", [&] { queue.delete_dead(jobs[0].id); }));
  CHECK(timed_out("delete_finished", [&] { queue.delete_finished(0ms); }));
  CHECK(timed_out("health", [&] { queue.health(); }));
  held = lakh::pg::pooled_connection();
  CHECK(queue.complete(jobs[0])); // none of them ran
  CHECK_THROWS_WITH_AS(lakh::pg::job_queue(pool, {"t", true, 0ms}),
                       "lakh::pg::job_queue: acquire_timeout (0 ms) must be positive",
                       std::invalid_argument);
}

TEST_CASE("pg.job_queue.enqueue_rolls_back_with_the_callers_transaction") {
  fixture f("rollback");
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    REQUIRE(f.queue.enqueue(w, {"q", "lost", {}, 0ms, 5}).has_value());
    w.abort();
  }
  CHECK(f.queue.claim("q", 10, 30s).empty());
  CHECK(scalar("SELECT count(*) FROM " + f.queue.table()) == 0);
}

TEST_CASE("pg.job_queue.claims_skip_locked_rows_and_never_overlap" * doctest::timeout(60)) {
  fixture f("overlap");
  {
    std::vector<std::string> payloads;
    for (int i = 1; i <= 2000; ++i) {
      payloads.push_back(std::to_string(i));
    }
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    CHECK(f.queue.enqueue_bulk(w, "q", payloads) == 2000);
    w.commit();
  }
  std::vector<std::vector<lakh::pg::claimed_job>> got(4);
  {
    std::vector<std::jthread> ts;
    for (std::size_t t = 0; t < got.size(); ++t) {
      ts.emplace_back([&, t] {
        for (;;) {
          auto jobs = f.queue.claim("q", 37, 30s);
          if (jobs.empty()) {
            return;
          }
          got[t].insert(got[t].end(), jobs.begin(), jobs.end());
        }
      });
    }
  }
  std::vector<int> seen(2001, 0);
  long long sum = 0;
  for (const auto &v : got) {
    for (const auto &j : v) {
      ++seen[static_cast<std::size_t>(std::stoi(j.payload))];
      sum += std::stoi(j.payload);
    }
  }
  CHECK(sum == 2000LL * 2001 / 2);
  CHECK(std::count(seen.begin() + 1, seen.end(), 1) == 2000);
}

TEST_CASE("pg.job_queue.stalled_worker_is_rescued_and_fenced" * doctest::timeout(60)) {
  fixture f("fence");
  auto id = f.enqueue({"q", "p", {}, 0ms, 5});
  REQUIRE(id);
  auto stalled = f.queue.claim("q", 1, 200ms);
  REQUIRE(stalled.size() == 1);
  CHECK(f.queue.rescue_expired(0ms) == 0); // lease still valid
  std::this_thread::sleep_for(400ms);
  CHECK(f.queue.rescue_expired(0ms) == 1);
  auto rerun = f.queue.claim("q", 1, 30s);
  REQUIRE(rerun.size() == 1);
  CHECK(rerun[0].id == *id);
  CHECK(rerun[0].attempts == 2);
  CHECK(rerun[0].token != stalled[0].token);
  // The stalled worker wakes up: everything it tries is refused.
  CHECK_FALSE(f.queue.heartbeat(stalled[0], 30s));
  CHECK_FALSE(f.queue.complete(stalled[0]));
  CHECK(f.queue.fail(stalled[0], "late", 0ms) == lakh::pg::fail_outcome::refused);
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    CHECK(f.queue.complete_batch(w, stalled).empty());
    w.commit();
  }
  CHECK(f.state_of(*id) == "running");
  CHECK(f.queue.complete(rerun[0]));
  CHECK(f.state_of(*id) == "done");
}

TEST_CASE("pg.job_queue.retry_backoff_then_dead_letter") {
  fixture f("dead");
  auto id = f.enqueue({"q", "p", {}, 0ms, 3});
  REQUIRE(id);
  for (int attempt = 1; attempt <= 3; ++attempt) {
    CAPTURE(attempt);
    auto jobs = f.queue.claim("q", 1, 30s);
    REQUIRE(jobs.size() == 1);
    CHECK(jobs[0].attempts == attempt);
    const auto expect =
        attempt < 3 ? lakh::pg::fail_outcome::retried : lakh::pg::fail_outcome::dead;
    CHECK(f.queue.fail(jobs[0], "boom " + std::to_string(attempt), 0ms) == expect);
  }
  CHECK(f.state_of(*id) == "dead");
  CHECK(f.queue.claim("q", 1, 30s).empty());
  CHECK(scalar("SELECT count(*) FROM " + f.queue.table() +
               " WHERE last_error = 'boom 3' AND finished_at IS NOT NULL") == 1);
  CHECK(f.queue.health().dead == 1);

  // A backoff moves run_at into the future: not claimable until then.
  auto later = f.enqueue({"q", "later", {}, 0ms, 5});
  auto jobs = f.queue.claim("q", 1, 30s);
  REQUIRE(jobs.size() == 1);
  CHECK(f.queue.fail(jobs[0], "retry me", 60s) == lakh::pg::fail_outcome::retried);
  CHECK(f.queue.claim("q", 1, 30s).empty());
  CHECK(scalar("SELECT count(*) FROM " + f.queue.table() + " WHERE id = " + std::to_string(*later) +
               " AND run_at > now() + interval '50 seconds'") == 1);
  // A delayed enqueue likewise.
  REQUIRE(f.enqueue({"q", "delayed", {}, 60s, 5}));
  CHECK(f.queue.claim("q", 5, 30s).empty());
}

TEST_CASE("pg.job_queue.unique_key_refuses_live_duplicates") {
  fixture f("unique");
  auto first = f.enqueue({"invoices", "t1", "tenant-1:2026-01", 0ms, 5});
  REQUIRE(first);
  CHECK_FALSE(f.enqueue({"invoices", "t1 again", "tenant-1:2026-01", 0ms, 5}).has_value());
  CHECK(f.enqueue({"other", "same key, other queue", "tenant-1:2026-01", 0ms, 5}).has_value());
  auto jobs = f.queue.claim("invoices", 1, 30s);
  REQUIRE(jobs.size() == 1);
  CHECK_FALSE(f.enqueue({"invoices", "while running", "tenant-1:2026-01", 0ms, 5}).has_value());
  CHECK(f.queue.complete(jobs[0]));
  CHECK(f.enqueue({"invoices", "after done", "tenant-1:2026-01", 0ms, 5}).has_value());
}

TEST_CASE("pg.job_queue.bad_input_is_refused_and_nothing_written") {
  fixture f("bad");
  lakh::pg::pool pool(lakh::test::database_url(), 1);
  CHECK_THROWS_WITH_AS(lakh::pg::job_queue(pool, {"Bad-Name"}),
                       "lakh::pg::job_queue: table name \"Bad-Name\" must be a lower-case "
                       "identifier ([a-z_][a-z0-9_]*, at most 63 bytes), optionally "
                       "schema-qualified",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)f.queue.claim("q", 0, 30s),
                       "lakh::pg::job_queue::claim: n (0) must be within 1..10000",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)f.queue.claim("q", -5, 30s), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)f.queue.claim("q", 1, -1ms),
                       "lakh::pg::job_queue::claim: lease (-1 ms) must be positive",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)f.queue.claim("", 1, 1s),
                       "lakh::pg::job_queue::claim: queue name (0 bytes) must be 1..128 bytes",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)f.enqueue({std::string(129, 'q'), "p", {}, 0ms, 5}), std::invalid_argument);
  CHECK_THROWS_AS((void)f.enqueue({"q", "p", std::string(), 0ms, 5}), std::invalid_argument);
  CHECK_THROWS_AS((void)f.enqueue({"q", "p", std::string(257, 'k'), 0ms, 5}),
                  std::invalid_argument);
  CHECK_THROWS_AS((void)f.enqueue({"q", "p", {}, -1ms, 5}), std::invalid_argument);
  CHECK_THROWS_AS((void)f.enqueue({"q", "p", {}, 0ms, 0}), std::invalid_argument);
  CHECK_THROWS_AS((void)f.enqueue({"q", std::string("a\0b", 3), {}, 0ms, 5}),
                  std::invalid_argument);
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    CHECK_THROWS_AS((void)f.queue.enqueue_bulk(w, "q", {"ok", std::string("a\0b", 3)}),
                    std::invalid_argument);
    w.commit();
  }
  CHECK(scalar("SELECT count(*) FROM " + f.queue.table()) == 0);
}

TEST_CASE("pg.job_queue.100k_jobs_8_workers_2_processes_each_exactly_once" *
          doctest::timeout(300)) {
  fixture f("bulk");
  constexpr long long n = 100'000;
  const std::string log = f.queue.table() + "_log";
  exec("CREATE TABLE " + log + " (job_id bigint PRIMARY KEY, value bigint NOT NULL)");
  {
    std::vector<std::string> payloads;
    payloads.reserve(n);
    for (long long i = 1; i <= n; ++i) {
      payloads.push_back(std::to_string(i));
    }
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    REQUIRE(f.queue.enqueue_bulk(w, "bulk", payloads) == static_cast<std::size_t>(n));
    w.commit();
  }
  std::vector<lakh::test::child_process> workers;
  for (int p = 0; p < 2; ++p) {
    workers.push_back(lakh::test::spawn_child(
        {LAKH_JOB_WORKER, lakh::test::database_url(), f.queue.table(), "bulk", log, "4", "500"}));
  }
  long long completed = 0;
  for (auto &w : workers) {
    for (const auto &line : lakh::test::finish_child(w)) {
      INFO(line);
      REQUIRE(line.rfind("completed ", 0) == 0);
      completed += std::stoll(line.substr(10));
    }
  }
  CHECK(completed == n);
  CHECK(scalar("SELECT count(*) FROM " + log) == n); // job_id is the primary key: no repeats
  CHECK(scalar("SELECT sum(value) FROM " + log) == n * (n + 1) / 2);
  CHECK(scalar("SELECT count(*) FROM " + f.queue.table() + " WHERE state = 'done'") == n);
  exec("DROP TABLE IF EXISTS " + log);
}

TEST_CASE("pg.job_queue.fail_after_thousands_of_attempts_schedules_at_the_cap") {
  fixture f("overflow");
  auto id = f.enqueue({"q", "p", {}, 0ms, 1'000'000});
  REQUIRE(id);
  auto jobs = f.queue.claim("q", 1, 30s);
  REQUIRE(jobs.size() == 1);
  // 2^1999 does not fit a float8: the uncapped exponent raised 22003 on every call.
  exec("UPDATE " + f.queue.table() + " SET attempts = 2000 WHERE id = " + std::to_string(*id));
  CHECK(f.queue.fail(jobs[0], "again", 1s) == lakh::pg::fail_outcome::retried);
  CHECK(scalar("SELECT count(*) FROM " + f.queue.table() + " WHERE id = " + std::to_string(*id) +
               " AND state = 'pending' AND run_at BETWEEN now() + interval '23 hours 59 minutes' "
               "AND now() + interval '1 day 1 minute'") == 1);
}

TEST_CASE("pg.job_queue.a_rescued_job_waits_its_backoff") {
  fixture f("rescue_backoff");
  auto id = f.enqueue({"q", "p", {}, 0ms, 5});
  REQUIRE(id);
  REQUIRE(f.queue.claim("q", 1, 50ms).size() == 1);
  std::this_thread::sleep_for(150ms);
  // Its worker likely crashed on it: the next worker gets it after backoff * 2^(attempts-1).
  CHECK(f.queue.rescue_expired(60s) == 1);
  CHECK(f.state_of(*id) == "pending");
  CHECK(f.queue.claim("q", 1, 30s).empty());
  CHECK(scalar("SELECT count(*) FROM " + f.queue.table() + " WHERE id = " + std::to_string(*id) +
               " AND run_at > now() + interval '50 seconds' AND last_error = 'lease expired'") ==
        1);
}

TEST_CASE("pg.job_queue.delete_finished_removes_dead_jobs_only_when_asked") {
  fixture f("prune");
  auto done = f.enqueue({"q", "done", {}, 0ms, 5});
  auto dead = f.enqueue({"q", "dead", {}, 0ms, 1});
  auto pending = f.enqueue({"q", "pending", {}, 1h, 5});
  REQUIRE((done && dead && pending));
  auto jobs = f.queue.claim("q", 2, 30s);
  REQUIRE(jobs.size() == 2);
  CHECK(f.queue.complete(jobs[0]));
  CHECK(f.queue.fail(jobs[1], "boom", 0ms) == lakh::pg::fail_outcome::dead);
  CHECK(f.queue.delete_finished(0ms) == 1); // the done job; dead jobs stay by default
  CHECK(f.state_of(*dead) == "dead");
  CHECK(f.queue.delete_finished(1h, 10, lakh::pg::finished_jobs::done_and_dead) == 0); // recent
  CHECK(f.queue.delete_finished(0ms, 10, lakh::pg::finished_jobs::done_and_dead) == 1);
  CHECK(scalar("SELECT count(*) FROM " + f.queue.table()) == 1);
  CHECK(f.state_of(*pending) == "pending");
}
