#pragma once
// lakh/backoff.hpp: how long to wait before retrying, and how many retries a process may
// spend at all: lakh::backoff (capped exponential backoff with FULL jitter, as in the AWS
// Architecture Blog's "Exponential Backoff and Jitter", so a crowd of clients that failed
// together spreads out instead of retrying in lockstep), lakh::retry_budget (retries drawn
// from a shared lakh::token_bucket, Finagle's retry budget and gRPC's retry throttling) and
// lakh::sleep_for(d, stop_token). No database in sight: lakh::pg::retry composes them.
// std and Go have no equivalent. Guide: docs/pg.md (API: lakh/pg/retry.hpp and
// lakh/backoff.hpp).

#include <lakh/status.hpp>
#include <lakh/token_bucket.hpp>

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
/// between retries: the caller passes the retry number. Every member is thread-safe and
/// never blocks or allocates. Memory ordering: none needed, the object is never modified
/// after construction.
class backoff {
public:
  using duration = std::chrono::nanoseconds;

  /// A backoff starting at `base` and never exceeding `cap`.
  /// @throws std::invalid_argument if base <= 0 or cap < base.
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
  [[nodiscard]] constexpr duration base() const noexcept { return base_; }

  /// The largest delay ever returned.
  [[nodiscard]] constexpr duration cap() const noexcept { return cap_; }

  /// The upper bound of retry `retry`'s delay: min(cap, base * 2^retry), without overflow.
  [[nodiscard]] constexpr duration ceiling(unsigned retry) const noexcept {
    auto c = base_;
    for (unsigned i = 0; i < retry && c < cap_; ++i) {
      c = c > cap_ / 2 ? cap_ : c * 2;
    }
    return std::min(c, cap_);
  }

  /// A delay drawn uniformly from [0, ceiling(retry)] with generator `rng`.
  /// Thread-safety: safe if `rng` is not shared.
  template <class URBG> [[nodiscard]] duration delay(unsigned retry, URBG &rng) const {
    std::uniform_int_distribution<duration::rep> pick(0, ceiling(retry).count());
    return duration{pick(rng)};
  }

  /// A delay drawn uniformly from [0, ceiling(retry)] with a per-thread generator.
  [[nodiscard]] duration delay(unsigned retry) const { return delay(retry, detail::jitter_rng()); }

private:
  duration base_;
  duration cap_;
};

/// Sleep for `d` unless stop is requested first: status::ok after the full delay,
/// status::cancelled as soon as `st` is stopped (also if it already was).
/// Thread-safe. Blocks: until `d` elapses or stop is requested. Allocates: never.
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

/// How many retries a group of callers may make: a lakh::token_bucket of `capacity` tokens
/// refilled at `refill_per_second`, one token per retry, and `deposit_per_success` tokens
/// added back by each deposit() (e.g. 0.1: one retry per ten successes, gRPC's token ratio).
/// When a storm of failures drains it, callers stop retrying and fail fast, so retries cannot
/// multiply the load on a struggling server. Share one budget (by reference or shared_ptr)
/// across every call that talks to the same server.
///
/// Every member is thread-safe and never blocks (a short internal critical section) or
/// allocates. Memory ordering: every member takes an internal mutex, so a withdraw
/// happens-before any withdraw or deposit that observes its effect. Fairness: none needed.
class retry_budget {
public:
  using clock = token_bucket::clock;

  /// A full bucket of `capacity` tokens.
  /// @throws std::invalid_argument if capacity < 1, refill_per_second < 0 or
  ///         deposit_per_success < 0 (or any of them is not finite).
  explicit retry_budget(double capacity, double refill_per_second = 0.0,
                        double deposit_per_success = 0.0)
      : deposit_(checked_deposit(capacity, refill_per_second, deposit_per_success)),
        bucket_(capacity, refill_per_second) {}

  /// Take one token if there is one: true means "you may retry", false means "budget
  /// exhausted, give up now".
  [[nodiscard]] bool try_withdraw() noexcept {
    const std::lock_guard lock(m_);
    return bucket_.try_take(clock::now());
  }

  /// Record a success: adds deposit_per_success tokens (up to capacity).
  void deposit() noexcept {
    if (deposit_ == 0.0) {
      return;
    }
    const std::lock_guard lock(m_);
    bucket_.put(deposit_, clock::now());
  }

  /// The tokens available now (approximate: others may withdraw concurrently).
  [[nodiscard]] double available() noexcept {
    const std::lock_guard lock(m_);
    return bucket_.available(clock::now());
  }

  /// The bucket's size.
  [[nodiscard]] double capacity() const noexcept { return bucket_.capacity(); }

private:
  /// Validates the three settings (retry_budget's own rules and messages); returns the
  /// deposit.
  static double checked_deposit(double capacity, double refill, double deposit) {
    auto finite = [](double v) { return v == v && v < std::numeric_limits<double>::infinity(); };
    if (!finite(capacity) || capacity < 1.0) {
      throw std::invalid_argument("lakh::retry_budget: capacity (" + std::to_string(capacity) +
                                  ") must be at least 1");
    }
    if (!finite(refill) || refill < 0.0) {
      throw std::invalid_argument("lakh::retry_budget: refill_per_second (" +
                                  std::to_string(refill) + ") must be >= 0");
    }
    if (!finite(deposit) || deposit < 0.0) {
      throw std::invalid_argument("lakh::retry_budget: deposit_per_success (" +
                                  std::to_string(deposit) + ") must be >= 0");
    }
    return deposit;
  }

  const double deposit_;
  std::mutex m_;
  token_bucket bucket_; // guarded by m_ (its capacity is immutable)
};

} // namespace lakh
