#pragma once
// lakh/pg/connection.hpp: opening a libpqxx connection with an error message a person can
// act on.
//
// pqxx::connection's constructor reports a failure with libpq's text alone ("Connection
// refused"), which does not say WHICH server was meant when a service talks to several.
// lakh::pg::connect() throws lakh::pg::connect_error instead: its what() names the target
// as host:port/dbname and quotes libpq's reason, and it never contains the password (it is
// neither in the target nor, redacted, in libpq's text). connect_error derives from
// pqxx::broken_connection, so existing `catch (const pqxx::broken_connection&)` sites and
// lakh::pg::classify() treat it as a lost connection. connect() also adds lakh's TCP keepalive
// and tcp_user_timeout defaults (lakh/pg/conninfo.hpp) where the URL sets none.

#include <lakh/pg/conninfo.hpp>
#include <lakh/pg/detail/conninfo.hpp>
#include <lakh/pg/detail/pqxx_compat.hpp>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

namespace lakh::pg {

/// A connection could not be opened. what() is
/// "lakh::pg: cannot connect to <host:port/dbname>: <libpq's reason>".
class connect_error : public pqxx::broken_connection {
public:
  connect_error(std::string target, std::string reason)
      : pqxx::broken_connection("lakh::pg: cannot connect to " + target + ": " + reason),
        target_(std::move(target)), reason_(std::move(reason)) {}

  /// "host:port/dbname" (never the password).
  [[nodiscard]] const std::string &target() const noexcept { return target_; }
  /// libpq's explanation, with any occurrence of the password replaced by "***".
  [[nodiscard]] const std::string &reason() const noexcept { return reason_; }

private:
  std::string target_;
  std::string reason_;
};

/// Makes a new connection; the pool and lakh::pg::retrier call one when they need a
/// connection. Must return a non-null pointer or throw.
using connection_factory = std::function<std::unique_ptr<pqxx::connection>()>;

/// "host:port/dbname" for `url` (a libpq URI or key=value string), with libpq's
/// environment defaults (PGHOST, PGPORT, PGDATABASE, PGUSER) applied; never the password.
/// Thread-safety: safe (reads the environment). Blocks: never. Allocates: may.
[[nodiscard]] inline std::string describe_target(std::string_view url) {
  return detail::describe_target(detail::parse_conninfo(url));
}

namespace detail {

/// libpqxx 6.4 initializes state shared by every transaction of the process lazily, in the
/// first transaction's constructor, without synchronization (ThreadSanitizer reports the race
/// when several threads start their first transactions at once). Run one empty transaction
/// on the process's first connection, under a once flag, before anyone else can.
/// A failure leaves the flag unset (the next connection tries again) and is not reported
/// here: the connection's first real use reports it.
inline void warm_up_once(pqxx::connection &c) noexcept {
  static std::once_flag warmed;
  try {
    std::call_once(warmed, [&c] {
      pqxx::work w(c);
      w.commit();
    });
  } catch (...) {
  }
}

} // namespace detail

/// Open a connection to `url` (libpq URI "postgresql://user@host:port/db?..." or
/// key=value "host=... port=... dbname=..."), with lakh's connection_defaults (TCP
/// keepalives, tcp_user_timeout) for what the URL does not set: a network path that breaks
/// without a reset ends the connection (pqxx::broken_connection) instead of blocking for
/// hours. Add `connect_timeout=<seconds>` to the URL to
/// bound the wait for an unreachable host. libpqxx 6's automatic reactivation is inhibited:
/// a lost connection throws pqxx::broken_connection instead of reopening without its
/// session state. The first connection of the process also runs
/// one empty transaction (see detail::warm_up_once: libpqxx 6.4's first-use race).
/// Thread-safety: safe. Blocks: until connected or libpq gives up (and, on the process's
/// first call, a BEGIN/COMMIT round trip).
/// @throws lakh::pg::connect_error naming host:port/dbname and libpq's reason (bad URL,
///         refused, unknown host, authentication), without the password.
/// Allocates: may.
[[nodiscard]] inline std::unique_ptr<pqxx::connection> connect(const std::string &url) {
  try {
    auto c = std::make_unique<pqxx::connection>(with_connection_defaults(url));
#if PQXX_VERSION_MAJOR < 7
    // libpqxx 6 silently reopens a lost connection on its next use, losing every session
    // setting (SET ROLE, application_name, prepared statements) without a word: a lost
    // connection must surface as broken_connection, so that the pool replaces it and
    // on_connect runs again. (libpqxx 7 removed reactivation.)
#  pragma GCC diagnostic push
#  pragma GCC diagnostic ignored "-Wdeprecated-declarations" // deprecated with reactivation
    c->inhibit_reactivation(true);
#  pragma GCC diagnostic pop
#endif
    detail::warm_up_once(*c);
    return c;
  } catch (const pqxx::broken_connection &e) {
    auto ci = detail::parse_conninfo(url);
    std::string reason = e.what();
    while (!reason.empty() && (reason.back() == '\n' || reason.back() == ' ')) {
      reason.pop_back();
    }
    throw connect_error(detail::describe_target(ci), detail::redact(reason, ci.password));
  }
}

/// A connection_factory that calls connect(url) (the URL is copied).
/// Thread-safety: the factory is safe to call from several threads. Blocks: never.
/// Allocates: may.
[[nodiscard]] inline connection_factory connect_to(std::string url) {
  return [u = std::move(url)] { return connect(u); };
}

} // namespace lakh::pg
