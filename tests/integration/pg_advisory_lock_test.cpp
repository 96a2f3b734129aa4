// Integration tests of lakh::pg advisory locks against a real PostgreSQL: mutual exclusion
// across connections, try-forms, transaction scope, sorted multi-key locking that makes the
// opposite-order workload deadlock-free (pg_stat_database.deadlocks stays 0), the locks'
// place in lakh's lock order (one order for lock_all and lock_all_advisory, both key forms
// mixed), and a failed release that closes the connection instead of pooling its locks.
#include <lakh/lock_all.hpp>
#include <lakh/lock_order.hpp>
#include <lakh/pg/advisory_lock.hpp>
#include <lakh/pg/pool.hpp>

#include <support/scratch_database.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace pg = lakh::pg;
using lakh::test::database_url;
using lakh::test::pg::exec;
using lakh::test::pg::scalar;
using lakh::test::pg::unique_name;

namespace {

/// A namespace for this process's keys, so parallel test processes do not share locks.
std::int32_t ns() {
  return static_cast<std::int32_t>(::getpid());
}

bool free_elsewhere(pg::advisory_key k) {
  pqxx::connection c(database_url());
  pqxx::nontransaction tx(c);
  bool got = tx.exec("SELECT pg_try_advisory_lock(" + k.sql_args() + ")")[0][0].as<bool>();
  if (got) {
    tx.exec("SELECT pg_advisory_unlock(" + k.sql_args() + ")");
  }
  return got;
}

/// Advisory locks held now by backend `pid`, seen from another session.
long locks_held_by(int pid) {
  return scalar<long>(database_url(), "SELECT count(*) FROM pg_locks WHERE locktype = "
                                      "'advisory' AND granted AND pid = " +
                                          std::to_string(pid));
}

/// Whether backend `pid` has exited (waits up to 10 s: a closed session ends asynchronously).
bool backend_gone(int pid) {
  for (int i = 0; i < 200; ++i) {
    if (scalar<long>(database_url(), "SELECT count(*) FROM pg_stat_activity WHERE pid = " +
                                         std::to_string(pid)) == 0) {
      return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

/// Waits until backend `pid` runs a statement in wait event `event`, then cancels it
/// (pg_cancel_backend, SQLSTATE 57014 in that session). False if it never got there.
bool cancel_when_waiting(int pid, const std::string &event) {
  for (int i = 0; i < 400; ++i) {
    if (scalar<long>(database_url(),
                     "SELECT count(*) FROM pg_stat_activity WHERE pid = " + std::to_string(pid) +
                         " AND wait_event = '" + event + "'") == 1) {
      return scalar<bool>(database_url(), "SELECT pg_cancel_backend(" + std::to_string(pid) + ")");
    }
    std::this_thread::sleep_for(25ms);
  }
  return false;
}

/// A schema whose pg_try_advisory_lock(int, int) and pg_advisory_unlock(int, int) shadow
/// pg_catalog's in sessions that enter() it (search_path = schema, pg_catalog): the try
/// sleeps for id `sleeps` (so that a cancel hits it mid-way), the unlock of id
/// `refuses_unlock` fails with 57014 and leaves the lock held. Dropped at the end.
struct faulty_functions {
  static constexpr std::int32_t sleeps = 9001;
  static constexpr std::int32_t refuses_unlock = 9002;
  std::string schema = unique_name("lakh_faulty");

  faulty_functions() {
    exec(database_url(), "CREATE SCHEMA " + schema);
    exec(database_url(),
         "CREATE FUNCTION " + schema +
             ".pg_try_advisory_lock(a int, b int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN "
             "IF b = " +
             std::to_string(sleeps) +
             " THEN PERFORM pg_catalog.pg_sleep(60); END IF; "
             "RETURN pg_catalog.pg_try_advisory_lock(a, b); END $$");
    exec(database_url(),
         "CREATE FUNCTION " + schema +
             ".pg_advisory_unlock(a int, b int) RETURNS bool LANGUAGE plpgsql AS $$ BEGIN "
             "IF b = " +
             std::to_string(refuses_unlock) +
             " THEN RAISE EXCEPTION 'unlock refused' USING ERRCODE = 'query_canceled'; END IF; "
             "RETURN pg_catalog.pg_advisory_unlock(a, b); END $$");
  }
  ~faulty_functions() { exec(database_url(), "DROP SCHEMA " + schema + " CASCADE"); }
  faulty_functions(const faulty_functions &) = delete;
  faulty_functions &operator=(const faulty_functions &) = delete;

  void enter(pqxx::connection &c) const {
    pqxx::nontransaction tx(c);
    tx.exec("SET search_path = " + schema + ", pg_catalog");
  }
};

} // namespace

TEST_CASE("pg.advisory.session.mutual_exclusion_across_connections" * doctest::timeout(60)) {
  pg::advisory_key key(ns(), 1);
  pqxx::connection a(database_url());
  pqxx::connection b(database_url());
  {
    pg::session_advisory_lock la(a, key);
    pg::session_advisory_lock lb(b, key);
    la.lock();
    CHECK(la.owns_lock());
    CHECK_FALSE(lb.try_lock());
    CHECK_THROWS_AS(la.lock(), lakh::usage_error); // already held by this object
    la.unlock();
    CHECK(lb.try_lock());
    CHECK_FALSE(free_elsewhere(key));
    CHECK_THROWS_AS(la.unlock(), lakh::usage_error); // not held
  }                                                  // lb's destructor unlocks
  CHECK(free_elsewhere(key));

  for (int threads : {2, 4}) {
    CAPTURE(threads);
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
    long counter = 0; // protected by the advisory lock only
    constexpr int rounds = 15;
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&] {
          pqxx::connection c(database_url());
          pg::session_advisory_lock l(c, pg::advisory_key(ns(), 2));
          for (int i = 0; i < rounds; ++i) {
            l.lock();
            if (inside.fetch_add(1) != 0) {
              ++overlaps;
            }
            long v = counter;
            std::this_thread::yield();
            counter = v + 1;
            inside.fetch_sub(1);
            l.unlock();
          }
        });
      }
    }
    CHECK(overlaps.load() == 0);
    CHECK(counter == threads * rounds);
  }
}

