// Integration tests of lakh::pg advisory locks against a real PostgreSQL: mutual exclusion
// across connections, try-forms, transaction scope, sorted multi-key locking that makes the
// opposite-order workload deadlock-free (pg_stat_database.deadlocks stays 0), and the locks'
// place in lakh's lock order.
#include <lakh/lock_order.hpp>
#include <lakh/pg/advisory_lock.hpp>

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
    CHECK(g.keys() == std::vector<pg::advisory_key>{k1, k2}); // int64 keys before pairs
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
