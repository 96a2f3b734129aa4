// Unit tests (no database) of lakh::pg::classify and the connection-string helpers.
#include <lakh/pg/connection.hpp>
#include <lakh/pg/retry.hpp>

#include <doctest/doctest.h>
#include <support/pqxx_errors.hpp>

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace pg = lakh::pg;
using pg::retry_cause;

TEST_CASE("pg.classify.typed_rollbacks_without_sqlstate") {
  // libpqxx 6.4: these derive from transaction_rollback, not sql_error, and carry no SQLSTATE.
  CHECK(pg::classify(lakh::test::pqxx_error<pqxx::deadlock_detected>("deadlock detected")) ==
        retry_cause::deadlock);
  CHECK(pg::classify(lakh::test::pqxx_error<pqxx::serialization_failure>("could not serialize")) ==
        retry_cause::serialization);
  CHECK(pg::classify(lakh::test::pqxx_error<pqxx::statement_completion_unknown>("?")) ==
        retry_cause::in_doubt);
  CHECK(pg::classify(pqxx::in_doubt_error("?")) == retry_cause::in_doubt);
  CHECK(pg::classify(pqxx::transaction_rollback("40000")) == retry_cause::not_retryable);
}

TEST_CASE("pg.classify.connections") {
  CHECK(pg::classify(pqxx::broken_connection("server closed the connection")) ==
        retry_cause::connection_lost);
  CHECK(pg::classify(pg::connect_error("h:1/db", "refused")) == retry_cause::connection_lost);
  CHECK(pg::classify(pqxx::sql_error("terminating connection", "", "57P01")) ==
        retry_cause::connection_lost);
  CHECK(pg::classify(pqxx::sql_error("connection failure", "", "08006")) ==
        retry_cause::connection_lost);
}

TEST_CASE("pg.classify.by_sqlstate") {
  CHECK(pg::classify(pqxx::sql_error("lock timeout", "SELECT", "55P03")) ==
        retry_cause::lock_not_available);
  CHECK(pg::classify(pqxx::sql_error("canceling statement", "", "57014")) ==
        retry_cause::query_canceled);
  // 7.x shape: rollbacks as sql_error with a SQLSTATE
  CHECK(pg::classify(pqxx::sql_error("deadlock", "", "40P01")) == retry_cause::deadlock);
  CHECK(pg::classify(pqxx::sql_error("serialize", "", "40001")) == retry_cause::serialization);
  CHECK(pg::classify(pqxx::sql_error("unknown", "", "40003")) == retry_cause::in_doubt);
  CHECK(pg::classify(pqxx::unique_violation("duplicate key", "", "23505")) ==
        retry_cause::not_retryable);
  CHECK(pg::classify(pqxx::sql_error("no state")) == retry_cause::not_retryable);
  CHECK(pg::classify(std::runtime_error("not pqxx")) == retry_cause::not_retryable);
  CHECK(pg::classify(std::bad_alloc()) == retry_cause::not_retryable);
}

TEST_CASE("pg.classify.retryable_set_and_names") {
  CHECK(pg::is_retryable(retry_cause::deadlock));
  CHECK(pg::is_retryable(retry_cause::serialization));
  CHECK(pg::is_retryable(retry_cause::lock_not_available));
  CHECK(pg::is_retryable(retry_cause::connection_lost));
  CHECK_FALSE(pg::is_retryable(retry_cause::in_doubt));
  CHECK_FALSE(pg::is_retryable(retry_cause::query_canceled));
  CHECK_FALSE(pg::is_retryable(retry_cause::not_retryable));
  CHECK(pg::to_string(retry_cause::lock_not_available) == "lock_not_available");
  CHECK(pg::to_string(retry_cause::in_doubt) == "in_doubt");
}

TEST_CASE("pg.connection.describe_target_never_shows_the_password") {
  CHECK(pg::describe_target("postgresql://alice:pw@db.example:6432/ledger?sslmode=disable") ==
        "db.example:6432/ledger");
  CHECK(pg::describe_target("postgres://alice@[::1]:5433/app") == "[::1]:5433/app");
  CHECK(pg::describe_target("postgresql://u@h1:1,h2:2/db") == "h1:1,h2:2/db");
  CHECK(pg::describe_target("postgresql://u@h1,[::1]:7/db?target_session_attrs=read-write") ==
        "h1,[::1]:7/db"); // h1: the default port
  CHECK(pg::describe_target("postgresql://u@/db?host=/tmp/sock&port=7") == "/tmp/sock:7/db");
  CHECK(pg::describe_target("host=10.0.0.1 port=5544 dbname='my db' password='p w'") ==
        "10.0.0.1:5544/my db");
  CHECK(pg::describe_target("postgresql://u:p%40ss@h:1/d%20b") == "h:1/d b");
  CHECK(pg::describe_target("service=billing") == "service=billing");
  CHECK(pg::describe_target("service=billing dbname=ledger") == "service=billing/ledger");
  CHECK(pg::describe_target("service=billing host=h") == "h");
  // What the string leaves out comes from libpq's defaults, the environment among them.
  ::setenv("PGHOST", "envhost", 1);
  ::setenv("PGPORT", "7777", 1);
  CHECK(pg::describe_target("dbname=ledger") == "envhost:7777/ledger");
  CHECK(pg::describe_target("postgresql:///ledger") == "envhost:7777/ledger");
  CHECK(pg::describe_target("postgresql://h/ledger") == "h:7777/ledger");
  ::unsetenv("PGHOST");
  ::unsetenv("PGPORT");
  CHECK(pg::detail::redact("auth failed for p@ss and p@ss", "p@ss") ==
        "auth failed for *** and ***");
  CHECK(pg::detail::redact("nothing", "") == "nothing");
  pg::connect_error e("h:1/db", "refused");
  CHECK(std::string(e.what()) == "lakh::pg: cannot connect to h:1/db: refused");
  CHECK(pg::detail::quote_identifier("usage") == "\"usage\"");
  CHECK(pg::detail::quote_identifier("s.t") == "\"s\".\"t\"");
  CHECK(pg::detail::quote_identifier("a\"b") == "\"a\"\"b\"");
}
