#pragma once
// lakh/pg/detail/conninfo.hpp: just enough of libpq's connection-string grammar to name the
// target of a connection ("host:port/dbname") in error messages and to keep the password
// out of them. Both forms are understood:
//   - URI:       postgresql://[user[:password]@][host][:port][,host2[:port2]...][/dbname][?k=v&...]
//   - key=value: host=... port=... dbname=... user=... password='...' (quotes, \ escapes)
// Missing parts default as libpq does: PGHOST/PGPORT/PGDATABASE/PGUSER, then
// "localhost" (a Unix socket in libpq; named "localhost" here), 5432, and the user name.
// This parser never fails: text it does not understand is left for libpq to reject.

#include <cstdlib>
#include <string>
#include <string_view>

namespace lakh::pg::detail {

struct conninfo {
  std::string host, port, dbname, user, password;
};

inline int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

/// %XX-decoding as libpq applies it to URI components.
inline std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      int hi = hex_value(s[i + 1]);
      int lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

inline void set_key(conninfo &ci, std::string_view key, std::string value) {
  if (key == "host" || key == "hostaddr") {
    if (key == "host" || ci.host.empty()) {
      ci.host = std::move(value);
    }
  } else if (key == "port") {
    ci.port = std::move(value);
  } else if (key == "dbname") {
    ci.dbname = std::move(value);
  } else if (key == "user") {
    ci.user = std::move(value);
  } else if (key == "password") {
    ci.password = std::move(value);
  }
}

inline void parse_uri(std::string_view s, conninfo &ci) {
  // s is past "scheme://"
  auto query_at = s.find('?');
  std::string_view query = query_at == std::string_view::npos ? "" : s.substr(query_at + 1);
  s = s.substr(0, query_at == std::string_view::npos ? s.size() : query_at);
  auto slash = s.find('/');
  std::string_view authority = s.substr(0, slash);
  if (slash != std::string_view::npos) {
    ci.dbname = percent_decode(s.substr(slash + 1));
  }
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    if (auto colon = userinfo.find(':'); colon != std::string_view::npos) {
      ci.user = percent_decode(userinfo.substr(0, colon));
      ci.password = percent_decode(userinfo.substr(colon + 1));
    } else {
      ci.user = percent_decode(userinfo);
    }
  }
  // authority: host[:port][,host[:port]]... ; IPv6 in brackets
  std::string hosts, ports;
  while (!authority.empty()) {
    auto comma = authority.find(',');
    if (authority.front() == '[') {
      auto close = authority.find(']');
      comma = close == std::string_view::npos ? comma : authority.find(',', close);
    }
    std::string_view one = authority.substr(0, comma);
    std::string_view host = one, port;
    auto colon = one.front() == '[' ? one.find(':', one.find(']')) : one.rfind(':');
    if (colon != std::string_view::npos) {
      host = one.substr(0, colon);
      port = one.substr(colon + 1);
    }
    if (!hosts.empty() || !ports.empty()) {
      hosts += ',';
      ports += ',';
    }
    hosts += percent_decode(host);
    ports += std::string(port);
    authority = comma == std::string_view::npos ? "" : authority.substr(comma + 1);
  }
  if (hosts.find_first_not_of(',') != std::string::npos) {
    ci.host = hosts;
  }
  if (ports.find_first_not_of(',') != std::string::npos) {
    ci.port = ports;
  }
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view kv = query.substr(0, amp);
    auto eq = kv.find('=');
    if (eq != std::string_view::npos) {
      set_key(ci, kv.substr(0, eq), percent_decode(kv.substr(eq + 1)));
    }
    query = amp == std::string_view::npos ? "" : query.substr(amp + 1);
  }
}

inline void parse_keywords(std::string_view s, conninfo &ci) {
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) {
      ++i;
    }
  };
  while (true) {
    skip_space();
    if (i >= s.size()) {
      return;
    }
    std::size_t k0 = i;
    while (i < s.size() && s[i] != '=' && s[i] != ' ' && s[i] != '\t') {
      ++i;
    }
    std::string_view key = s.substr(k0, i - k0);
    skip_space();
    if (i >= s.size() || s[i] != '=') {
      return; // malformed: libpq will say so
    }
    ++i;
    skip_space();
    std::string value;
    if (i < s.size() && s[i] == '\'') {
      ++i;
      while (i < s.size() && s[i] != '\'') {
        if (s[i] == '\\' && i + 1 < s.size()) {
          ++i;
        }
        value.push_back(s[i++]);
      }
      ++i; // closing quote
    } else {
      while (i < s.size() && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
        if (s[i] == '\\' && i + 1 < s.size()) {
          ++i;
        }
        value.push_back(s[i++]);
      }
    }
    set_key(ci, key, std::move(value));
  }
}

inline std::string env_or(const char *name, std::string fallback) {
  const char *v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

/// The parts of `url` (URI or key=value), with libpq's environment defaults filled in.
inline conninfo parse_conninfo(std::string_view url) {
  conninfo ci;
  bool uri = false;
  for (std::string_view scheme :
       {std::string_view("postgresql://"), std::string_view("postgres://")}) {
    if (!uri && url.substr(0, scheme.size()) == scheme) {
      parse_uri(url.substr(scheme.size()), ci);
      uri = true;
    }
  }
  if (!uri) {
    parse_keywords(url, ci);
  }
  if (ci.host.empty()) {
    ci.host = env_or("PGHOST", "localhost");
  }
  if (ci.port.empty()) {
    ci.port = env_or("PGPORT", "5432");
  }
  if (ci.user.empty()) {
    ci.user = env_or("PGUSER", env_or("USER", ""));
  }
  if (ci.dbname.empty()) {
    ci.dbname = env_or("PGDATABASE", ci.user);
  }
  return ci;
}

/// "host:port/dbname" for messages; never includes the password.
inline std::string describe_target(const conninfo &ci) {
  return ci.host + ":" + ci.port + "/" + ci.dbname;
}

/// `text` with every occurrence of `secret` (if not empty) replaced by "***".
inline std::string redact(std::string text, std::string_view secret) {
  if (secret.empty()) {
    return text;
  }
  for (auto at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3)) {
    text.replace(at, secret.size(), "***");
  }
  return text;
}

} // namespace lakh::pg::detail
