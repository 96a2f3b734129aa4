// Unit tests (no database) of lakh::pg::advisory_key: forms, order, the documented hash.
#include <lakh/pg/advisory_lock.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace pg = lakh::pg;

TEST_CASE("pg.advisory_key.forms") {
  pg::advisory_key k(42);
  CHECK_FALSE(k.is_pair());
  CHECK(k.sql_args() == "42");
  pg::advisory_key p(-7, 9);
  CHECK(p.is_pair());
  CHECK(p.ns() == -7);
  CHECK(p.id() == 9);
  CHECK(p.sql_args() == "-7, 9");
  CHECK(p.to_string() == "(-7, 9)");
  CHECK(pg::advisory_key(INT32_MIN, INT32_MAX).ns() == INT32_MIN);
  CHECK(pg::advisory_key(INT32_MIN, INT32_MAX).id() == INT32_MAX);
  CHECK(pg::advisory_key(std::int64_t{-1}).sql_args() == "-1");
  // the two forms are different locks even with the same bits
  CHECK(pg::advisory_key(0, 5) != pg::advisory_key(std::int64_t{5}));
}

TEST_CASE("pg.advisory_key.order_is_the_ordinal_then_the_form") {
  std::vector<pg::advisory_key> keys{{1, 2},     {std::int64_t{5}},  {-1, 0},
                                     {1, -3},    {std::int64_t{-9}}, {std::int64_t{5}},
                                     {INT64_MAX}};
  std::sort(keys.begin(), keys.end());
  // int64 keys and pairs interleave: the order of ordinal(), lock_all's order
  std::vector<pg::advisory_key> want{
      {-1, 0}, {std::int64_t{-9}}, {std::int64_t{5}}, {std::int64_t{5}}, {1, -3},
      {1, 2},  {INT64_MAX}};
  CHECK(keys == want);
  for (std::size_t i = 1; i < keys.size(); ++i) {
    CHECK(keys[i - 1].ordinal() <= keys[i].ordinal());
  }
  // ordinal() preserves the order within a form (the lock-order instance)
  CHECK(pg::advisory_key(std::int64_t{-9}).ordinal() < pg::advisory_key(std::int64_t{5}).ordinal());
  CHECK(pg::advisory_key(INT64_MIN).ordinal() < pg::advisory_key(INT64_MAX).ordinal());
  CHECK(pg::advisory_key(-1, 0).ordinal() < pg::advisory_key(1, -3).ordinal());
  CHECK(pg::advisory_key(1, -3).ordinal() < pg::advisory_key(1, 2).ordinal());
  // two different locks with one ordinal: the int64 key first, in both orders
  const pg::advisory_key single(std::int64_t{5} ^ std::int64_t{0x80000000});
  const pg::advisory_key pair(0, 5);
  REQUIRE(single.ordinal() == pair.ordinal());
  CHECK(single < pair);
}

TEST_CASE("pg.advisory_key.hashed_is_fnv1a64") {
  // Published FNV-1a 64 test vectors.
  CHECK(pg::advisory_key::fnv1a64("") == 0xcbf29ce484222325ULL);
  CHECK(pg::advisory_key::fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
  CHECK(pg::advisory_key::fnv1a64("foobar") == 0x85944171f73967e8ULL);
  auto k = pg::advisory_key::hashed("foobar");
  CHECK_FALSE(k.is_pair());
  CHECK(static_cast<std::uint64_t>(k.value()) == 0x85944171f73967e8ULL);
  auto p = pg::advisory_key::hashed(3, "foobar");
  CHECK(p.is_pair());
  CHECK(p.ns() == 3);
  CHECK(static_cast<std::uint32_t>(p.id()) == (0x85944171U ^ 0xf73967e8U));
  static_assert(pg::advisory_key::fnv1a64("a") == 0xaf63dc4c8601ec8cULL);
}

TEST_CASE("pg.advisory_key.hashed64_is_one_int64_from_ns_and_name") {
  // FNV-1a 64 over ns's four bytes, big-endian, then the name's bytes.
  const auto k = pg::advisory_key::hashed64(3, "foobar");
  CHECK_FALSE(k.is_pair());
  CHECK(static_cast<std::uint64_t>(k.value()) ==
        pg::advisory_key::fnv1a64(std::string("\0\0\0\3foobar", 10)));
  CHECK(static_cast<std::uint64_t>(pg::advisory_key::hashed64(-2, "a").value()) ==
        pg::advisory_key::fnv1a64(std::string("\xff\xff\xff\xfe"
                                              "a",
                                              5)));
  CHECK(k != pg::advisory_key::hashed64(4, "foobar"));
  CHECK(k != pg::advisory_key::hashed("foobar"));
  // the 32-bit form of the same name keeps only the pair's id bits
  CHECK(pg::advisory_key::hashed(3, "foobar").is_pair());
  CHECK_THROWS_WITH_AS((void)pg::advisory_key::hashed64(1, ""),
                       "lakh::pg::advisory_key::hashed64: name is empty", std::invalid_argument);
}

TEST_CASE("pg.advisory_key.bad_names_throw") {
  CHECK_THROWS_WITH_AS((void)pg::advisory_key::hashed(""),
                       "lakh::pg::advisory_key::hashed: name is empty", std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)pg::advisory_key::hashed(1, std::string(1025, 'x')),
                       "lakh::pg::advisory_key::hashed: name size (1025 bytes) exceeds 1024",
                       std::invalid_argument);
  CHECK_NOTHROW((void)pg::advisory_key::hashed(std::string(1024, 'x')));
}
