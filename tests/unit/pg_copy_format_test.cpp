// Unit tests (no database) of the COPY text formatting lakh::pg::copy_from uses on libpqxx 6.x.
#include <lakh/pg/detail/pqxx_compat.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace d = lakh::pg::detail;

namespace {
template <class T> std::string field(const T &v) {
  std::string out;
  d::copy_field_append(out, v);
  return out;
}
} // namespace

TEST_CASE("pg.copy_format.numbers_bools_nulls") {
  CHECK(field(0) == "0");
  CHECK(field(std::int64_t{-9223372036854775807LL - 1}) == "-9223372036854775808");
  CHECK(field(std::uint64_t{18446744073709551615ULL}) == "18446744073709551615");
  CHECK(field(std::int16_t{-7}) == "-7");
  CHECK(field(0.1) == "0.1"); // shortest round-trip form
  CHECK(field(-2.5f) == "-2.5");
  CHECK(field(true) == "t");
  CHECK(field(false) == "f");
  CHECK(field(nullptr) == "\\N");
  CHECK(field(std::optional<int>{}) == "\\N");
  CHECK(field(std::optional<int>{42}) == "42");
  CHECK(field(std::optional<std::string>{"a\tb"}) == "a\\tb");
}

TEST_CASE("pg.copy_format.strings_are_escaped") {
  CHECK(field(std::string("plain")) == "plain");
  CHECK(field(std::string_view("tab\there")) == "tab\\there");
  CHECK(field("nl\ncr\r") == "nl\\ncr\\r");
  CHECK(field(std::string("back\\slash")) == "back\\\\slash");
  CHECK(field(std::string("\\N")) == "\\\\N");               // the text \N, not NULL
  CHECK(field(std::string("")) == "");                       // empty string, not NULL
  CHECK(field(std::string("caf\xc3\xa9")) == "caf\xc3\xa9"); // UTF-8 passes through
  CHECK(field('\t') == "\\t");
}
