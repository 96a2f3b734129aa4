#pragma once
// lakh/pg/array.hpp: PostgreSQL array literals ("{1,2,3}", {"a","b"}) for `$n::bigint[]` and
// `$n::text[]` parameters, so that a batch travels as one parameter and one statement
// (`... = ANY($1::bigint[])`, `unnest($1::text[])`) with libpqxx 6.4, which has no array
// parameters. docs/pg.md, "Arrays".

#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lakh::pg {

/// "{1,2,3}": the integers get(item) of each item of `items`, in order ("{}" when empty).
/// Thread-safety: pure. Blocks: never. Allocates: the string.
template <class Range, class Get = std::identity>
std::string int_array(const Range &items, Get get = {}) {
  std::string out = "{";
  for (const auto &item : items) {
    if (out.size() > 1) {
      out += ',';
    }
    out += std::to_string(std::invoke(get, item));
  }
  return out + "}";
}

/// {"a","b\"c"}: the strings get(item) of each item, each double-quoted with \ and "
/// escaped, so any text (commas, braces, quotes, NULL as a word) arrives as itself.
/// Thread-safety: pure. Blocks: never. Allocates: the string.
/// @throws std::invalid_argument if a string holds a NUL byte (PostgreSQL text cannot).
template <class Range, class Get = std::identity>
std::string text_array(const Range &items, Get get = {}) {
  std::string out = "{";
  for (const auto &item : items) {
    const std::string_view s = std::invoke(get, item);
    if (s.find('\0') != std::string_view::npos) {
      throw std::invalid_argument("lakh::pg::text_array: an element holds a NUL byte");
    }
    out += out.size() > 1 ? ",\"" : "\"";
    for (char ch : s) {
      if (ch == '"' || ch == '\\') {
        out += '\\';
      }
      out += ch;
    }
    out += '"';
  }
  return out + "}";
}

} // namespace lakh::pg
