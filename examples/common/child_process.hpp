#pragma once
// examples/common/child_process.hpp: child processes that die with their parent, for the
// examples and tests that start workers (billing_run's workers, the SaaS services under
// saas.e2e, the multi-process tests' children).
//
// spawn() starts a program with posix_spawn (safe in a threaded parent, unlike fork), signals
// unblocked, and LAKH_PARENT_PID=<parent pid> added to its environment. The child calls
// die_with_parent() first thing in main(): when LAKH_PARENT_PID is set, it asks the kernel
// for SIGKILL when its parent dies (PR_SET_PDEATHSIG) and exits at once if the parent is
// already gone. So a parent that aborts takes its children with it, instead of leaving them
// to hold a database lease or a test runner's pipe open. Linux only. The signal follows the
// THREAD that spawned the child: spawn from a thread that outlives the child.
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <system_error>
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

} // namespace lakh_examples
