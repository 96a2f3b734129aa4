// Integration tests of lakh::pg::batched_transaction and retrier::run_batched against a real
// PostgreSQL: queued statements run in the transaction and only there, an error in one is
// thrown where it is sent and leaves nothing behind, a lost connection during COMMIT is in
// doubt, values survive quoting, and the retrier retries a batched transaction.
#include <lakh/pg/batched_transaction.hpp>
#include <lakh/pg/pool.hpp>
#include <lakh/pg/retry.hpp>

#include <support/lsan_libpqxx.hpp>
#include <support/scratch_database.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

using namespace std::chrono_literals;
namespace pg = lakh::pg;
using lakh::test::database_url;
using lakh::test::pg::exec;
using lakh::test::pg::scalar;
using lakh::test::pg::unique_name;

namespace {

/// A table of (id int PRIMARY KEY), dropped at scope exit.
struct ids_table {
  ids_table() : name(unique_name("lakh_batched")) {
    exec(database_url(), "CREATE TABLE " + name + " (id int PRIMARY KEY)");
  }
  ~ids_table() {
    try {
      exec(database_url(), "DROP TABLE IF EXISTS " + name);
    } catch (...) {
    }
  }
  [[nodiscard]] long rows() const {
    return scalar<long>(database_url(), "SELECT count(*) FROM " + name);
  }
  std::string name;
};

/// True when `c` is idle outside any transaction: a statement runs and a new transaction on
/// it sees the server's own view (no aborted block is left over).
bool usable(pqxx::connection &c) {
  pqxx::work w(c);
  const bool ok = w.exec("SELECT 1")[0][0].as<int>() == 1;
  w.commit();
  return ok;
}

} // namespace

TEST_CASE("pg.batched.queued_statements_run_in_the_transaction_and_commit_together") {
  ids_table t;
  pqxx::connection c(database_url());
  {
    pg::batched_transaction tx(c);
    tx.defer("INSERT INTO " + t.name + " VALUES (1)");
    tx.defer("INSERT INTO " + t.name + " VALUES (2) -- a trailing comment ends at the separator");
    // exec sends BEGIN, both inserts and the count in one message: it sees its own writes...
    CHECK(tx.exec("SELECT count(*) FROM " + t.name)[0][0].as<int>() == 2);
    CHECK(t.rows() == 0); // ...which no other session sees before the commit
    tx.defer("INSERT INTO " + t.name + " VALUES (3)");
    CHECK(t.rows() == 0);
    tx.commit(); // the third insert travels with COMMIT
  }
  CHECK(t.rows() == 3);
  CHECK(usable(c));
}

TEST_CASE("pg.batched.not_committed_is_rolled_back") {
  ids_table t;
  pqxx::connection c(database_url());
  {
    pg::batched_transaction tx(c);
    tx.defer("INSERT INTO " + t.name + " VALUES (1)");
    CHECK(tx.exec("SELECT count(*) FROM " + t.name)[0][0].as<int>() == 1);
  } // destroyed without commit
  CHECK(t.rows() == 0);
  CHECK(usable(c));
  {
    pg::batched_transaction tx(c);
    tx.defer("INSERT INTO " + t.name + " VALUES (1)");
    CHECK(tx.exec("SELECT count(*) FROM " + t.name)[0][0].as<int>() == 1);
    tx.abort();
    CHECK_THROWS_AS(tx.exec("SELECT 1"), std::logic_error);
  }
  CHECK(t.rows() == 0);
  {
    pg::batched_transaction tx(c);
    tx.defer("INSERT INTO " + t.name + " VALUES (1)");
  } // queued, never sent
  CHECK(t.rows() == 0);
  CHECK(usable(c));
}

TEST_CASE("pg.batched.an_error_in_a_queued_statement_is_thrown_at_commit_and_nothing_commits") {
  ids_table t;
  exec(database_url(), "INSERT INTO " + t.name + " VALUES (7)");
  pqxx::connection c(database_url());
  {
    pg::batched_transaction tx(c);
    tx.defer("INSERT INTO " + t.name + " VALUES (1)");
    CHECK(tx.exec("SELECT count(*) FROM " + t.name)[0][0].as<int>() == 2);
    tx.defer("INSERT INTO " + t.name + " VALUES (7)"); // duplicate key
    tx.defer("INSERT INTO " + t.name + " VALUES (8)");
    CHECK_THROWS_AS(tx.commit(), pqxx::unique_violation);
    CHECK_THROWS_AS(tx.commit(), std::logic_error); // over
  }
  CHECK(t.rows() == 1); // only the row from before
  CHECK(usable(c));
}

