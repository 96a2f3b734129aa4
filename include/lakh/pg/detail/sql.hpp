#pragma once
// lakh/pg/detail/sql.hpp: helpers shared by lakh::pg's stores and queues: table-name
// validation and running a function on a pooled connection (marking it broken when the
// connection is lost). Array literals are public: lakh/pg/array.hpp.

#include <lakh/pg/array.hpp>
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

} // namespace lakh::pg::detail
