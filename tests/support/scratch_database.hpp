#pragma once
// Test support for lakh::pg's integration tests: unique names, one-shot statements, and a
// throwaway database per test where pg_stat_database counters must not see other tests.

#include <lakh/pg/conninfo.hpp>

#include <support/env.hpp>

#include <pqxx/pqxx>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>

namespace lakh::test::pg {

/// A name unique across test processes and calls: "<prefix>_<pid>_<n>".
inline std::string unique_name(const std::string &prefix) {
  static std::atomic<int> n{0};
  return prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(n.fetch_add(1));
}

/// Run `sql` in its own autocommit statement on a new connection to `url`.
inline pqxx::result exec(const std::string &url, const std::string &sql) {
  pqxx::connection c(url);
  pqxx::nontransaction tx(c);
  return tx.exec(sql);
}

/// The first column of the first row of `sql`, as T.
template <class T> T scalar(const std::string &url, const std::string &sql) {
  return exec(url, sql)[0][0].as<T>();
}

/// A database created for one test and dropped afterwards (FORCE: sessions are ended).
class scratch_database {
public:
  explicit scratch_database(const std::string &prefix)
      : admin_(lakh::test::database_url()), name_(unique_name(prefix)) {
    exec(admin_, "CREATE DATABASE " + name_);
    url_ = lakh::pg::with_database(admin_, name_);
  }
  ~scratch_database() {
    try {
      exec(admin_, "DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
    } catch (...) {
    }
  }
  scratch_database(const scratch_database &) = delete;
  scratch_database &operator=(const scratch_database &) = delete;

  const std::string &url() const { return url_; }
  const std::string &name() const { return name_; }

  /// pg_stat_database.deadlocks of this database, read after every other session on it has
  /// ended (a backend flushes its statistics when it exits).
  std::int64_t deadlocks() const {
    pqxx::connection c(admin_);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (true) {
      pqxx::nontransaction tx(c);
      auto others =
          tx.exec("SELECT count(*) FROM pg_stat_activity WHERE datname = " + tx.quote(name_))[0][0]
              .as<long>();
      if (others == 0 || std::chrono::steady_clock::now() > deadline) {
        tx.exec("SELECT pg_stat_clear_snapshot()");
        return tx
            .exec("SELECT deadlocks FROM pg_stat_database WHERE datname = " + tx.quote(name_))[0][0]
            .as<std::int64_t>();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

private:
  std::string admin_;
  std::string name_;
  std::string url_;
};

} // namespace lakh::test::pg
