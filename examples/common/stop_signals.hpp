#pragma once
// examples/common/stop_signals.hpp: graceful shutdown on SIGINT and SIGTERM for the examples'
// programs (billing_run, the SaaS services). The signals are blocked before any thread starts
// (threads inherit the mask, so none is interrupted at a random point) and then awaited with
// sigwait, either by the caller (wait_stop_signal) or by a thread that requests stop on a
// std::stop_source (stop_on_signal). Children started by spawn() get them unblocked again.
#include <pthread.h>
#include <signal.h>

#include <stop_token>
#include <thread>

namespace lakh_examples {

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

/// Waits until SIGINT or SIGTERM (blocked by block_stop_signals) arrives; returns its number.
inline int wait_stop_signal(const sigset_t &s) noexcept {
  int sig = 0;
  sigwait(&s, &sig);
  return sig;
}

/// block_stop_signals(), then a detached thread that requests stop on `stop` at every SIGINT
/// or SIGTERM for the rest of the process. Call it first in main, before any thread exists.
inline void stop_on_signal(std::stop_source stop) {
  const sigset_t s = block_stop_signals();
  std::thread([s, stop]() mutable {
    while (true) {
      (void)wait_stop_signal(s);
      stop.request_stop();
    }
  }).detach();
}

} // namespace lakh_examples
