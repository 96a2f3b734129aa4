#pragma once
// examples/common/child_process.hpp: the one place that starts child processes, for the
// examples and tests that run workers or scripts (billing_run's workers, the SaaS services
// under saas.e2e, the multi-process tests' children, scripts/services through servers.hpp).
//
// spawn() starts a program with posix_spawn (safe in a threaded parent, unlike fork), signals
// unblocked, and LAKH_PARENT_PID=<parent pid> added to its environment. The child calls
// die_with_parent() first thing in main(): when LAKH_PARENT_PID is set, it asks the kernel
// for SIGKILL when its parent dies (PR_SET_PDEATHSIG) and exits at once if the parent is
// already gone. So a parent that aborts takes its children with it, instead of leaving them
// to hold a database lease or a test runner's pipe open. Linux only. The signal follows the
// THREAD that spawned the child: spawn from a thread that outlives the child.
// child_process owns one such child: its standard streams as child_stdio says, killed and
// reaped by the destructor unless wait() reaped it; wait_exit() and exit_description() read
// how a child ended.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

extern char **environ; // NOLINT: POSIX

namespace lakh_examples {

/// Starts args[0] (a path) with args, this process's environment with `env` ("NAME=value",
/// replacing a variable of the same name) and LAKH_PARENT_PID, and no blocked signals;
/// `actions` may redirect its file descriptors. Returns its pid.
/// @throws std::system_error naming the program if posix_spawn fails.
inline pid_t spawn(const std::vector<std::string> &args,
                   const posix_spawn_file_actions_t *actions = nullptr,
                   const std::vector<std::string> &env = {}) {
  std::vector<char *> argv;
  for (const auto &a : args) {
    argv.push_back(const_cast<char *>(a.c_str())); // NOLINT: posix_spawn's signature
  }
  argv.push_back(nullptr);
  std::vector<std::string> own = env;
  own.push_back("LAKH_PARENT_PID=" + std::to_string(::getpid()));
  auto replaced = [&own](const char *e) {
    for (const auto &o : own) {
      const auto eq = o.find('=');
      if (std::strncmp(e, o.c_str(), eq + 1) == 0) {
        return true;
      }
    }
    return false;
  };
  std::vector<char *> envp;
  for (char **e = environ; *e != nullptr; ++e) {
    if (!replaced(*e)) {
      envp.push_back(*e);
    }
  }
  for (auto &o : own) {
    envp.push_back(o.data());
  }
  envp.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[0], actions, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    throw std::system_error(rc, std::generic_category(), "cannot start " + args.at(0));
  }
  return pid;
}

/// In a child started by spawn(): dies (SIGKILL) when the parent dies, and exits with status
/// 125 now if the parent is already gone. Does nothing without LAKH_PARENT_PID.
inline void die_with_parent() noexcept {
  const char *v = std::getenv("LAKH_PARENT_PID");
  if (v == nullptr || *v == '\0') {
    return;
  }
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  // The parent may have died before the call: then we were re-parented already.
  if (::getppid() != static_cast<pid_t>(std::atol(v))) {
    ::_exit(125);
  }
}

/// waitpid(pid) until it returns (retried on EINTR); returns the wait status.
/// @throws std::system_error if waitpid fails (pid is not a child of this process).
inline int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      throw std::system_error(errno, std::generic_category(),
                              "waitpid(" + std::to_string(pid) + ")");
    }
  }
  return status;
}

/// A wait status in words: "exit status N" or "signal N".
inline std::string exit_description(int status) {
  return WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                           : "signal " + std::to_string(WTERMSIG(status));
}

/// How child_process wires the child's standard streams (stderr is always the parent's).
enum class child_stdio {
  inherit,        ///< the parent's stdin and stdout
  discard_stdout, ///< the parent's stdin; stdout to /dev/null
  pipes,          ///< a pipe to its stdin (to_child()) and one from its stdout (from_child())
};