TEST_CASE("pg.advisory.xact.released_at_commit_and_rollback") {
  pg::advisory_key key = pg::advisory_key::hashed(ns(), "invoice-run");
  pqxx::connection a(database_url());
  {
    pqxx::work tx(a);
    pg::xact_advisory_lock l(tx, key);
    l.lock();
    CHECK_FALSE(free_elsewhere(key));
    l.unlock(); // tracking only: the server still holds it
    CHECK_FALSE(free_elsewhere(key));
    tx.commit();
  }
  CHECK(free_elsewhere(key));
  {
    pqxx::work tx(a);
    pg::xact_advisory_lock l(tx, key);
    CHECK(l.try_lock());
    CHECK_FALSE(free_elsewhere(key));
    tx.abort();
  }
  CHECK(free_elsewhere(key));
  {
    pqxx::connection b(database_url());
    pqxx::work holder(b);
    pg::lock_all_advisory(holder, key);
    pqxx::work tx(a);
    pg::xact_advisory_lock l(tx, key);
    CHECK_FALSE(l.try_lock());
  }
}

TEST_CASE("pg.advisory.try_lock_all.is_all_or_nothing") {
  pg::advisory_key k1(ns(), 11), k2(ns(), 12), k3(ns(), 13);
  pqxx::connection holder(database_url());
  pg::session_advisory_lock hold(holder, k2);
  hold.lock();
  pqxx::connection a(database_url());
  {
    pqxx::work tx(a);
    CHECK_FALSE(pg::try_lock_all_advisory(tx, {k3, k2, k1}));
    CHECK(free_elsewhere(k1)); // the savepoint rollback released k1
    CHECK(free_elsewhere(k3));
    tx.exec("SELECT 1"); // the transaction itself is still usable
  }
  {
    auto g = pg::try_lock_all_advisory(a, {k3, k2, k1});
    CHECK_FALSE(g);
    CHECK(free_elsewhere(k1));
  }
  hold.unlock();
  {
    pqxx::work tx(a);
    CHECK(pg::try_lock_all_advisory(tx, {k3, k2, k1}));
    CHECK_FALSE(free_elsewhere(k1));
    CHECK_FALSE(free_elsewhere(k3));
    tx.commit();
  }
  {
    auto g = pg::try_lock_all_advisory(a, {k3, k1, k2, k1});
    REQUIRE(g);
    CHECK(g.keys() == std::vector<pg::advisory_key>{k1, k2, k3}); // sorted, deduplicated
    CHECK_FALSE(free_elsewhere(k2));
  }
  CHECK(free_elsewhere(k1));
  CHECK(free_elsewhere(k2));
  CHECK(free_elsewhere(k3));
}

