#pragma once
// lakh/backoff.hpp: how long to wait before retrying, and how many retries a process may
// spend at all.
//
//   - lakh::backoff: capped exponential backoff with FULL jitter (AWS Architecture Blog,
//     "Exponential Backoff and Jitter"): the delay before retry k (k = 0, 1, ...) is drawn
//     uniformly from [0, min(cap, base * 2^k)]. Full jitter spreads a crowd of clients that
//     failed together (a deadlock victim and its peers, everyone after a failover) instead
//     of moving the crowd in lockstep as plain exponential backoff does.
//   - lakh::retry_budget: a token bucket shared by many callers. Each retry withdraws one
//     token; tokens come back at a fixed rate (and optionally per success). When a storm of
//     failures drains it, callers stop retrying and fail fast, so retries cannot multiply
//     the load on a struggling server (the "retry budget" of Finagle and gRPC's retry
//     throttling).
//   - lakh::sleep_for(d, stop_token): a sleep that a std::stop_token cuts short.
//
// None of this knows about databases; lakh::pg::retry (lakh/pg/retry.hpp) composes them.
// std and Go have no equivalent (Go code usually hand-rolls it or uses cenkalti/backoff).

#include <lakh/status.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>

namespace lakh {

namespace detail {

/// A per-thread pseudo-random generator for jitter, seeded from std::random_device and the
/// thread's id so that threads started together draw different delays.
inline std::minstd_rand &jitter_rng() {
  thread_local std::minstd_rand rng{[] {
    std::random_device rd;
    auto seed =
        static_cast<std::uint64_t>(rd()) ^
        (static_cast<std::uint64_t>(std::hash<std::thread::id>{}(std::this_thread::get_id()))
         << 1U);
    return static_cast<std::minstd_rand::result_type>(seed % 2147483646U + 1U);
  }()};
  return rng;
}

} // namespace detail

/// Capped exponential backoff with full jitter: delay(k) is uniform in [0, ceiling(k)] with
/// ceiling(k) = min(cap, base * 2^k).
///
/// A backoff is a small immutable value (two durations); copy it freely. It holds no state
/// between retries: the caller passes the retry number. Memory ordering: none needed, the
/// object is never modified after construction.
class backoff {
public:
  using duration = std::chrono::nanoseconds;

  /// A backoff starting at `base` and never exceeding `cap`.
  /// Thread-safety: n/a (constructor). Blocks: never.
  /// @throws std::invalid_argument if base <= 0 or cap < base.
  /// Allocates: never (except for the exception message).
  backoff(duration base, duration cap) : base_(base), cap_(cap) {
    if (base <= duration::zero()) {
      throw std::invalid_argument("lakh::backoff: base (" + std::to_string(base.count()) +
                                  " ns) must be positive");
    }
    if (cap < base) {
      throw std::invalid_argument("lakh::backoff: cap (" + std::to_string(cap.count()) +
                                  " ns) is less than base (" + std::to_string(base.count()) +
                                  " ns)");
    }
  }

  /// The first retry's ceiling.
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] constexpr duration base() const noexcept { return base_; }

  /// The largest delay ever returned.
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] constexpr duration cap() const noexcept { return cap_; }

  /// The upper bound of retry `retry`'s delay: min(cap, base * 2^retry), without overflow.
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] constexpr duration ceiling(unsigned retry) const noexcept {
    auto c = base_;
    for (unsigned i = 0; i < retry && c < cap_; ++i) {
      c = c > cap_ / 2 ? cap_ : c * 2;
    }
    return std::min(c, cap_);
  }

  /// A delay drawn uniformly from [0, ceiling(retry)] with generator `rng`.
  /// Thread-safety: safe if `rng` is not shared. Blocks: never. Allocates: never.
  template <class URBG> [[nodiscard]] duration delay(unsigned retry, URBG &rng) const {
    std::uniform_int_distribution<duration::rep> pick(0, ceiling(retry).count());
    return duration{pick(rng)};
  }

  /// A delay drawn uniformly from [0, ceiling(retry)] with a per-thread generator.
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] duration delay(unsigned retry) const { return delay(retry, detail::jitter_rng()); }

