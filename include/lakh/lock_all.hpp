#pragma once
// lakh/lock_all.hpp: lakh::lock_all(a, b, ...), a scoped guard that locks any mix of ranked
// mutexes and keyed lockables (lakh/lock_order.hpp) in ONE global order, rank, then name,
// then key instance and subinstance, then address, whatever order they are written in; and
// with_locks(fn, a, b, ...). Unlike std::scoped_lock (try and back off), the order is the same for
// every call and every thread, and the checker sees each acquisition. Guide: docs/lock_order.md.

#include <lakh/detail/source_location.hpp>
#include <lakh/lock_order.hpp>
#include <lakh/thread_annotations.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

namespace lakh {

/// lock_all(a, b, ...): locks all its arguments in the ONE global order (rank, then name,
/// then key instance and subinstance, then address) whatever order they are passed in, and unlocks
/// them in reverse when it goes out of scope. Written like a function call:
///
///     const auto guard = lakh::lock_all(accounts_mu, ledger_mu, pg_tenant_lock);
///
/// (it is a class template deduced from its arguments, so that the caller's source position
/// can follow the pack as a defaulted argument.) Arguments may be any ordered_lockable:
/// ranked mutexes and foreign lockables with a lock_order::key, mixed.
///
/// Since every thread acquires any set in the same order, two lock_all calls can never
/// deadlock against each other, nor against nested acquisitions that respect the ranks.
/// If a lock() throws, the locks already taken are released and the exception propagates.
/// Memory ordering: that of each lock. Fairness: none beyond each lock's. A guard belongs to
/// the thread that built it; its members never block or allocate unless noted.
template <lock_order::ordered_lockable... Ls> class [[nodiscard]] lock_all {
  static_assert(sizeof...(Ls) >= 1, "lakh::lock_all needs at least one lock");
  static constexpr std::size_t count = sizeof...(Ls);

public:
  /// Sorts and locks. Blocks: until every lock is acquired. Allocates: never itself (the
  /// checker may).
  /// @throws std::invalid_argument if the same lock object is passed twice.
  /// @throws what a lock() throws (lakh::lock_order_error in throw_error mode), after
  /// releasing the ones already acquired.
  [[nodiscard]] explicit lock_all(Ls &...locks,
                                  const source_location &site = source_location::current())
      LAKH_NO_THREAD_SAFETY_ANALYSIS : locks_(locks...) {
    order_ = sorted(std::index_sequence_for<Ls...>{});
    std::size_t taken = 0;
    try {
      for (; taken < count; ++taken) {
        lock_index(order_[taken], site, std::index_sequence_for<Ls...>{});
      }
    } catch (...) {
      while (taken > 0) {
        --taken;
        unlock_index(order_[taken], std::index_sequence_for<Ls...>{});
      }
      throw;
    }
  }

  /// Unlocks in reverse acquisition order.
  ~lock_all() LAKH_NO_THREAD_SAFETY_ANALYSIS {
    for (std::size_t i = count; i-- > 0;) {
      unlock_index(order_[i], std::index_sequence_for<Ls...>{});
    }
  }
  lock_all(const lock_all &) = delete;
  lock_all &operator=(const lock_all &) = delete;

  /// The argument positions (0-based) in the order they were locked (for tests and logs).
  [[nodiscard]] const std::array<std::size_t, count> &acquisition_order() const noexcept {
    return order_;
  }

private:
  template <std::size_t... I>
  std::array<std::size_t, count> sorted(std::index_sequence<I...>) const {
    if constexpr (count == 2) { // the common case, without arrays on the stack
      const lock_order::key k0 = lock_order::key_of(std::get<0>(locks_));
      const lock_order::key k1 = lock_order::key_of(std::get<1>(locks_));
      const void *const a0 = &std::get<0>(locks_);
      const void *const a1 = &std::get<1>(locks_);
      if (a0 == a1) {
        throw std::invalid_argument("lakh::lock_all: the same lock (\"" +
                                    std::string(k0.cls.name()) +
                                    "\") is passed twice, as arguments 0 and 1");
      }
      if (lock_order::ordered_before(k1, a1, k0, a0)) {
        return {1, 0};
      }
      return {0, 1};
    }
    const std::array<lock_order::key, count> keys{lock_order::key_of(std::get<I>(locks_))...};
    const std::array<const void *, count> address{
        static_cast<const void *>(&std::get<I>(locks_))...};
    std::array<std::size_t, count> out{I...};
    // Insertion sort of indices: the lists are short, and moving 8-byte indices (rather than
    // whole entries) keeps the stores and loads the same width.
    for (std::size_t i = 1; i < count; ++i) {
      const std::size_t x = out[i];
      std::size_t j = i;
      for (; j > 0 &&
             lock_order::ordered_before(keys[x], address[x], keys[out[j - 1]], address[out[j - 1]]);
           --j) {
        out[j] = out[j - 1];
      }
      out[j] = x;
    }
    for (std::size_t i = 1; i < count; ++i) {
      if (address[out[i]] == address[out[i - 1]]) {
        const std::size_t first = std::min(out[i], out[i - 1]);
        const std::size_t second = std::max(out[i], out[i - 1]);
        throw std::invalid_argument("lakh::lock_all: the same lock (\"" +
                                    std::string(keys[out[i]].cls.name()) +
                                    "\") is passed twice, as arguments " + std::to_string(first) +
                                    " and " + std::to_string(second));
      }
    }
    return out;
  }

  template <std::size_t... I>
  void lock_index(std::size_t which, const source_location &site,
                  std::index_sequence<I...>) LAKH_NO_THREAD_SAFETY_ANALYSIS {
    (void)((which == I ? (detail::lock_order::lock_at(std::get<I>(locks_), site), true) : false) ||
           ...);
  }

  template <std::size_t... I>
  void unlock_index(std::size_t which,
                    std::index_sequence<I...>) noexcept LAKH_NO_THREAD_SAFETY_ANALYSIS {
    (void)((which == I ? (std::get<I>(locks_).unlock(), true) : false) || ...);
  }

  std::tuple<Ls &...> locks_;
  std::array<std::size_t, count> order_{};
};

template <class... Ls> lock_all(Ls &...) -> lock_all<Ls...>;

/// Runs fn() while holding all of `locks`, acquired as lock_all does (one global order), and
/// returns fn's result. The checker's reports show this header as the acquisition site; use
/// lock_all directly where the caller's site matters.
/// Thread-safe. Blocks: until every lock is acquired, then for fn. Allocates: as the locks
/// and fn.
/// @throws std::invalid_argument if a lock is passed twice; what a lock() or fn throws.
template <class F, lock_order::ordered_lockable... Ls>
decltype(auto) with_locks(F &&fn, Ls &...locks) {
  const lock_all<Ls...> guard(locks...);
  return std::invoke(std::forward<F>(fn));
}

} // namespace lakh
