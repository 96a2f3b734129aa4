#pragma once
// lakh/detail/wait.hpp: the one deadline of lakh's blocking calls. Every `_for(d)` and
// `_until(tp)` form (semaphore, channel, select, worker_pool) turns its argument into an
// optional steady-clock time point here: empty means no deadline, so that hours::max(),
// time_point::max() or a century never overflow into a deadline in the past.

#include <chrono>
#include <optional>

namespace lakh::detail {

/// A deadline on the steady clock; empty: none.
using steady_deadline = std::optional<std::chrono::steady_clock::time_point>;

/// A far deadline (about a century) is no deadline: steady time points overflow past ~292
/// years, and a wait that long is a wait forever in practice. Compared in double seconds, so
/// that no duration type (hours::max(), ...) overflows while being compared.
inline bool beyond_steady_horizon(double seconds_left) noexcept {
  return seconds_left >= 100.0 * 365.25 * 24 * 3600;
}

/// The steady-clock time `left` from now (now itself when left is not positive); empty (no
/// deadline) beyond the horizon.
template <class Rep, class Period>
steady_deadline steady_deadline_in(std::chrono::duration<Rep, Period> left) {
  const auto now = std::chrono::steady_clock::now();
  if (left <= left.zero()) {
    return now;
  }
  if (beyond_steady_horizon(std::chrono::duration<double>(left).count())) {
    return std::nullopt;
  }
  return now + std::chrono::ceil<std::chrono::steady_clock::duration>(left);
}

/// The steady-clock equivalent of a deadline on any clock (the time left, measured once now
/// and then waited on the steady clock, which never jumps); empty beyond the horizon.
template <class Clock, class Duration>
steady_deadline steady_deadline_at(std::chrono::time_point<Clock, Duration> tp) {
  const auto now = Clock::now();
  using seconds = std::chrono::duration<double>;
  const double left =
      seconds(tp.time_since_epoch()).count() - seconds(now.time_since_epoch()).count();
  if (left <= 0) {
    return std::chrono::steady_clock::now();
  }
  if (beyond_steady_horizon(left)) {
    return std::nullopt;
  }
  return steady_deadline_in(tp - now); // both within range: cannot overflow
}

/// Waits on `cv` (a std::condition_variable or _any, with `lk`) until pred() holds or the
/// deadline passes; returns pred(). No deadline: waits for pred() alone.
template <class Cv, class Lock, class Pred>
bool wait_until(Cv &cv, Lock &lk, const steady_deadline &d, Pred pred) {
  if (!d) {
    cv.wait(lk, pred);
    return true;
  }
  return cv.wait_until(lk, *d, pred);
}

} // namespace lakh::detail
