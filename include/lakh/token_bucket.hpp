#pragma once
// lakh/token_bucket.hpp: lakh::token_bucket, the state of a rate limit: up to `capacity`
// tokens, refilled continuously at `rate` tokens per second; each unit of work takes a token
// and is refused when none is left. Unlike Go's golang.org/x/time/rate.Limiter it never
// waits and holds no lock: a value its owner guards (lakh::retry_budget keeps one behind a
// mutex; a map of per-key buckets shares one lock). The time is an argument, so one clock
// read serves many buckets and tests need no sleeps. Guide: docs/token_bucket.md.

#include <algorithm>
#include <chrono>
#include <limits>
#include <stdexcept>
#include <string>

namespace lakh {

/// A token bucket: `capacity` tokens to start with and at most, `rate` tokens per second
/// added back continuously (fractions count: 0.5 tokens after half a second at rate 1).
///
/// Not thread-safe: one thread at a time, or under its owner's lock. Members never block or
/// allocate and take the current time `now` (defaulted to steady_clock::now()). A `now`
/// earlier than one already seen (another thread's older reading) refills nothing and does
/// not move the bucket's time back.
class token_bucket {
public:
  using clock = std::chrono::steady_clock;

  /// A full bucket of `capacity` tokens refilled at `rate_per_second`, its time set to `now`.
  /// @throws std::invalid_argument if capacity is not positive or rate_per_second is
  ///         negative (or either is not finite).
  token_bucket(double capacity, double rate_per_second, clock::time_point now = clock::now())
      : capacity_(capacity), rate_(rate_per_second), tokens_(capacity), last_(now) {
    if (!finite(capacity) || capacity <= 0.0) {
      throw std::invalid_argument("lakh::token_bucket: capacity (" + std::to_string(capacity) +
                                  ") must be positive");
    }
    if (!finite(rate_per_second) || rate_per_second < 0.0) {
      throw std::invalid_argument("lakh::token_bucket: rate (" + std::to_string(rate_per_second) +
                                  " per second) must be >= 0");
    }
  }

  /// Takes one token if there is one (after refilling up to `now`): true means go ahead.
  [[nodiscard]] bool try_take(clock::time_point now = clock::now()) noexcept {
    refill(now);
    if (tokens_ < 1.0) {
      return false;
    }
    tokens_ -= 1.0;
    return true;
  }

  /// Adds `n` tokens (n >= 0), up to capacity: credit earned otherwise than by time.
  void put(double n, clock::time_point now = clock::now()) noexcept {
    refill(now);
    tokens_ = std::min(capacity_, tokens_ + n);
  }

  /// The tokens there are at `now`, fractions included; takes none.
  [[nodiscard]] double available(clock::time_point now = clock::now()) noexcept {
    refill(now);
    return tokens_;
  }

  /// Whether the bucket is full at `now` (for a limiter that forgets idle keys: a full
  /// bucket is what a new key gets anyway). Changes nothing.
  [[nodiscard]] bool full(clock::time_point now = clock::now()) const noexcept {
    return tokens_ + gained(now) >= capacity_;
  }

  [[nodiscard]] double capacity() const noexcept { return capacity_; }
  [[nodiscard]] double rate() const noexcept { return rate_; }

private:
  static bool finite(double v) noexcept {
    return v == v && v < std::numeric_limits<double>::infinity() &&
           v > -std::numeric_limits<double>::infinity();
  }

  /// The tokens the time from the last refill to `now` adds (uncapped; 0 for an older now).
  [[nodiscard]] double gained(clock::time_point now) const noexcept {
    return now > last_ ? rate_ * std::chrono::duration<double>(now - last_).count() : 0.0;
  }

  void refill(clock::time_point now) noexcept {
    if (now > last_) {
      tokens_ = std::min(capacity_, tokens_ + gained(now));
      last_ = now;
    }
  }

  double capacity_;
  double rate_;
  double tokens_;
  clock::time_point last_;
};

} // namespace lakh
