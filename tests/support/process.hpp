#pragma once
// Child processes for multi-process tests: started with lakh_examples::spawn (posix_spawn:
// safe in a threaded test binary, unlike fork), with a pipe to their stdin and one from their
// stdout. The children call lakh_examples::die_with_parent(), so a test that aborts takes
// them with it.
#include <child_process.hpp>

#include <doctest/doctest.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

namespace lakh::test {

struct child_process {
  pid_t pid = -1;
  int to_child = -1;          ///< the child's stdin
  FILE *from_child = nullptr; ///< the child's stdout
};

/// Starts args[0] with args; REQUIREs success.
inline child_process spawn_child(const std::vector<std::string> &args) {
  int in[2];
  int out[2];
  REQUIRE(::pipe(in) == 0);
  REQUIRE(::pipe(out) == 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  for (int fd : {in[0], in[1], out[0], out[1]}) {
    posix_spawn_file_actions_addclose(&fa, fd);
  }
  child_process c;
  std::string error;
  try {
    c.pid = lakh_examples::spawn(args, &fa);
  } catch (const std::exception &e) {
    error = e.what();
  }
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  REQUIRE_MESSAGE(error.empty(), error);
  c.to_child = in[1];
  c.from_child = ::fdopen(out[0], "r");
  REQUIRE(c.from_child != nullptr);
  return c;
}

/// One line of the child's output without its newline; "" at end of file.
inline std::string read_line(FILE *f) {
  std::string line;
  for (int ch = 0; (ch = std::fgetc(f)) != EOF && ch != '\n';) {
    line += static_cast<char>(ch);
  }
  return line;
}

/// Reads the child's remaining lines, closes the pipes, waits for it; CHECKs exit status 0.
inline std::vector<std::string> finish_child(child_process &c) {
  std::vector<std::string> lines;
  for (std::string l = read_line(c.from_child); !l.empty(); l = read_line(c.from_child)) {
    lines.push_back(l);
  }
  std::fclose(c.from_child);
  ::close(c.to_child);
  int status = 0;
  REQUIRE(::waitpid(c.pid, &status, 0) == c.pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  return lines;
}

} // namespace lakh::test
