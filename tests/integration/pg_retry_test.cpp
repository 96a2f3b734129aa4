// Integration tests of lakh::pg::retrier and lakh::pg::classify against a real PostgreSQL:
// real 40P01 deadlocks, real 40001 write skew, real 55P03 lock timeouts, real lost
// connections.
#include <lakh/pg/pool.hpp>
#include <lakh/pg/retry.hpp>

#include <support/lsan_libpqxx.hpp>
#include <support/scratch_database.hpp>

#include <doctest/doctest.h>
#include <support/pqxx_errors.hpp>

#include <atomic>
#include <barrier>
#include <chrono>
#include <memory>
#include <stop_token>
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

pg::retry_options fast(unsigned attempts) {
  pg::retry_options o;
  o.max_attempts = attempts;
  o.backoff = lakh::backoff(1ms, 20ms);
  return o;
}

/// A table with rows (1, 0) and (2, 0), dropped at scope exit.
struct two_rows {
  explicit two_rows(std::string url_) : url(std::move(url_)), name(unique_name("lakh_rows")) {
    exec(url, "CREATE TABLE " + name + " (id int PRIMARY KEY, v bigint NOT NULL)");
    exec(url, "INSERT INTO " + name + " VALUES (1, 0), (2, 0)");
  }
  ~two_rows() {
    try {
      exec(url, "DROP TABLE IF EXISTS " + name);
    } catch (...) {
    }
  }
  std::string url;
  std::string name;
};

/// Holds an ACCESS EXCLUSIVE lock on `table` until destroyed.
struct table_locker {
  table_locker(const std::string &url, const std::string &table) : conn(url), tx(conn) {
    tx.exec("LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE");
  }
  pqxx::connection conn;
  pqxx::work tx;
};

} // namespace

TEST_CASE("pg.deadlock.opposite_order_without_lakh_is_a_real_40P01" * doctest::timeout(60)) {
  lakh::test::pg::scratch_database db("lakh_dl_raw");
  two_rows t(db.url());
  auto before = db.deadlocks();
  std::atomic<int> deadlocks{0};
  std::atomic<int> commits{0};
  {
    std::barrier sync(2);
    auto worker = [&](int first, int second) {
      pqxx::connection c(db.url());
      try {
        pqxx::work tx(c);
        tx.exec("SET LOCAL deadlock_timeout = '100ms'");
        tx.exec("UPDATE " + t.name + " SET v = v + 1 WHERE id = " + std::to_string(first));
        sync.arrive_and_wait();
        tx.exec("UPDATE " + t.name + " SET v = v + 1 WHERE id = " + std::to_string(second));
        tx.commit();
        ++commits;
      } catch (const pqxx::deadlock_detected &e) {
        CHECK(pg::classify(e) == pg::retry_cause::deadlock);
        CHECK(std::string(e.what()).find("deadlock detected") != std::string::npos);
        ++deadlocks;
      }
    };
    std::jthread a(worker, 1, 2);
    std::jthread b(worker, 2, 1);
  }
  // Usually one side is aborted. On a loaded machine both deadlock checks can run before the
  // first victim has released its locks, and then both are (ASan CI saw it).
  CHECK(deadlocks.load() >= 1);
  CHECK(deadlocks.load() + commits.load() == 2);
  CHECK(db.deadlocks() - before == deadlocks.load()); // the server counted them too
}

TEST_CASE("pg.retry.deadlock_is_retried_to_success" * doctest::timeout(60)) {
  lakh::test::pg::scratch_database db("lakh_dl_retry");
  two_rows t(db.url());
  pg::pool p(db.url(), 2);
  pg::retrier r(fast(5));
  {
    std::barrier sync(2);
    auto worker = [&](int first, int second) {
      bool synced = false;
      r.run(p, [&](pqxx::work &tx) {
        tx.exec("SET LOCAL deadlock_timeout = '100ms'");
        tx.exec("UPDATE " + t.name + " SET v = v + 1 WHERE id = " + std::to_string(first));
        if (!synced) { // only the first attempt meets the other thread
          synced = true;
          sync.arrive_and_wait();
        }
        tx.exec("UPDATE " + t.name + " SET v = v + 1 WHERE id = " + std::to_string(second));
      });
    };
    std::jthread a(worker, 1, 2);
    std::jthread b(worker, 2, 1);
  }
  auto s = r.stats();
  CHECK(s.successes == 2);
  CHECK(s.failures == 0);
  // One victim, or both when their deadlock checks ran at once (see above): each is retried.
  const auto retried = s.retries_for(pg::retry_cause::deadlock);
  CHECK(retried >= 1);
  CHECK(retried <= 2);
  CHECK(s.attempts == 2 + retried);
  CHECK(scalar<long>(db.url(), "SELECT sum(v) FROM " + t.name) == 4); // both committed once
}

