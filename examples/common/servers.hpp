#pragma once
// examples/common/servers.hpp: start, stop or restart one server (PostgreSQL, Redis, NATS) of
// the set that scripts/services started, for the tests and examples that take a server away
// (outages, restarts). They go through the script, the one place that knows each server's
// command line, port and data directory (`scripts/services --help`); the script finds the
// running set from LAKH_SERVICES_DIR, which `scripts/services run` exports.
//
// LAKH_SERVICES_SCRIPT, the script's path in the source tree, is defined by CMake for every
// target that links lakh_examples_common.
#include <child_process.hpp>

#include <sys/wait.h>

#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lakh_examples {

#ifdef LAKH_SERVICES_SCRIPT
/// The path of scripts/services in the source tree this program was built from.
inline constexpr const char *services_script = LAKH_SERVICES_SCRIPT;
#endif

/// Runs `script action server` (action: start, stop or restart; server: pg, redis or nats)
/// and waits until it is done: stop returns once the server is gone, start and restart once
/// it answers. The script's stdout is discarded; its errors go to stderr.
/// Blocks: for the script (a few seconds; it gives up after about 30 s).
/// @throws std::runtime_error naming the command and how it ended.
inline void services(std::string_view action, std::string_view server, const std::string &script) {
  const std::string what = script + " " + std::string(action) + " " + std::string(server);
  int status = 0;
  try {
    child_process run({script, std::string(action), std::string(server)},
                      child_stdio::discard_stdout);
    status = run.wait();
  } catch (const std::exception &e) {
    throw std::runtime_error("`" + what + "` did not start: " + e.what());
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("`" + what + "` failed (" + exit_description(status) + ")");
  }
}

#ifdef LAKH_SERVICES_SCRIPT
/// services(action, server, services_script).
inline void services(std::string_view action, std::string_view server) {
  services(action, server, services_script);
}
#endif

} // namespace lakh_examples
