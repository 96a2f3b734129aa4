// lakh::pg::with_database: URIs and key=value strings rewritten through libpq's parser (no
// database needed; tests/integration/pg_conninfo_test.cpp connects with the result).
#include <lakh/pg/conninfo.hpp>

#include <libpq-fe.h>

#include <doctest/doctest.h>

#include <map>
#include <stdexcept>
#include <string>

namespace {

/// What libpq reads from `conninfo`: the settings it names, by keyword.
std::map<std::string, std::string> settings(const std::string &conninfo) {
  char *error = nullptr;
  PQconninfoOption *options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    const std::string reason = error != nullptr ? error : "out of memory";
    PQfreemem(error);
    throw std::runtime_error("libpq cannot parse " + conninfo + ": " + reason);
  }
  std::map<std::string, std::string> out;
  for (const PQconninfoOption *o = options; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) {
      out[o->keyword] = o->val;
    }
  }
  PQconninfoFree(options);
  return out;
}

using kv = std::map<std::string, std::string>;

/// The message with_database throws for `conninfo` ("" if it does not throw).
std::string parse_error(const std::string &conninfo) {
  try {
    (void)lakh::pg::with_database(conninfo, "other");
  } catch (const std::invalid_argument &e) {
    return e.what();
  }
  return "";
}

} // namespace

TEST_CASE("pg.conninfo.uri_keeps_every_setting_but_the_database") {
  CHECK(settings(lakh::pg::with_database("postgresql://ann@db.example:5433/ledger?sslmode=require"
                                         "&application_name=billing",
                                         "ledger_test")) == kv{{"user", "ann"},
                                                               {"host", "db.example"},
                                                               {"port", "5433"},
                                                               {"dbname", "ledger_test"},
                                                               {"sslmode", "require"},
                                                               {"application_name", "billing"}});
  // No database in the URI, no path, or the scheme's short form: the name is added.
  CHECK(settings(lakh::pg::with_database("postgres://127.0.0.1:5432", "x")) ==
        kv{{"host", "127.0.0.1"}, {"port", "5432"}, {"dbname", "x"}});
  CHECK(settings(lakh::pg::with_database("postgresql://", "x")) == kv{{"dbname", "x"}});
  // A database named in the query is replaced too; several hosts and a socket directory stay.
  CHECK(settings(lakh::pg::with_database("postgresql:///a?dbname=b&host=%2Ftmp", "c")) ==
        kv{{"host", "/tmp"}, {"dbname", "c"}});
  CHECK(settings(lakh::pg::with_database("postgresql://h1:1,[::1]:2/a", "c")) ==
        kv{{"host", "h1,::1"}, {"port", "1,2"}, {"dbname", "c"}});
}

TEST_CASE("pg.conninfo.passwords_and_names_with_special_characters_survive") {
  // Percent-encoded in the URI: @ : / ? ' \ space and a quote, all decoded by libpq and
  // quoted again in the result.
  const auto out = lakh::pg::with_database(
      "postgresql://ann:p%40ss%3Aw%2Fo%3Frd%27%5C%20%22@h/ledger", "o'k db");
  CHECK(
      settings(out) ==
      kv{{"user", "ann"}, {"password", "p@ss:w/o?rd'\\ \""}, {"host", "h"}, {"dbname", "o'k db"}});
  CHECK(out == R"(user='ann' password='p@ss:w/o?rd\'\\ "' host='h' dbname='o\'k db')");
}

TEST_CASE("pg.conninfo.key_value_form") {
  CHECK(
      settings(lakh::pg::with_database(
          R"(host=localhost port=5432 dbname=postgres user=app password='a b\'c' sslmode=disable)",
          "lakh_test")) == kv{{"host", "localhost"},
                              {"port", "5432"},
                              {"dbname", "lakh_test"},
                              {"user", "app"},
                              {"password", "a b'c"},
                              {"sslmode", "disable"}});
  CHECK(settings(lakh::pg::with_database("", "solo")) == kv{{"dbname", "solo"}});
  CHECK(lakh::pg::with_database("host=h", "d") == "host='h' dbname='d'");
}

TEST_CASE("pg.conninfo.bad_input_is_named_without_the_password") {
  // libpq echoes the offending token or the whole URI: neither may reach the message.
  for (const std::string bad : {"host=h password=sec ret",         // "ret" is read as a keyword
                                "postgresql://ann:sec%zzret@h/db", // invalid percent-encoding
                                "postgresql://ann:secret@h/db?secret=1", // unknown parameter
                                "host=h password='secret"}) {            // unterminated quote
    CAPTURE(bad);
    const auto what = parse_error(bad);
    CHECK(what.rfind("lakh::pg::with_database: libpq cannot parse the connection string: ", 0) ==
          0);
    CHECK(what.find("sec") == std::string::npos);
  }
  CHECK(
      parse_error("host=h nonsense=1") ==
      R"(lakh::pg::with_database: libpq cannot parse the connection string: invalid connection option "***")");
  CHECK_THROWS_WITH_AS((void)lakh::pg::with_database("host=h", ""),
                       "lakh::pg::with_database: the database name is empty",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)lakh::pg::with_database(std::string("host=h\0x", 8), "d"),
                  std::invalid_argument);
}

TEST_CASE("pg.conninfo.connection_defaults_fill_only_what_the_caller_left_unset") {
  const kv defaults{{"keepalives", "1"},
                    {"keepalives_idle", "30"},
                    {"keepalives_interval", "10"},
                    {"keepalives_count", "3"},
                    {"tcp_user_timeout", "60000"}};
  auto with = [&defaults](kv s) {
    s.insert(defaults.begin(), defaults.end());
    return s;
  };
  using lakh::pg::with_connection_defaults;
  CHECK(settings(with_connection_defaults("host=db port=5433 dbname=app")) ==
        with({{"host", "db"}, {"port", "5433"}, {"dbname", "app"}}));
  CHECK(settings(with_connection_defaults("")) == defaults);
  CHECK(settings(with_connection_defaults("postgresql://ann@db:5433/app")) ==
        with({{"user", "ann"}, {"host", "db"}, {"port", "5433"}, {"dbname", "app"}}));
  CHECK(settings(with_connection_defaults("postgres://db/app?sslmode=disable")) ==
        with({{"host", "db"}, {"dbname", "app"}, {"sslmode", "disable"}}));
  CHECK(settings(with_connection_defaults("postgresql://db/app?")) ==
        with({{"host", "db"}, {"dbname", "app"}}));
  // The caller's own values win, in either form, even to turn keepalives off.
  CHECK(settings(with_connection_defaults("host=db keepalives_idle=77 tcp_user_timeout=0")) ==
        with({{"host", "db"}, {"keepalives_idle", "77"}, {"tcp_user_timeout", "0"}}));
  CHECK(settings(with_connection_defaults("postgresql://db?keepalives=0&keepalives_count=9")) ==
        with({{"host", "db"}, {"keepalives", "0"}, {"keepalives_count", "9"}}));
  // What libpq cannot parse is left as it is, for connect() to report.
  CHECK(with_connection_defaults("host='unterminated") == "host='unterminated");
  CHECK(with_connection_defaults("host=h nonsense=1") == "host=h nonsense=1");
}
