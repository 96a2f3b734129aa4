#pragma once
// Test support for the PostgreSQL suites: names no other test (or process) uses, and one
// statement on a connection of its own.

#include <support/env.hpp>

#include <pqxx/pqxx>

#include <unistd.h>

#include <atomic>
#include <string>

namespace lakh::test {

/// "<prefix>_<what>_<pid>_<n>": a table or role name unique to this call in this process.
inline std::string unique_name(const char *prefix, const char *what) {
  static std::atomic<int> n{0};
  return std::string(prefix) + "_" + what + "_" + std::to_string(::getpid()) + "_" +
         std::to_string(n.fetch_add(1));
}

/// The first column of the first row of `sql`, run on a connection of its own.
inline long long scalar(const std::string &sql) {
  pqxx::connection c(database_url());
  pqxx::nontransaction tx(c);
  return tx.exec(sql)[0][0].as<long long>();
}

/// Runs `sql` on a connection of its own, outside a transaction.
inline void exec(const std::string &sql) {
  pqxx::connection c(database_url());
  pqxx::nontransaction tx(c);
  tx.exec(sql);
}

} // namespace lakh::test
