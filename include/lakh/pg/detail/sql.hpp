#pragma once
// lakh/pg/detail/sql.hpp: helpers shared by lakh::pg's stores and queues: table-name
// validation and running a function on a pooled connection (marking it broken when the
// connection is lost).

#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace lakh::pg::detail {

/// `name` if it is a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes),
/// optionally schema-qualified ("billing.jobs"): safe to splice into SQL unquoted.
/// @throws std::invalid_argument naming `who` and the name otherwise.
inline std::string checked_table_name(std::string name, std::string_view who) {
  auto ident_ok = [](std::string_view s) {
    if (s.empty() || s.size() > 63 || (s[0] >= '0' && s[0] <= '9')) {
      return false;
    }
    for (char ch : s) {
      if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_')) {
        return false;
      }
    }
    return true;
  };
  const auto dot = name.find('.');
  const bool ok = dot == std::string::npos ? ident_ok(name)
                                           : ident_ok(std::string_view(name).substr(0, dot)) &&
                                                 ident_ok(std::string_view(name).substr(dot + 1));
  if (!ok) {
    throw std::invalid_argument(std::string(who) + ": table name \"" + name +
                                "\" must be a lower-case identifier ([a-z_][a-z0-9_]*, at most "
                                "63 bytes), optionally schema-qualified");
  }
  return name;
}

/// The table name without its schema, cut to leave room for a suffix in a 63-byte index name.
inline std::string index_base(const std::string &table) {
  const auto dot = table.find('.');
  return table.substr(dot == std::string::npos ? 0 : dot + 1).substr(0, 48);
}

/// A PostgreSQL array literal of integers, "{1,2,3}", for a `$n::bigint[]` parameter (libpqxx
/// 6.4 has no array parameters). `get` maps each element to its integer.
template <class Range, class Get> std::string bigint_array(const Range &items, Get get) {
  std::string out = "{";
  bool first = true;
  for (const auto &item : items) {
    out += first ? "" : ",";
    out += std::to_string(get(item));
    first = false;
  }
  return out + "}";
}

/// Appends `s` as one double-quoted element (\ and " escaped) to a PostgreSQL array literal
/// being built in `out`, which holds "{" and the elements so far; close it with '}'. For a
/// `$n::text[]` parameter (libpqxx 6.4 has no array parameters). `s` must hold no NUL byte.
inline void append_text_element(std::string &out, std::string_view s) {
  out += out.size() > 1 ? ",\"" : "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
    }
    out += ch;
  }
  out += '"';
}

} // namespace lakh::pg::detail
