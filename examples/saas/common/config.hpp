#pragma once
// examples/saas/common/config.hpp: a service's settings from the environment plus an optional
// `.env` file (KEY=VALUE lines; '#' comments; values optionally in single or double quotes).
// The environment wins over the file, so a deployment overrides what a developer wrote down.
// Every error names the variable (or the file and line) and what was wrong with it.

#include <lakh/version.hpp>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

namespace saas {

/// A missing or malformed setting. what() names the variable or the file:line.
struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class config {
public:
  /// Reads `env_file` if it exists (a missing file is not an error). Thread-safety: n/a.
  /// @throws config_error for a malformed line ("<file>:<line>: ..."), naming the line.
  static config load(const std::string &env_file = ".env") {
    config c;
    std::ifstream in(env_file);
    std::string line;
    for (int n = 1; in && std::getline(in, line); ++n) {
      const auto first = line.find_first_not_of(" \t");
      if (first == std::string::npos || line[first] == '#') {
        continue;
      }
      line = line.substr(first);
      if (line.rfind("export ", 0) == 0) {
        line = line.substr(7);
      }
      const auto eq = line.find('=');
      const std::string where = env_file + ":" + std::to_string(n) + ": ";
      if (eq == std::string::npos || eq == 0) {
        throw config_error(where + "expected KEY=VALUE, got \"" + line + "\"");
      }
      std::string key = line.substr(0, eq);
      while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) {
        key.pop_back();
      }
      if (key.find_first_not_of(
              "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") !=
              std::string::npos ||
          (key[0] >= '0' && key[0] <= '9')) {
        throw config_error(where + "\"" + key + "\" is not a variable name");
      }
      std::string value = line.substr(eq + 1);
      const auto v0 = value.find_first_not_of(" \t");
      value = v0 == std::string::npos ? "" : value.substr(v0);
      if (!value.empty() && (value[0] == '"' || value[0] == '\'')) {
        const char q = value[0];
        const auto close = value.find(q, 1);
        if (close == std::string::npos) {
          throw config_error(where + key + ": unterminated " + (q == '"' ? "double" : "single") +
                             " quote");
        }
        value = value.substr(1, close - 1);
      } else {
        const auto hash = value.find(" #");
        value = value.substr(0, hash);
        while (!value.empty() &&
               (value.back() == ' ' || value.back() == '\t' || value.back() == '\r')) {
          value.pop_back();
        }
      }
      c.file_[key] = value;
    }
    return c;
  }

  /// The value of `name` (environment first, then the file), if set and not empty.
  [[nodiscard]] std::optional<std::string> find(const std::string &name) const {
    if (const char *v = std::getenv(name.c_str()); v != nullptr && *v != '\0') {
      return std::string(v);
    }
    if (auto it = file_.find(name); it != file_.end() && !it->second.empty()) {
      return it->second;
    }
    return std::nullopt;
  }

  /// @throws config_error "<name> is not set (environment or .env)".
  [[nodiscard]] std::string require(const std::string &name) const {
    auto v = find(name);
    if (!v) {
      throw config_error(name + " is not set (environment or .env)");
    }
    return *v;
  }

  [[nodiscard]] std::string get(const std::string &name, std::string fallback) const {
    return find(name).value_or(std::move(fallback));
  }

  /// An integer within [lo, hi]. @throws config_error naming the variable, the value and the
  /// range when it is not a whole number in range.
  [[nodiscard]] long long integer(const std::string &name, long long fallback, long long lo,
                                  long long hi) const {
    const auto v = find(name);
    if (!v) {
      return fallback;
    }
    errno = 0;
    char *end = nullptr;
    const long long n = std::strtoll(v->c_str(), &end, 10);
    if (errno != 0 || end == v->c_str() || *end != '\0' || n < lo || n > hi) {
      throw config_error(name + "=\"" + *v + "\" must be a whole number in " + std::to_string(lo) +
                         ".." + std::to_string(hi));
    }
    return n;
  }

  /// A TCP port (1..65535).
  [[nodiscard]] int port(const std::string &name, int fallback) const {
    return static_cast<int>(integer(name, fallback, 1, 65535));
  }

  /// Milliseconds (0..one day).
  [[nodiscard]] std::chrono::milliseconds millis(const std::string &name,
                                                 std::chrono::milliseconds fallback) const {
    return std::chrono::milliseconds(integer(name, fallback.count(), 0, 86'400'000));
  }

private:
  std::map<std::string, std::string> file_;
};

/// The command line of a SaaS program, which is configured by its environment (and .env):
/// `--help` prints what it is and where its settings are documented, `--version` lakh's
/// version (both: exit status 0); any other argument is a usage error, one line on stderr
/// (status 2, as lakh's scripts). Returns the status to exit with, or nullopt to run.
inline std::optional<int> command_line(int argc, char **argv, const std::string &program,
                                       const std::string &about) {
  if (argc < 2) {
    return std::nullopt;
  }
  const std::string a = argv[1];
  if (argc == 2 && (a == "--help" || a == "-h")) {
    std::printf("usage: %s [--help | --version]\n%s\nSettings: environment variables (and a "
                ".env file in the working directory), listed in docs/architecture.md#configuration."
                "\n",
                program.c_str(), about.c_str());
    return 0;
  }
  if (argc == 2 && a == "--version") {
    std::printf("%s\n", lakh::version_string);
    return 0;
  }
  std::fprintf(stderr,
               "%s: unexpected argument '%s': settings are environment variables (try "
               "--help)\n",
               program.c_str(), a.c_str());
  return 2;
}

} // namespace saas
