// Unit tests of lakh_examples::child_process (examples/common/child_process.hpp), the one
// helper that starts child processes for the examples and the multi-process tests.
#include <child_process.hpp>

#include <doctest/doctest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <string>
#include <system_error>

TEST_CASE("child_process.pipes.stdin_and_stdout_then_exit_status" * doctest::timeout(30)) {
  lakh_examples::child_process c({"/bin/sh", "-c", "read x; echo \"got $x\"; echo more; exit 3"},
                                 lakh_examples::child_stdio::pipes);
  REQUIRE(c.pid() > 0);
  REQUIRE(::write(c.to_child(), "hello\n", 6) == 6);
  CHECK(c.read_line() == "got hello");
  CHECK(c.read_line() == "more");
  CHECK(c.read_line().empty()); // end of file
  const int status = c.wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 3);
  CHECK(lakh_examples::exit_description(status) == "exit status 3");
  CHECK(c.pid() == -1);
}

TEST_CASE("child_process.environment.replaces_and_adds_parent_pid" * doctest::timeout(30)) {
  lakh_examples::child_process c({"/bin/sh", "-c", "echo \"$LAKH_CHILD_TEST $LAKH_PARENT_PID\""},
                                 lakh_examples::child_stdio::pipes, {"LAKH_CHILD_TEST=one"});
  CHECK(c.read_line() == "one " + std::to_string(::getpid()));
  CHECK(c.wait() == 0);
}

TEST_CASE("child_process.wait.closes_stdin_so_a_reader_ends" * doctest::timeout(30)) {
  lakh_examples::child_process c({"/bin/cat"}, lakh_examples::child_stdio::pipes);
  const int status = c.wait(); // cat sees end of file on its stdin and exits
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THROWS_AS(c.wait(), std::logic_error);
}

TEST_CASE("child_process.discard_stdout.exit_status_by_signal" * doctest::timeout(30)) {
  lakh_examples::child_process c({"/bin/sh", "-c", "echo hidden; kill -TERM $$"},
                                 lakh_examples::child_stdio::discard_stdout);
  CHECK(c.to_child() == -1);
  CHECK(c.from_child() == nullptr);
  CHECK(c.read_line().empty());
  const int status = c.wait();
  REQUIRE(WIFSIGNALED(status));
  CHECK(lakh_examples::exit_description(status) == "signal " + std::to_string(SIGTERM));
}

TEST_CASE("child_process.destructor.kills_and_reaps_a_running_child" * doctest::timeout(30)) {
  pid_t pid = -1;
  {
    lakh_examples::child_process c({"/bin/sleep", "30"});
    pid = c.pid();
    REQUIRE(pid > 0);
    REQUIRE(::kill(pid, 0) == 0);
  }
  // Reaped: the pid is no child of ours any more (a zombie would still accept kill(pid, 0)).
  CHECK(::waitpid(pid, nullptr, WNOHANG) == -1);
  CHECK(errno == ECHILD);
}

TEST_CASE("child_process.move.transfers_ownership" * doctest::timeout(30)) {
  lakh_examples::child_process a({"/bin/sh", "-c", "exit 7"});
  const pid_t pid = a.pid();
  lakh_examples::child_process b(std::move(a));
  CHECK(a.pid() == -1); // NOLINT(bugprone-use-after-move): the moved-from state is specified
  CHECK(b.pid() == pid);
  CHECK(WEXITSTATUS(b.wait()) == 7);
}

TEST_CASE("child_process.start_failure.throws_naming_the_program") {
  try {
    lakh_examples::child_process c({"/nonexistent/lakh-no-such-program"});
    FAIL("no exception");
  } catch (const std::system_error &e) {
    CHECK(std::string(e.what()).find("/nonexistent/lakh-no-such-program") != std::string::npos);
  }
}