TEST_CASE("pg.advisory.session_lock_all.sorted_guard_releases") {
  pqxx::connection a(database_url());
  pg::advisory_key k1 = pg::advisory_key::hashed("lakh-test-" + std::to_string(ns()) + "-a");
  pg::advisory_key k2(ns(), 21);
  {
    auto g = pg::lock_all_advisory(a, {k2, k1});
    REQUIRE(g.owns_lock());
    CHECK(g.keys() == std::vector<pg::advisory_key>{std::min(k1, k2), std::max(k1, k2)});
    pqxx::nontransaction tx(a);
    CHECK(tx.exec("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid "
                  "= pg_backend_pid()")[0][0]
              .as<int>() == 2);
  }
  CHECK(free_elsewhere(k1));
  CHECK(free_elsewhere(k2));
}

TEST_CASE("pg.advisory.sorted_locking_makes_opposite_orders_deadlock_free" *
          doctest::timeout(120)) {
  // The workload of pg.deadlock.opposite_order_without_lakh_is_a_real_40P01, N times, with the
  // rows' advisory locks taken first in lakh's order: no 40P01, and the server agrees.
  lakh::test::pg::scratch_database db("lakh_dl_ordered");
  auto table = unique_name("lakh_rows");
  exec(db.url(), "CREATE TABLE " + table + " (id int PRIMARY KEY, v bigint NOT NULL)");
  exec(db.url(), "INSERT INTO " + table + " VALUES (1, 0), (2, 0)");
  auto before = db.deadlocks();
  constexpr int iterations = 20;
  std::atomic<int> deadlocks{0};
  {
    std::barrier sync(2);
    auto worker = [&](int first, int second) {
      pqxx::connection c(db.url());
      lakh::lock_order::lock_class rows(100, "test.rows");
      for (int i = 0; i < iterations; ++i) {
        try {
          pqxx::work tx(c);
          tx.exec("SET LOCAL deadlock_timeout = '100ms'");
          sync.arrive_and_wait(); // both start together, each in its own row order
          if (i % 2 == 0) {
            pg::lock_all_advisory(tx, pg::advisory_key(ns(), first),
                                  pg::advisory_key(ns(), second));
            tx.exec("UPDATE " + table + " SET v = v + 1 WHERE id = " + std::to_string(first));
            std::this_thread::sleep_for(2ms); // widen the window a deadlock would need
            tx.exec("UPDATE " + table + " SET v = v + 1 WHERE id = " + std::to_string(second));
          } else {
            pg::xact_advisory_lock a(tx, pg::advisory_key(ns(), first), rows);
            pg::xact_advisory_lock b(tx, pg::advisory_key(ns(), second), rows);
            const auto guard = lakh::lock_all(a, b); // argument order differs per thread
            tx.exec("UPDATE " + table + " SET v = v + 1 WHERE id = " + std::to_string(first));
            std::this_thread::sleep_for(2ms);
            tx.exec("UPDATE " + table + " SET v = v + 1 WHERE id = " + std::to_string(second));
          }
          tx.commit();
        } catch (const pqxx::deadlock_detected &) {
          ++deadlocks;
        }
      }
    };
    std::jthread a(worker, 1, 2);
    std::jthread b(worker, 2, 1);
  }
  CHECK(deadlocks.load() == 0);
  CHECK(scalar<long>(db.url(), "SELECT sum(v) FROM " + table) == 4 * iterations);
  CHECK(db.deadlocks() - before == 0);
}