TEST_CASE("pg.retry.serialization_write_skew_is_retried_and_counted" * doctest::timeout(60)) {
  // Two doctors on call; each goes off call if someone else is still on. Under SERIALIZABLE
  // the write skew fails one commit (40001); the retry sees the other's update and keeps
  // its doctor on call.
  auto url = database_url();
  auto table = unique_name("lakh_oncall");
  exec(url, "CREATE TABLE " + table + " (id int PRIMARY KEY, on_call bool NOT NULL)");
  exec(url, "INSERT INTO " + table + " VALUES (1, true), (2, true)");
  pg::pool p(url, 2);
  pg::retrier r(fast(5));
  {
    std::barrier sync(2);
    auto worker = [&](int id) {
      bool synced = false;
      bool went_off = r.run<pqxx::isolation_level::serializable>(
          p, [&](pqxx::transaction<pqxx::isolation_level::serializable> &tx) {
            auto on = tx.exec("SELECT count(*) FROM " + table + " WHERE on_call")[0][0].as<int>();
            if (!synced) {
              synced = true;
              sync.arrive_and_wait();
            }
            if (on >= 2) {
              tx.exec("UPDATE " + table + " SET on_call = false WHERE id = " + std::to_string(id));
              return true;
            }
            return false;
          });
      (void)went_off;
    };
    std::jthread a(worker, 1);
    std::jthread b(worker, 2);
  }
  auto s = r.stats();
  CHECK(s.successes == 2);
  CHECK(s.retries_for(pg::retry_cause::serialization) == 1);
  CHECK(s.errors_for(pg::retry_cause::serialization) == 1);
  CHECK(scalar<int>(url, "SELECT count(*) FROM " + table + " WHERE on_call") == 1);
  exec(url, "DROP TABLE " + table);
}

TEST_CASE("pg.retry.unique_violation_is_not_retried") {
  auto url = database_url();
  auto table = unique_name("lakh_uniq");
  exec(url, "CREATE TABLE " + table + " (id int PRIMARY KEY)");
  pg::pool p(url, 1);
  pg::retrier r(fast(5));
  int calls = 0;
  CHECK_THROWS_AS(r.run(p,
                        [&](pqxx::work &tx) {
                          ++calls;
                          tx.exec("INSERT INTO " + table + " VALUES (1), (1)");
                        }),
                  pqxx::unique_violation);
  CHECK(calls == 1);
  auto s = r.stats();
  CHECK(s.attempts == 1);
  CHECK(s.failures == 1);
  CHECK(s.errors_for(pg::retry_cause::not_retryable) == 1);
  CHECK(scalar<int>(url, "SELECT count(*) FROM " + table) == 0);
  // the connection is still good and went back to the pool
  CHECK(p.stats().replaced == 0);
  CHECK(r.run(p, [](pqxx::work &tx) { return tx.exec("SELECT 7")[0][0].as<int>(); }) == 7);
  exec(url, "DROP TABLE " + table);
}