/// One child started by spawn(). Move-only; the destructor SIGKILLs and reaps a child that
/// wait() has not reaped, so none outlives its owner (a test that fails half-way, say).
/// Not thread-safe: one thread owns it.
class child_process {
public:
  /// Starts args[0] with args, `io` for its standard streams and `env` as spawn() takes it.
  /// @throws std::system_error naming the program if a pipe or posix_spawn fails.
  explicit child_process(const std::vector<std::string> &args,
                         child_stdio io = child_stdio::inherit,
                         const std::vector<std::string> &env = {}) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    int in[2] = {-1, -1};  // the child's stdin: [0] its end, [1] ours
    int out[2] = {-1, -1}; // the child's stdout: [0] ours, [1] its end
    try {
      if (io == child_stdio::discard_stdout) {
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
      } else if (io == child_stdio::pipes) {
        // O_CLOEXEC: another child spawned meanwhile must not hold these ends open.
        if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
          throw std::system_error(errno, std::generic_category(),
                                  "cannot start " + args.at(0) + ": pipe");
        }
        posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
        posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
      }
      pid_ = spawn(args, &fa, env);
    } catch (...) {
      posix_spawn_file_actions_destroy(&fa);
      for (int fd : {in[0], in[1], out[0], out[1]}) {
        close_fd(fd);
      }
      throw;
    }
    posix_spawn_file_actions_destroy(&fa);
    close_fd(in[0]);
    close_fd(out[1]);
    to_child_ = in[1];
    if (out[0] >= 0) {
      from_child_ = ::fdopen(out[0], "r");
      if (from_child_ == nullptr) {
        close_fd(out[0]);
      }
    }
  }

  child_process(child_process &&o) noexcept
      : pid_(std::exchange(o.pid_, -1)), to_child_(std::exchange(o.to_child_, -1)),
        from_child_(std::exchange(o.from_child_, nullptr)) {}
  child_process &operator=(child_process &&o) noexcept {
    if (this != &o) {
      kill_and_reap();
      pid_ = std::exchange(o.pid_, -1);
      to_child_ = std::exchange(o.to_child_, -1);
      from_child_ = std::exchange(o.from_child_, nullptr);
    }
    return *this;
  }
  child_process(const child_process &) = delete;
  child_process &operator=(const child_process &) = delete;
  ~child_process() { kill_and_reap(); }

  /// The child's pid; -1 once wait() reaped it.
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// With child_stdio::pipes: the write end of its stdin, else -1.
  [[nodiscard]] int to_child() const noexcept { return to_child_; }
  /// With child_stdio::pipes: its stdout, else nullptr.
  [[nodiscard]] FILE *from_child() const noexcept { return from_child_; }

  /// One line of its stdout without the newline; "" at end of file (or without a pipe).
  /// Blocks: until a line or end of file.
  std::string read_line() {
    std::string line;
    if (from_child_ == nullptr) {
      return line;
    }
    for (int ch = 0; (ch = std::fgetc(from_child_)) != EOF && ch != '\n';) {
      line += static_cast<char>(ch);
    }
    return line;
  }

  /// Closes the pipes (its stdin sees end of file), then waits until it exits; returns the
  /// wait status (exit_description() says it in words).
  /// Blocks: until the child exits.
  /// @throws std::logic_error if it was reaped already.
  int wait() {
    if (pid_ < 0) {
      throw std::logic_error("lakh_examples::child_process::wait: no child (reaped already)");
    }
    close_pipes();
    const int status = wait_exit(pid_);
    pid_ = -1;
    return status;
  }

private:
  static void close_fd(int fd) noexcept {
    if (fd >= 0) {
      ::close(fd);
    }
  }
  void close_pipes() noexcept {
    if (from_child_ != nullptr) {
      std::fclose(from_child_);
      from_child_ = nullptr;
    }
    close_fd(std::exchange(to_child_, -1));
  }
  void kill_and_reap() noexcept {
    close_pipes();
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      pid_ = -1;
    }
  }

  pid_t pid_ = -1;
  int to_child_ = -1;
  FILE *from_child_ = nullptr;
};

} // namespace lakh_examples