TEST_CASE("pg.advisory.joins_lakh_lock_order") {
  lakh::lock_order::reset_for_testing();
  lakh::lock_order::scoped_mode mode(lakh::lock_order::mode::throw_error);
  lakh::lock_order::lock_class db_class(100, "test.pg.tenant");
  lakh::ranked_mutex cache_mu(lakh::lock_order::lock_class(200, "test.cache"));
  pqxx::connection c(database_url());
  pg::session_advisory_lock tenant(c, pg::advisory_key(ns(), 31), db_class);

  SUBCASE("lock_all sorts a mutex and an advisory lock by rank") {
    const auto guard = lakh::lock_all(cache_mu, tenant);
    CHECK(guard.acquisition_order() == std::array<std::size_t, 2>{1, 0});
    CHECK(tenant.owns_lock());
    CHECK(lakh::lock_order::is_held(&tenant));
    CHECK_FALSE(free_elsewhere(tenant.key()));
  }
  SUBCASE("a rank inversion through an advisory lock is reported before it blocks") {
    const lakh::lock_guard<lakh::ranked_mutex> held(cache_mu);
    CHECK_THROWS_AS(tenant.lock(), lakh::lock_order_error);
    CHECK_FALSE(tenant.owns_lock());
    CHECK(free_elsewhere(tenant.key())); // not acquired
  }
  CHECK(free_elsewhere(tenant.key()));
  CHECK_FALSE(lakh::lock_order::is_held(&tenant));
}

TEST_CASE("pg.advisory.try_lock_all.cancelled_midway_releases_what_it_took" *
          doctest::timeout(60)) {
  // The second try is cancelled (57014) after the first key was taken: the error propagates
  // and the first key is released, so the session holds nothing.
  const faulty_functions f;
  pqxx::connection a(database_url());
  f.enter(a);
  const int pid = a.backendpid();
  pg::advisory_key first(ns(), 1), second(ns(), faulty_functions::sleeps);
  bool cancelled = false;
  {
    std::jthread canceller([&] { cancelled = cancel_when_waiting(pid, "PgSleep"); });
    CHECK_THROWS_AS((void)pg::try_lock_all_advisory(a, {second, first}), pqxx::sql_error);
  }
  REQUIRE(cancelled);
  CHECK(locks_held_by(pid) == 0);
  CHECK(free_elsewhere(first));
  CHECK(a.is_open()); // released cleanly: the connection stays usable
  auto g = pg::try_lock_all_advisory(a, {first});
  CHECK(g.owns_lock());
}

TEST_CASE("pg.advisory.failed_release_closes_the_connection" * doctest::timeout(60)) {
  // A release that fails leaves the lock held by the session: the connection is closed, so
  // the server drops the lock and the pool replaces the connection instead of lending it.
  const faulty_functions f;
  pg::pool_options o;
  o.url = database_url();
  o.max_size = 1;
  o.on_connect = [&f](pqxx::connection &c) { f.enter(c); };
  pg::pool p(o);
  const pg::advisory_key stuck(ns(), faulty_functions::refuses_unlock);
  const pg::advisory_key other(ns(), 2);
  int pid = 0;
  {
    auto lease = p.acquire();
    REQUIRE(lease);
    pid = lease->backendpid();
    SUBCASE("session_advisory_lock's destructor") {
      pg::session_advisory_lock l(*lease, stuck);
      l.lock();
      CHECK(locks_held_by(pid) == 1);
    }
    SUBCASE("session_advisory_lock::unlock") {
      pg::session_advisory_lock l(*lease, stuck);
      l.lock();
      CHECK_THROWS_AS(l.unlock(), pqxx::sql_error);
      CHECK_FALSE(l.owns_lock());
    }
    SUBCASE("session_advisory_locks::unlock") {
      auto g = pg::lock_all_advisory(*lease, {stuck, other});
      CHECK(locks_held_by(pid) == 2);
      CHECK_THROWS_AS(g.unlock(), pqxx::sql_error);
      CHECK_FALSE(g.owns_lock());
    }
    SUBCASE("lock_all_advisory cancelled, then giving back what it took fails") {
      pqxx::connection holder(database_url());
      pg::session_advisory_lock h(holder, pg::advisory_key(ns(), 9003)); // after `stuck`
      h.lock();
      {
        pqxx::nontransaction tx(*lease);
        tx.exec("SET statement_timeout = '200ms'");
      }
      CHECK_THROWS_AS((void)pg::lock_all_advisory(*lease, {h.key(), stuck}), pqxx::sql_error);
    }
    CHECK_FALSE(lease->is_open());
  }
  CHECK(backend_gone(pid));
  CHECK(locks_held_by(pid) == 0);
  CHECK(free_elsewhere(stuck));
  CHECK(free_elsewhere(other));
  CHECK(p.stats().replaced == 1);
  auto lease = p.acquire();
  REQUIRE(lease);
  CHECK(lease->backendpid() != pid);
}

