#pragma once
// Child processes for multi-process tests: lakh_examples::child_process (posix_spawn: safe in
// a threaded test binary, unlike fork) with a pipe to each child's stdin and one from its
// stdout, started and finished under doctest's checks. The children call
// lakh_examples::die_with_parent(), so a test that aborts takes them with it; a child_process
// that goes out of scope unfinished is killed and reaped.
#include <child_process.hpp>

#include <doctest/doctest.h>

#include <sys/wait.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace lakh::test {

using lakh_examples::child_process;

/// Starts args[0] with args and pipes to its stdin and from its stdout; REQUIREs success.
inline child_process spawn_child(const std::vector<std::string> &args) {
  std::optional<child_process> c;
  REQUIRE_NOTHROW(c.emplace(args, lakh_examples::child_stdio::pipes));
  return std::move(*c);
}

/// Reads the child's remaining lines, closes the pipes, waits for it; CHECKs exit status 0.
inline std::vector<std::string> finish_child(child_process &c) {
  std::vector<std::string> lines;
  for (std::string l = c.read_line(); !l.empty(); l = c.read_line()) {
    lines.push_back(l);
  }
  const int status = c.wait();
  INFO(lakh_examples::exit_description(status));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  return lines;
}

} // namespace lakh::test
