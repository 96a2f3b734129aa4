#pragma once
// lakh/pg/detail/conninfo.hpp: the target of a connection string ("host:port/dbname") for
// error messages, and its password to keep out of them, read by libpq's own parser
// (PQconninfoParse: URI and key=value forms, percent-decoding, quoting, several hosts) with
// libpq's defaults (PQconndefaults: PGHOST, PGPORT, PGDATABASE, PGUSER, the OS user) for
// what the string leaves out. A string libpq cannot parse names only the defaults; libpq
// rejects it when connecting, with its own message. A `service=` entry is named as such: its
// host is in the service file, which libpq reads only when connecting.

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lakh::pg::detail {

struct conninfo {
  std::string host, port, dbname, user, password, service;
};

/// Options from PQconninfoParse or PQconndefaults, freed with PQconninfoFree.
using conninfo_options = std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)>;

/// Calls `fn(keyword, value)` for each option of `options` that has a non-empty value.
template <class Fn> void for_each_set(const conninfo_options &options, Fn &&fn) {
  if (!options) {
    return;
  }
  for (const PQconninfoOption *o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val != nullptr && *o->val != '\0') {
      fn(std::string_view(o->keyword), std::string(o->val));
    }
  }
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
  } else if (key == "service") {
    ci.service = std::move(value);
  }
}

/// The parts of `url` (URI or key=value), with libpq's defaults for what it leaves out.
inline conninfo parse_conninfo(std::string_view url) {
  conninfo ci;
  char *error = nullptr;
  const conninfo_options parsed(PQconninfoParse(std::string(url).c_str(), &error), &PQconninfoFree);
  PQfreemem(error);
  for_each_set(
      parsed, [&](std::string_view key, std::string value) { set_key(ci, key, std::move(value)); });
  if (!ci.service.empty()) {
    return ci; // the service file has the rest
  }
  conninfo defaults;
  for_each_set(
      conninfo_options(PQconndefaults(), &PQconninfoFree),
      [&](std::string_view key, std::string value) { set_key(defaults, key, std::move(value)); });
  for (auto [part, fallback] : {std::pair{&ci.host, &defaults.host},
                                {&ci.port, &defaults.port},
                                {&ci.user, &defaults.user},
                                {&ci.dbname, &defaults.dbname}}) {
    if (part->empty()) {
      *part = *fallback;
    }
  }
  if (ci.host.empty()) {
    ci.host = "localhost"; // libpq's Unix socket, named as people call it
  }
  if (ci.port.empty()) {
    ci.port = "5432";
  }
  if (ci.dbname.empty()) {
    ci.dbname = ci.user;
  }
  return ci;
}

/// "host:port/dbname" for messages ([::1] for an IPv6 address; "h1:p1,h2:p2/dbname" for
/// several hosts, each with its port as libpq pairs them; "service=name[/dbname]" for a service
/// file entry that names no host); never includes the password.
inline std::string describe_target(const conninfo &ci) {
  const auto split = [](std::string_view list) {
    std::vector<std::string_view> parts;
    for (std::size_t start = 0;;) {
      const auto end = list.find(',', start);
      parts.push_back(list.substr(start, end == std::string_view::npos ? end : end - start));
      if (end == std::string_view::npos) {
        return parts;
      }
      start = end + 1;
    }
  };
  std::string out;
  if (ci.host.empty()) {
    out = "service=" + ci.service;
    if (!ci.port.empty()) {
      out += ":" + ci.port;
    }
  } else {
    const auto hosts = split(ci.host);
    const auto ports = split(ci.port);
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      const auto h = hosts[i];
      const bool ipv6 = h.find(':') != std::string_view::npos && h.front() != '/';
      out += (i == 0 ? "" : ",") + (ipv6 ? "[" + std::string(h) + "]" : std::string(h));
      // One port serves every host; else the i-th port is the i-th host's.
      const auto port = ports.size() == 1 ? ports[0] : i < ports.size() ? ports[i] : "";
      if (!port.empty()) {
        out += ":" + std::string(port);
      }
    }
  }
  if (!ci.dbname.empty()) {
    out += "/" + ci.dbname;
  }
  return out;
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