TEST_CASE("pg.advisory.lock_all_and_lock_all_advisory_share_one_order" * doctest::timeout(60)) {
  // An int64 key and a pair in the order lock_all takes them (the pair first here); every
  // lakh::pg form takes them in that order too, so a holder of the first key makes each
  // form wait while holding nothing (the old order took the int64 key first: a process
  // using lock_all and another using lock_all_advisory deadlocked on such a set).
  lakh::lock_order::reset_for_testing();
  const pg::advisory_key big(INT64_MAX - ns()), pair(ns(), 61);
  pqxx::connection c(database_url());
  pg::advisory_key first = big;
  {
    pg::session_advisory_lock a(c, big), b(c, pair);
    const auto g = lakh::lock_all(a, b);
    first = g.acquisition_order()[0] == 0 ? big : pair;
  }
  CHECK(first == pair);
  const auto sorted = std::vector<pg::advisory_key>{std::min(big, pair), std::max(big, pair)};
  CHECK(sorted.front() == first);
  {
    auto g = pg::lock_all_advisory(c, {big, pair});
    CHECK(g.keys().front() == first);
  }
  // Two different locks with one ordinal (lock_all's instance): the int64 key first in
  // both, whatever the objects' addresses.
  const pg::advisory_key single(std::int64_t{61} ^ std::int64_t{0x80000000});
  const pg::advisory_key twin(0, 61);
  REQUIRE(single.ordinal() == twin.ordinal());
  for (int flip = 0; flip < 2; ++flip) {
    pg::session_advisory_lock locks[2]{{c, flip == 0 ? single : twin},
                                       {c, flip == 0 ? twin : single}};
    const auto g = lakh::lock_all(locks[0], locks[1]);
    CHECK(locks[g.acquisition_order()[0]].key() == single);
  }
  CHECK(pg::lock_all_advisory(c, {twin, single}).keys().front() == single);

  pqxx::connection holder(database_url());
  pg::session_advisory_lock h(holder, first);
  h.lock();
  auto waits_holding_nothing = [&](auto take) {
    pqxx::connection w(database_url());
    const int pid = w.backendpid();
    std::jthread t([&] { take(w); });
    bool waiting = false;
    for (int i = 0; i < 400 && !waiting; ++i) {
      waiting = scalar<long>(database_url(), "SELECT count(*) FROM pg_locks WHERE NOT granted "
                                             "AND pid = " +
                                                 std::to_string(pid)) == 1;
      std::this_thread::sleep_for(10ms);
    }
    const long held = locks_held_by(pid);
    h.unlock();
    t.join();
    h.lock();
    return waiting && held == 0;
  };
  CHECK(waits_holding_nothing([&](pqxx::connection &w) {
    pqxx::work tx(w);
    pg::lock_all_advisory(tx, {big, pair});
  }));
  CHECK(waits_holding_nothing([&](pqxx::connection &w) {
    auto g = pg::lock_all_advisory(w, {big, pair});
  }));
  CHECK(waits_holding_nothing([&](pqxx::connection &w) {
    pg::session_advisory_lock a(w, big), b(w, pair);
    const auto g = lakh::lock_all(a, b);
  }));
}