TEST_CASE("pg.batched.an_error_in_exec_ends_the_transaction") {
  ids_table t;
  pqxx::connection c(database_url());
  {
    pg::batched_transaction tx(c);
    tx.defer("INSERT INTO " + t.name + " VALUES (1)");
    CHECK_THROWS_AS(tx.exec("SELECT 1 / 0"), pqxx::data_exception);
    CHECK_THROWS_AS(tx.defer("INSERT INTO " + t.name + " VALUES (2)"), std::logic_error);
    CHECK_THROWS_AS(tx.commit(), std::logic_error);
  }
  CHECK(t.rows() == 0);
  CHECK(usable(c));
}

TEST_CASE("pg.batched.connection_lost_during_commit_is_in_doubt") {
  ids_table t;
  pqxx::connection c(database_url());
  pg::batched_transaction tx(c);
  const auto pid = tx.exec("SELECT pg_backend_pid()")[0][0].as<int>();
  tx.defer("INSERT INTO " + t.name + " VALUES (1)");
  exec(database_url(), "SELECT pg_terminate_backend(" + std::to_string(pid) + ")");
  try {
    tx.commit();
    FAIL("commit on a terminated backend succeeded");
  } catch (const pqxx::in_doubt_error &e) {
    CHECK(pg::classify(e) == pg::retry_cause::in_doubt);
  }
  CHECK(t.rows() == 0);
}

TEST_CASE("pg.batched.values_survive_quoting") {
  pqxx::connection c(database_url());
  pg::batched_transaction tx(c);
  for (const std::string v :
       {"it's", "back\\slash", "\"q\" $1 $$x$$ -- no comment", "caf\xc3\xa9 \xe2\x82\xac", ""}) {
    CHECK(tx.exec("SELECT " + tx.quote(v))[0][0].as<std::string>() == v);
  }
  std::string bytes;
  for (int b = 0; b < 256; ++b) {
    bytes.push_back(static_cast<char>(b));
  }
  auto r = tx.exec("SELECT " + pg::batched_transaction::quote_bytes(bytes));
  CHECK(pg::detail::bytea_string(r[0][0]) == bytes);
  CHECK(tx.exec("SELECT " + tx.quote(std::int64_t{-9223372036854775807LL - 1}) + "::bigint")[0][0]
            .as<std::int64_t>() == std::numeric_limits<std::int64_t>::min());
  CHECK(pg::detail::bind("SELECT $2, $1, $10", {"'a'", "'b'", "3", "4", "5", "6", "7", "8", "9",
                                                "'ten'"}) == "SELECT 'b', 'a', 'ten'");
  CHECK_THROWS_AS(pg::detail::bind("SELECT $3", {"1"}), std::out_of_range);
  tx.commit();
}

TEST_CASE("pg.batched.isolation_level_is_the_one_asked_for") {
  pqxx::connection c(database_url());
  {
    pg::batched_transaction tx(c, pqxx::isolation_level::serializable);
    CHECK(tx.exec("SHOW transaction_isolation")[0][0].as<std::string>() == "serializable");
    tx.commit();
  }
  pg::batched_transaction rc(c);
  CHECK(rc.exec("SHOW transaction_isolation")[0][0].as<std::string>() == "read committed");
}

TEST_CASE("pg.batched.retrier_runs_it_again_after_a_lock_timeout" * doctest::timeout(30)) {
  ids_table t;
  pg::pool p(database_url(), 2);
  auto locker = std::make_unique<pqxx::connection>(database_url());
  auto lock = std::make_unique<pqxx::work>(*locker);
  lock->exec("LOCK TABLE " + t.name + " IN ACCESS EXCLUSIVE MODE");
  pg::retry_options o;
  o.backoff = lakh::backoff(1ms, 5ms);
  pg::retrier retry(o);
  int attempts = 0;
  const int n = retry.run_batched(p, [&](pg::batched_transaction &tx) {
    if (++attempts == 2) {
      lock.reset(); // the second attempt finds the table free
    }
    tx.defer("SET LOCAL lock_timeout = '100ms'");
    tx.defer("INSERT INTO " + t.name + " VALUES (1)");
    return tx.exec("SELECT count(*) FROM " + t.name)[0][0].as<int>();
  });
  CHECK(n == 1);
  CHECK(attempts == 2);
  CHECK(retry.stats().retries_for(pg::retry_cause::lock_not_available) == 1);
  CHECK(t.rows() == 1);
}
