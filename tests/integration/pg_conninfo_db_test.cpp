// lakh::pg::with_database against the server: the rewritten string reaches the new database
// as the same user, from the URI that scripts/services exports and from a key=value string.
#include <support/scratch_database.hpp>

#include <lakh/pg/connection.hpp>
#include <lakh/pg/conninfo.hpp>

#include <doctest/doctest.h>

#include <string>

TEST_CASE("pg.conninfo.with_database_connects_to_that_database") {
  const auto url = lakh::test::database_url();
  lakh::test::pg::scratch_database db("lakh_conninfo");
  const auto user = lakh::test::pg::scalar<std::string>(url, "SELECT current_user");
  for (const auto &from : {url, lakh::pg::with_database(url, "postgres")}) {
    CAPTURE(from);
    auto c = lakh::pg::connect(lakh::pg::with_database(from, db.name()));
    pqxx::nontransaction t(*c);
    const auto r = t.exec("SELECT current_database(), current_user");
    CHECK(r[0][0].as<std::string>() == db.name());
    CHECK(r[0][1].as<std::string>() == user);
  }
}
