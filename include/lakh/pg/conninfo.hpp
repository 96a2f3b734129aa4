#pragma once
// lakh/pg/conninfo.hpp: connection strings rewritten by libpq's own parser (PQconninfoParse):
// with_database(url, name) is `url` pointed at another database on the same server, for
// programs that create a database and then connect to it; with_connection_defaults(url) is
// `url` with lakh's TCP keepalive and tcp_user_timeout defaults where it sets none (every
// lakh::pg::connect applies it). docs/pg.md, "Connection strings".

#include <libpq-fe.h>

#include <lakh/pg/detail/conninfo.hpp>

#include <array>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lakh::pg {

namespace detail {

/// `value` single-quoted for a key=value connection string (\ and ' escaped).
inline std::string quote_conninfo_value(std::string_view value) {
  std::string out = "'";
  for (const char c : value) {
    if (c == '\\' || c == '\'') {
      out += '\\';
    }
    out += c;
  }
  return out + "'";
}

/// libpq's parse error without what it echoes of the input: every quoted fragment longer
/// than one character (a token, a parameter, the whole URI) becomes "***", and so does the
/// password wherever the lenient parser finds it.
inline std::string conninfo_parse_reason(std::string reason, std::string_view input) {
  while (!reason.empty() && (reason.back() == '\n' || reason.back() == ' ')) {
    reason.pop_back();
  }
  reason = redact(std::move(reason), parse_conninfo(input).password);
  std::string out;
  for (std::size_t i = 0; i < reason.size(); ++i) {
    const auto close = reason[i] == '"' ? reason.find('"', i + 1) : std::string::npos;
    if (close != std::string::npos && close > i + 2) {
      out += "\"***\"";
      i = close;
    } else {
      out += reason[i];
    }
  }
  return out;
}

} // namespace detail

/// One libpq connection setting: keyword and value.
struct conninfo_setting {
  std::string_view keyword;
  std::string_view value;
};

/// What lakh::pg::connect adds to a connection string that does not set it: TCP keepalive
/// probes after 30 s idle, every 10 s, the connection ended after 3 unanswered ones, and
/// ended too when sent data stays unacknowledged for 60 s (tcp_user_timeout, in ms). A
/// network path that breaks without a reset then costs a blocked call about a minute, not
/// the kernel's two hours. Unix-socket connections ignore them.
inline constexpr std::array<conninfo_setting, 5> connection_defaults{
    {{"keepalives", "1"},
     {"keepalives_idle", "30"},
     {"keepalives_interval", "10"},
     {"keepalives_count", "3"},
     {"tcp_user_timeout", "60000"}}};

/// `conninfo` (URI or key=value) with every setting of connection_defaults that it does not
/// set itself appended (as URI query parameters or key='value' pairs), so that the caller's
/// values always win; settings this libpq does not know are skipped. A string libpq cannot
/// parse is returned unchanged (connecting with it reports the error).
/// Thread-safety: safe. Blocks: never. Allocates: the string.
[[nodiscard]] inline std::string with_connection_defaults(std::string_view conninfo) {
  std::string out(conninfo);
  if (conninfo.find('\0') != std::string_view::npos) {
    return out;
  }
  char *error = nullptr;
  const std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption *)> options(
      PQconninfoParse(out.c_str(), &error), PQconninfoFree);
  const std::unique_ptr<char, void (*)(void *)> error_owner(error, PQfreemem);
  if (!options) {
    return out;
  }
  const bool uri = conninfo.rfind("postgresql://", 0) == 0 || conninfo.rfind("postgres://", 0) == 0;
  for (const auto &d : connection_defaults) {
    const PQconninfoOption *o = options.get();
    while (o->keyword != nullptr && std::string_view(o->keyword) != d.keyword) {
      ++o;
    }
    if (o->keyword == nullptr || o->val != nullptr) {
      continue; // unknown to this libpq, or set by the caller
    }
    if (uri) {
      const char last = out.back();
      out += out.find('?') == std::string::npos ? "?" : (last == '?' || last == '&' ? "" : "&");
      out += std::string(d.keyword) + "=" + std::string(d.value);
    } else {
      out += (out.empty() ? "" : " ") + std::string(d.keyword) + "=" +
             detail::quote_conninfo_value(d.value);
    }
  }
  return out;
}

/// `conninfo` (a libpq URI "postgresql://user@host:port/db?sslmode=..." or a key=value string
/// "host=... dbname=...") with its database replaced by `dbname`, every other setting kept as
/// libpq parsed it (hosts, ports, user, password, sslmode and the rest; settings it does not
/// name still come from PGHOST and the other variables at connect time). The result is a
/// key=value string with every value single-quoted (\ and ' escaped), which libpq and
/// libpqxx accept wherever they accept the URI.
/// Thread-safety: safe. Blocks: never. Allocates: the string.
/// @throws std::invalid_argument "lakh::pg::with_database: ..." if `dbname` is empty or
///         either argument holds a NUL byte, or if libpq cannot parse `conninfo` (its reason
///         is quoted without the fragments of the input it echoes: no password leaks).
[[nodiscard]] inline std::string with_database(std::string_view conninfo, std::string_view dbname) {
  constexpr const char *fn = "lakh::pg::with_database: ";
  if (dbname.empty()) {
    throw std::invalid_argument(std::string(fn) + "the database name is empty");
  }
  if (conninfo.find('\0') != std::string_view::npos ||
      dbname.find('\0') != std::string_view::npos) {
    throw std::invalid_argument(std::string(fn) + "a NUL byte in the connection string or name");
  }
  char *error = nullptr;
  const std::unique_ptr<PQconninfoOption, void (*)(PQconninfoOption *)> options(
      PQconninfoParse(std::string(conninfo).c_str(), &error), PQconninfoFree);
  const std::unique_ptr<char, void (*)(void *)> error_owner(error, PQfreemem);
  if (!options) {
    throw std::invalid_argument(
        std::string(fn) + "libpq cannot parse the connection string: " +
        (error != nullptr ? detail::conninfo_parse_reason(error, conninfo) : "out of memory"));
  }
  std::string out;
  for (const PQconninfoOption *o = options.get(); o->keyword != nullptr; ++o) {
    const std::string_view key = o->keyword;
    if (key != "dbname" && o->val != nullptr) {
      out += std::string(key) + "=" + detail::quote_conninfo_value(o->val) + " ";
    }
  }
  return out + "dbname=" + detail::quote_conninfo_value(dbname);
}

} // namespace lakh::pg
