#pragma once
// lakh/pg/detail/pqxx_compat.hpp: the ONE place where libpqxx 6.x and 7.x differ for lakh.
//
// lakh::pg is written against the API that libpqxx 6.4 (Debian 12) and 7.x share:
// pqxx::connection (string constructor, is_open, sock, get_notifs, backendpid),
// pqxx::transaction<isolation_level>, exec/exec_params, esc/quote, the exception types
// broken_connection, sql_error (with sqlstate()), in_doubt_error, transaction_rollback,
// deadlock_detected, serialization_failure, statement_completion_unknown. What differs is
// kept here:
//   - the exception hierarchy: in 6.4 deadlock_detected / serialization_failure /
//     statement_completion_unknown derive from transaction_rollback : failure and carry NO
//     sqlstate(); in 7.x transaction_rollback derives from sql_error. sqlstate_of() reads a
//     SQLSTATE where there is one, and lakh::pg::classify() decides by type first;
//   - COPY: 6.4 constructs pqxx::stream_to(tx, table, columns); 7.6+ deprecates that in
//     favour of the stream_to::raw_table() factory. open_stream_to() picks one.
// lakh has been built and tested against 6.4.5 only (7.x is not packaged in Debian 12); the
// 7.x branches follow the 7.x headers' documented API.

#include <pqxx/pqxx>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#ifndef PQXX_VERSION_MAJOR
#  error "lakh::pg needs libpqxx's version macros (pqxx/version.hxx)"
#endif

namespace lakh::pg::detail {

/// libpqxx's major version (6 or 7).
inline constexpr int pqxx_major = PQXX_VERSION_MAJOR;

/// The five-character SQLSTATE carried by `e` if it is a pqxx::sql_error (all of them in
/// 7.x; not the 6.4 transaction_rollback family), else "".
inline std::string sqlstate_of(const std::exception &e) {
  if (const auto *se = dynamic_cast<const pqxx::sql_error *>(&e)) {
    return std::string(se->sqlstate());
  }
  return {};
}

/// A double-quoted SQL identifier: "name" with embedded quotes doubled. Used for table
/// and column names handed to COPY. A dotted name "schema.table" is quoted per part.
inline std::string quote_identifier(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 2);
  out.push_back('"');
  for (char c : name) {
    if (c == '"') {
      out.push_back('"');
    } else if (c == '.') {
      out += "\".\"";
      continue;
    }
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

/// Start `COPY table (columns) FROM STDIN` in `tx`.
inline std::unique_ptr<pqxx::stream_to> open_stream_to(pqxx::transaction_base &tx,
                                                       const std::string &table,
                                                       const std::vector<std::string> &columns) {
#if PQXX_VERSION_MAJOR > 7 || (PQXX_VERSION_MAJOR == 7 && PQXX_VERSION_MINOR >= 6)
  std::string cols;
  for (const auto &c : columns) {
    cols += (cols.empty() ? "" : ",") + quote_identifier(c);
  }
  return std::make_unique<pqxx::stream_to>(
      pqxx::stream_to::raw_table(tx, quote_identifier(table), cols));
#else
  // 6.4 quotes nothing: it pastes the table name and the comma-joined column names into
  // the COPY statement, so they are quoted here.
  std::vector<std::string> quoted;
  quoted.reserve(columns.size());
  for (const auto &c : columns) {
    quoted.push_back(quote_identifier(c));
  }
  return std::make_unique<pqxx::stream_to>(tx, quote_identifier(table), quoted);
#endif
}

} // namespace lakh::pg::detail