private:
  duration base_;
  duration cap_;
};

/// Sleep for `d` unless stop is requested first: status::ok after the full delay,
/// status::cancelled as soon as `st` is stopped (also if it already was).
/// Thread-safety: safe. Blocks: until `d` elapses or stop is requested.
/// Allocates: never.
inline status sleep_for(std::chrono::nanoseconds d, std::stop_token st = {}) {
  if (st.stop_requested()) {
    return status::cancelled;
  }
  if (d <= std::chrono::nanoseconds::zero()) {
    return status::ok;
  }
  if (!st.stop_possible()) {
    std::this_thread::sleep_for(d);
    return status::ok;
  }
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  (void)cv.wait_for(lock, st, d, [] { return false; }); // only stop or the deadline end it
  return st.stop_requested() ? status::cancelled : status::ok;
}

/// A token bucket that bounds how many retries a group of callers may make: `capacity`
/// tokens to start with and at most, `refill_per_second` tokens added back continuously,
/// and `deposit_per_success` added by each deposit() (e.g. 0.1: one retry per ten
/// successes, gRPC's token ratio). Share one budget (by reference or shared_ptr) across
/// every call that talks to the same server.
///
/// Memory ordering: every member takes an internal mutex, so a withdraw happens-before any
/// withdraw or deposit that observes its effect. Fairness: none needed (never blocks).
class retry_budget {
public:
  using clock = std::chrono::steady_clock;

  /// A full bucket of `capacity` tokens.
  /// Thread-safety: n/a (constructor). Blocks: never. Allocates: never.
  /// @throws std::invalid_argument if capacity < 1, refill_per_second < 0 or
  ///         deposit_per_success < 0 (or any of them is not finite).
  explicit retry_budget(double capacity, double refill_per_second = 0.0,
                        double deposit_per_success = 0.0)
      : capacity_(capacity), refill_(refill_per_second), deposit_(deposit_per_success),
        tokens_(capacity), last_(clock::now()) {
    auto finite = [](double v) { return v == v && v < std::numeric_limits<double>::infinity(); };
    if (!finite(capacity) || capacity < 1.0) {
      throw std::invalid_argument("lakh::retry_budget: capacity (" + std::to_string(capacity) +
                                  ") must be at least 1");
    }
    if (!finite(refill_per_second) || refill_per_second < 0.0) {
      throw std::invalid_argument("lakh::retry_budget: refill_per_second (" +
                                  std::to_string(refill_per_second) + ") must be >= 0");
    }
    if (!finite(deposit_per_success) || deposit_per_success < 0.0) {
      throw std::invalid_argument("lakh::retry_budget: deposit_per_success (" +
                                  std::to_string(deposit_per_success) + ") must be >= 0");
    }
  }

  /// Take one token if there is one: true means "you may retry", false means "budget
  /// exhausted, give up now".
  /// Thread-safety: safe. Blocks: never (a short internal critical section). Allocates: never.
  [[nodiscard]] bool try_withdraw() noexcept {
    std::lock_guard lock(m_);
    refill_locked();
    if (tokens_ < 1.0) {
      return false;
    }
    tokens_ -= 1.0;
    return true;
  }

  /// Record a success: adds deposit_per_success tokens (up to capacity).
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  void deposit() noexcept {
    if (deposit_ == 0.0) {
      return;
    }
    std::lock_guard lock(m_);
    refill_locked();
    tokens_ = std::min(capacity_, tokens_ + deposit_);
  }

  /// The tokens available now (approximate: others may withdraw concurrently).
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] double available() noexcept {
    std::lock_guard lock(m_);
    refill_locked();
    return tokens_;
  }

  /// The bucket's size. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] double capacity() const noexcept { return capacity_; }

private:
  void refill_locked() noexcept {
    auto now = clock::now();
    if (refill_ > 0.0) {
      std::chrono::duration<double> dt = now - last_;
      tokens_ = std::min(capacity_, tokens_ + dt.count() * refill_);
    }
    last_ = now;
  }

  const double capacity_;
  const double refill_;
  const double deposit_;
  std::mutex m_;
  double tokens_;
  clock::time_point last_;
};

} // namespace lakh