TEST_CASE("pg.retry.lock_not_available_attempt_limit_and_budget" * doctest::timeout(60)) {
  auto url = database_url();
  auto table = unique_name("lakh_locked");
  exec(url, "CREATE TABLE " + table + " (id int)");
  pg::pool p(url, 2);
  auto locked_read = [&](pqxx::work &tx) {
    tx.exec("SET LOCAL lock_timeout = '20ms'");
    tx.exec("SELECT * FROM " + table);
  };
  {
    table_locker hold(url, table);
    SUBCASE("attempt limit") {
      pg::retrier r(fast(3));
      try {
        r.run(p, locked_read);
        FAIL("run should throw");
      } catch (const pqxx::sql_error &e) {
        CHECK(std::string(e.sqlstate()) == "55P03");
        CHECK(pg::classify(e) == pg::retry_cause::lock_not_available);
      }
      auto s = r.stats();
      CHECK(s.attempts == 3);
      CHECK(s.retries_for(pg::retry_cause::lock_not_available) == 2);
      CHECK(s.exhausted_attempts == 1);
      CHECK(s.exhausted_budget == 0);
    }
    SUBCASE("a shared budget stops retrying across calls") {
      auto budget = std::make_shared<lakh::retry_budget>(3.0); // 3 retries, no refill
      auto o = fast(10);
      o.budget = budget;
      pg::retrier r(o);
      CHECK_THROWS_AS(r.run(p, locked_read), pqxx::sql_error);
      CHECK(r.stats().attempts == 4); // 1 + 3 retries, then the budget is empty
      CHECK_THROWS_AS(r.run(p, locked_read), pqxx::sql_error);
      auto s = r.stats();
      CHECK(s.attempts == 5); // no retry at all for the second call
      CHECK(s.exhausted_budget == 2);
      CHECK(s.retries_for(pg::retry_cause::lock_not_available) == 3);
      CHECK(budget->available() < 1.0);
    }
    SUBCASE("stop requested during an attempt: no backoff sleep, the error is rethrown") {
      auto o = fast(10);
      o.backoff = lakh::backoff(30s, 30s); // a sleep would outlast the test's timeout
      pg::retrier r(o);
      std::stop_source ss;
      auto stop_then_fail = [&](pqxx::work &tx) {
        ss.request_stop();
        locked_read(tx);
      };
      CHECK_THROWS_AS(r.run(p, stop_then_fail, ss.get_token()), pqxx::sql_error);
      auto s = r.stats();
      CHECK(s.attempts == 1);
      CHECK(s.cancelled == 1);
    }
  }
  exec(url, "DROP TABLE " + table);
}

TEST_CASE("pg.retry.lost_connection_reconnects_through_the_pool" * doctest::timeout(60)) {
  pg::pool p(database_url(), 1);
  pg::retrier r(fast(3));
  int calls = 0;
  int pid = r.run(p, [&](pqxx::work &tx) {
    if (++calls == 1) {
      tx.exec("SELECT pg_terminate_backend(pg_backend_pid())"); // the server hangs up on us
    }
    return tx.exec("SELECT pg_backend_pid()")[0][0].as<int>();
  });
  CHECK(calls == 2);
  CHECK(pid > 0);
  CHECK(r.stats().retries_for(pg::retry_cause::connection_lost) == 1);
  auto ps = p.stats();
  CHECK(ps.replaced == 1);
  CHECK(ps.created == 2);
}

TEST_CASE("pg.retry.lost_connection_reconnects_through_a_factory" * doctest::timeout(60)) {
  pg::retrier r(fast(3));
  std::atomic<int> made{0};
  pg::connection_factory factory = [&] {
    ++made;
    return pg::connect(database_url());
  };
  int calls = 0;
  r.run(factory, [&](pqxx::work &tx) {
    if (++calls == 1) {
      tx.exec("SELECT pg_terminate_backend(pg_backend_pid())");
    }
  });
  CHECK(calls == 2);
  CHECK(made.load() == 2);
  CHECK(r.stats().successes == 1);
}

TEST_CASE("pg.retry.in_doubt_is_never_retried") {
  pg::pool p(database_url(), 1);
  pg::retrier r(fast(5));
  int calls = 0;
  CHECK_THROWS_AS(r.run(p,
                        [&](pqxx::work &) {
                          ++calls;
                          throw pqxx::in_doubt_error("commit outcome unknown");
                        }),
                  pqxx::in_doubt_error);
  CHECK_THROWS_AS(r.run(p,
                        [&](pqxx::work &) {
                          ++calls;
                          throw lakh::test::pqxx_error<pqxx::statement_completion_unknown>("40003");
                        }),
                  pqxx::statement_completion_unknown);
  CHECK(calls == 2);
  CHECK(r.stats().errors_for(pg::retry_cause::in_doubt) == 2);
  CHECK(r.stats().attempts == 2);
}

TEST_CASE("pg.retry.closed_pool_gives_acquire_error") {
  pg::pool p(database_url(), 1);
  p.close();
  pg::retrier r(fast(5));
  try {
    r.run(p, [](pqxx::work &) {});
    FAIL("run should throw");
  } catch (const pg::acquire_error &e) {
    CHECK(e.status() == lakh::status::closed);
    CHECK(std::string(e.what()).find("(closed)") != std::string::npos);
  }
  CHECK_THROWS_AS(pg::retrier(fast(0)), std::invalid_argument);
}
