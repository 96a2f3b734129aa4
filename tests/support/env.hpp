#pragma once
// Test support: the servers' addresses, from the environment that scripts/services exports.
// A missing variable is a failure, never a skip: tests that claim database safety must talk
// to a real server.

#include <cstdlib>
#include <stdexcept>
#include <string>

namespace lakh::test {

/// The value of environment variable `name`; throws std::runtime_error naming it (and how to
/// provide it) when it is unset or empty.
inline std::string require_env(const char *name) {
  const char *v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    throw std::runtime_error(std::string("environment variable ") + name +
                             " is not set: run the tests under scripts/services run (e.g. "
                             "scripts/services run ctest --preset dev)");
  }
  return v;
}

inline std::string database_url() {
  return require_env("DATABASE_URL");
}
inline std::string redis_url() {
  return require_env("REDIS_URL");
}
inline std::string nats_url() {
  return require_env("NATS_URL");
}

} // namespace lakh::test
