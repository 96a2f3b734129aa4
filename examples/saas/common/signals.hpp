#pragma once
// examples/saas/common/signals.hpp: graceful shutdown for the services. SIGINT and SIGTERM are
// blocked before any thread starts (threads inherit the mask, so no thread is interrupted at
// a random point) and then awaited with sigwait on one thread, which stops the server.

#include <signal.h>

namespace saas {

/// Blocks SIGINT and SIGTERM in the calling thread; call it first in main, before any thread
/// exists. Returns the set to pass to wait_stop_signal.
inline sigset_t block_stop_signals() noexcept {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  sigaddset(&s, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &s, nullptr);
  return s;
}

/// Waits until SIGINT or SIGTERM arrives; returns its number.
inline int wait_stop_signal(const sigset_t &s) noexcept {
  int sig = 0;
  sigwait(&s, &sig);
  return sig;
}

} // namespace saas
