#pragma once
// examples/common/cli_exit.hpp: how lakh's programs end on a command-line error, the same
// way as scripts/*: --help and --version print and exit 0; a usage error is one line on
// stderr saying what was wrong, and exit status 2.

#include <CLI/CLI.hpp>

#include <cstdio>

namespace lakh_examples {

/// Ends `app` after CLI11 threw `e` (parse() or a later validation); returns the exit status.
inline int cli_exit(const CLI::App &app, const CLI::Error &e) {
  if (e.get_exit_code() == 0) { // --help, --help-all, --version
    return app.exit(e);
  }
  std::fprintf(stderr, "%s: %s (try --help)\n", app.get_name().c_str(), e.what());
  return 2;
}

} // namespace lakh_examples
