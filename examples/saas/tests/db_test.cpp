// Tests of the SaaS services' database helpers (common/db.hpp) against a real PostgreSQL:
// tenant_read scopes the tenant to its one statement, and with a call's deadline neither the
// wait for a connection nor the statement outlives it.
#include "../common/db.hpp"

#include <lakh/pg/pool.hpp>

#include <support/lsan_libpqxx.hpp>
#include <support/scratch_database.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <string>

using namespace std::chrono_literals;
using clock_type = std::chrono::system_clock;
using lakh::test::database_url;

TEST_CASE("saas.db.tenant_read_sets_the_tenant_for_its_statement_only") {
  lakh::pg::pool p(database_url(), 1);
  auto r = saas::tenant_read(p, 42, "SELECT current_setting('app.tenant_id')");
  CHECK(r.at(0)[0].as<std::string>() == "42");
  // The same (only) connection, next message: the setting ended with the implicit transaction.
  lakh::pg::with_connection(p, [](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    CHECK(n.exec("SELECT coalesce(current_setting('app.tenant_id', true), '')")[0][0]
              .as<std::string>()
              .empty());
  });
}

TEST_CASE("saas.db.tenant_read_cancels_a_statement_at_the_deadline") {
  lakh::pg::pool p(database_url(), 1);
  const auto before = lakh::pg::with_connection(p, [](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    return n.exec("SHOW statement_timeout")[0][0].as<std::string>();
  });
  const auto t0 = clock_type::now();
  try {
    (void)saas::tenant_read(p, 1, "SELECT pg_sleep(5)", t0 + 300ms);
    FAIL("a five-second statement finished before a 300 ms deadline");
  } catch (const pqxx::sql_error &e) {
    CHECK(e.sqlstate() == "57014"); // query_canceled: statement_timeout
  }
  const auto took = clock_type::now() - t0;
  CHECK(took >= 250ms);
  CHECK(took < 3s);
  // The connection went back usable, and the timeout was the one statement's only.
  const auto after = lakh::pg::with_connection(p, [](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    return n.exec("SHOW statement_timeout")[0][0].as<std::string>();
  });
  CHECK(after == before);
  CHECK(saas::tenant_read(p, 1, "SELECT 5", clock_type::now() + 5s).at(0)[0].as<int>() == 5);
}

TEST_CASE("saas.db.tenant_read_waits_for_a_connection_until_the_deadline") {
  lakh::pg::pool p(database_url(), 1);
  auto held = p.acquire();
  REQUIRE(held);
  const auto t0 = clock_type::now();
  try {
    (void)saas::tenant_read(p, 1, "SELECT 1", t0 + 200ms);
    FAIL("a read got a connection from an exhausted pool");
  } catch (const lakh::pg::acquire_error &e) {
    CHECK(e.status() == lakh::status::timeout);
  }
  const auto took = clock_type::now() - t0;
  CHECK(took >= 150ms);
  CHECK(took < 2s);
}
