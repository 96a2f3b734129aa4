// lakh::pg::int_array and text_array: the literals, and what PostgreSQL reads from them.
#include <lakh/pg/array.hpp>
#include <lakh/pg/detail/pqxx_compat.hpp>

#include <support/env.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

TEST_CASE("pg.array.literals") {
  CHECK(lakh::pg::int_array(std::vector<int>{}) == "{}");
  CHECK(lakh::pg::int_array(std::vector<std::int64_t>{1, -2, 9007199254740993}) ==
        "{1,-2,9007199254740993}");
  const std::vector<std::pair<int, long>> rows{{1, 10}, {2, 20}};
  CHECK(lakh::pg::int_array(rows, &std::pair<int, long>::second) == "{10,20}");
  CHECK(lakh::pg::text_array(std::vector<std::string>{"a", "b,c", "{}", "q\"\\"}) ==
        R"({"a","b,c","{}","q\"\\"})");
  CHECK(lakh::pg::text_array(std::vector<std::string>{}) == "{}");
  CHECK_THROWS_WITH_AS(lakh::pg::text_array(std::vector<std::string>{std::string("a\0b", 3)}),
                       "lakh::pg::text_array: an element holds a NUL byte", std::invalid_argument);
}

TEST_CASE("pg.array.postgresql_reads_back_every_element_as_itself") {
  pqxx::connection c(lakh::test::database_url());
  pqxx::nontransaction n(c);
  const std::vector<std::string> texts{"plain",       "",         "NULL",
                                       "with,comma",  "{braces}", "q\"uote",
                                       "back\\slash", " spaces ", "ünïcødé"};
  auto r = lakh::pg::detail::exec(
      n, "SELECT t FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
      lakh::pg::text_array(texts));
  REQUIRE(r.size() == texts.size());
  std::size_t i = 0;
  for (const auto &row : r) {
    CHECK_FALSE(row[0].is_null()); // "NULL" quoted is the word, not NULL
    CHECK(row[0].as<std::string>() == texts[i++]);
  }
  const std::vector<std::int64_t> ids{3, -1, 9223372036854775807};
  CHECK(lakh::pg::detail::exec(n, "SELECT sum(x::numeric)::text FROM unnest($1::bigint[]) AS x",
                               lakh::pg::int_array(ids))[0][0]
            .as<std::string>() == "9223372036854775809");
}
