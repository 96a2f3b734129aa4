#pragma once
// lakh/ranked_mutex.hpp: mutexes with a rank and a name (a lock class), checked by the
// lock-order checker of lakh/lock_order.hpp: basic_ranked_mutex<Mutex> over any standard-like
// mutex, and its two common forms ranked_mutex (std::mutex) and ranked_shared_mutex
// (std::shared_mutex, whose shared-lock members exist only for shared mutex types); plus
// lakh::lock_guard<M>, a scoped guard Clang's -Wthread-safety follows. lock()/unlock()/
// try_lock() as std::mutex, so std::scoped_lock and std::unique_lock work too.
// Guide: docs/lock_order.md.

#include <lakh/detail/source_location.hpp>
#include <lakh/lock_order.hpp>
#include <lakh/thread_annotations.hpp>

#include <atomic>
#include <concepts>
#include <cstdint>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>

namespace lakh {
namespace detail::lock_order {

/// What basic_ranked_mutex wraps: a default-constructible lock with lock/unlock/try_lock.
template <class M>
concept exclusive_lockable = std::default_initializable<M> && requires(M &m) {
  m.lock();
  m.unlock();
  { m.try_lock() } -> std::convertible_to<bool>;
};

/// A lock that can also be held shared (std::shared_mutex, std::shared_timed_mutex).
template <class M>
concept shared_lockable = exclusive_lockable<M> && requires(M &m) {
  m.lock_shared();
  m.unlock_shared();
  { m.try_lock_shared() } -> std::convertible_to<bool>;
};

/// The public name of basic_ranked_mutex<M>, for reports and errors.
template <class M> inline constexpr std::string_view ranked_name = "lakh::basic_ranked_mutex";
template <> inline constexpr std::string_view ranked_name<std::mutex> = "lakh::ranked_mutex";
template <>
inline constexpr std::string_view ranked_name<std::shared_mutex> = "lakh::ranked_shared_mutex";

/// An unlock() by a thread that does not hold the lock: reports per the mode and returns
/// true when the unlock must be skipped (any mode but ignore).
[[gnu::noinline, gnu::cold]] inline bool unlock_not_held(std::string_view type,
                                                         const class_info &c) {
  const mode m = current_mode();
  if (m == mode::ignore) {
    return false;
  }
  thread_state &t = this_thread();
  deliver(m, "lakh::lock_order: " + std::string(type) + "::unlock: thread #" +
                 std::to_string(thread_number(t)) + " unlocks " + describe(c) +
                 ", which it does not hold; the unlock is skipped\n");
  return true;
}

[[noreturn]] inline void not_held(std::string_view type, const class_info &c,
                                  const source_location &site) {
  std::string text = std::string(type) + "::assert_held: " + describe(c) +
                     " is not held by this thread (checked at " + describe(site) + ")";
  if (current_mode() == mode::abort) {
    deliver(mode::abort, text + '\n');
  }
  throw usage_error(text);
}

} // namespace detail::lock_order

/// A lock of type Mutex with a rank and a name, checked by lakh's lock-order checker.
/// Use ranked_mutex or ranked_shared_mutex; other Mutex types (std::timed_mutex, ...) work.
///
/// Every member is thread-safe, never blocks and never allocates unless its comment says
/// otherwise. Memory ordering and fairness: those of Mutex (std::mutex: an unlock()
/// happens-before the next successful lock of the same mutex; no fairness. std::shared_mutex:
/// an unlock() also happens-before every later shared lock, an unlock_shared() a later
/// lock(); glibc's readers may starve a writer). Not recursive: re-locking from the owning
/// thread is reported by the checker (and is undefined behaviour, a self-deadlock, if the
/// mode lets it proceed). The checker treats shared and exclusive acquisitions alike (a
/// reader can be part of a deadlock cycle with writers); is_held_by_this_thread() and
/// assert_held() concern EXCLUSIVE ownership.
/// Use with lakh::lock_all for several locks; std::scoped_lock / std::unique_lock work too,
/// but then the checker's reports show a site inside the standard library.
template <detail::lock_order::exclusive_lockable Mutex>
class LAKH_CAPABILITY("mutex") basic_ranked_mutex {
  static constexpr bool shared = detail::lock_order::shared_lockable<Mutex>;

public:
  /// A lock of class (rank, name). Locks must be acquired in non-decreasing rank order.
  /// Blocks: briefly (interning the class). Allocates: may (first use of a class).
  basic_ranked_mutex(std::uint32_t rank, std::string_view name) : cls_(rank, name) {}
  /// A lock of an already interned class.
  explicit basic_ranked_mutex(lock_order::lock_class cls) noexcept : cls_(cls) {}
  basic_ranked_mutex(const basic_ranked_mutex &) = delete;
  basic_ranked_mutex &operator=(const basic_ranked_mutex &) = delete;
  /// No thread may hold or wait for it.
  ~basic_ranked_mutex() { detail::lock_order::forget_for_tsan(mu_); }

  /// Acquires the lock exclusively. With the checker on, first checks the order against the
  /// locks this thread holds (`site`, defaulted to the caller's position, goes in reports).
  /// Blocks: until no other thread holds it.
  /// Allocates: may (checker bookkeeping, the first time an edge is seen).
  /// @throws lakh::lock_order_error in throw_error mode on a potential deadlock (not acquired).
  /// @throws std::system_error if the underlying Mutex fails.
  void lock(const source_location &site = source_location::current()) LAKH_ACQUIRE() {
    const bool tracked = check(site);
    acquire(tracked, [this] { mu_.lock(); });
    owner_.store(detail::lock_order::thread_token(), std::memory_order_relaxed);
    tracked_ = tracked;
  }

  /// Acquires the lock exclusively if it is free. Records it for the checker, without an
  /// order check (a try cannot deadlock).
  [[nodiscard]] bool try_lock(const source_location &site = source_location::current())
      LAKH_TRY_ACQUIRE(true) {
    if (!mu_.try_lock()) {
      return false;
    }
    tracked_ = record_try(site);
    owner_.store(detail::lock_order::thread_token(), std::memory_order_relaxed);
    return true;
  }

  /// Releases the exclusive lock, which this thread must hold. Any order relative to other
  /// locks. With the checker on, an unlock by a thread that does not hold it is reported and
  /// then SKIPPED (unlocking another thread's std::mutex is undefined behaviour); in ignore
  /// mode it is not checked.
  /// Thread-safety: owner only. Allocates: only to build a report.
  /// @throws lakh::lock_order_error in throw_error mode if this thread does not hold it.
  void unlock() LAKH_RELEASE() {
    if (owner_.load(std::memory_order_relaxed) != detail::lock_order::thread_token() &&
        detail::lock_order::unlock_not_held(name_of_type, cls_.info())) {
      return;
    }
    const bool tracked = tracked_; // read under the lock; the bookkeeping runs after it
    owner_.store(nullptr, std::memory_order_relaxed);
    mu_.unlock();
    if (tracked) {
      (void)detail::lock_order::release(this);
    }
  }

  /// Acquires the lock shared; checked like lock(). Shared mutex types only.
  /// Blocks: while a writer holds it. Allocates: may.
  /// @throws lakh::lock_order_error in throw_error mode on a potential deadlock.
  void lock_shared(const source_location &site = source_location::current()) requires shared
      LAKH_ACQUIRE_SHARED() {
    acquire(check(site), [this] { mu_.lock_shared(); });
  }

  /// Acquires the lock shared if no writer holds it. Shared mutex types only.
  [[nodiscard]] bool
  try_lock_shared(const source_location &site = source_location::current()) requires shared
      LAKH_TRY_ACQUIRE_SHARED(true) {
    if (!mu_.try_lock_shared()) {
      return false;
    }
    (void)record_try(site);
    return true;
  }

  /// Releases a shared lock. Thread-safety: a shared holder only. Shared mutex types only.
  void unlock_shared() requires shared LAKH_RELEASE_SHARED() {
    mu_.unlock_shared();
    (void)detail::lock_order::release(this);
  }

  /// Fails unless the calling thread holds this lock exclusively; tells Clang's analysis it
  /// is held. Works in every checker mode.
  /// Allocates: only to build the error.
  /// @throws lakh::usage_error if this thread does not hold it (std::abort in abort mode).
  void assert_held(const source_location &site = source_location::current()) const
      LAKH_ASSERT_CAPABILITY(this) {
    if (!is_held_by_this_thread()) {
      detail::lock_order::not_held(name_of_type, cls_.info(), site);
    }
  }

  /// True when the calling thread holds this lock exclusively (exact, in every checker mode).
  [[nodiscard]] bool is_held_by_this_thread() const noexcept {
    return owner_.load(std::memory_order_relaxed) == detail::lock_order::thread_token();
  }

  /// True when the checker has this thread holding the lock, shared or exclusive (false in
  /// ignore mode). Shared mutex types only.
  [[nodiscard]] bool is_shared_held_by_this_thread() const noexcept requires shared {
    return lock_order::is_held(this);
  }

  /// Runs fn() holding the lock exclusively and returns its result; unlocks even if fn
  /// throws. (Clang's analysis checks lambdas on their own: call assert_held() first inside
  /// fn to touch LAKH_GUARDED_BY data.)
  /// Blocks: until acquired, then for fn. Allocates: as lock() and fn.
  /// @throws what lock() or fn throws.
  template <class F>
  decltype(auto) with_lock(F &&fn, const source_location &site = source_location::current())
      LAKH_EXCLUDES(this) LAKH_NO_THREAD_SAFETY_ANALYSIS {
    lock(site);
    const unlocker<&basic_ranked_mutex::unlock> u{*this};
    return std::invoke(std::forward<F>(fn));
  }

  /// Runs fn() holding the lock shared and returns its result. Shared mutex types only.
  /// Blocks: while a writer holds it, then for fn. Allocates: as lock_shared() and fn.
  /// @throws what lock_shared() or fn throws.
  template <class F>
  requires shared decltype(auto)
  with_shared_lock(F &&fn, const source_location &site = source_location::current())
      LAKH_EXCLUDES(this) LAKH_NO_THREAD_SAFETY_ANALYSIS {
    lock_shared(site);
    const unlocker<&basic_ranked_mutex::unlock_shared> u{*this};
    return std::invoke(std::forward<F>(fn));
  }

  /// The key lock_all sorts by: this lock's class, instance 0 (order by address).
  [[nodiscard]] lock_order::key lock_key() const noexcept { return lock_order::key(cls_); }
  [[nodiscard]] lock_order::lock_class lock_class() const noexcept { return cls_; }
  [[nodiscard]] std::uint32_t rank() const noexcept { return cls_.rank(); }
  [[nodiscard]] std::string_view name() const noexcept { return cls_.name(); }

private:
  static constexpr std::string_view name_of_type = detail::lock_order::ranked_name<Mutex>;

  template <void (basic_ranked_mutex::*Unlock)()> struct unlocker {
    basic_ranked_mutex &m;
    ~unlocker() LAKH_NO_THREAD_SAFETY_ANALYSIS { (m.*Unlock)(); }
  };

  /// Checks an acquisition per the mode; true when the checker recorded it (not ignore).
  bool check(const source_location &site) {
    const lock_order::mode m = lock_order::get_mode();
    if (m == lock_order::mode::ignore) {
      return false;
    }
    detail::lock_order::before_lock(cls_.info(), this, site, m);
    return true;
  }

  /// Runs `lock` (a blocking acquisition); if it throws, the checker forgets the attempt.
  template <class Lock> void acquire(bool tracked, Lock lock) LAKH_NO_THREAD_SAFETY_ANALYSIS {
    try {
      lock();
    } catch (...) {
      if (tracked) {
        (void)detail::lock_order::release(this);
      }
      throw;
    }
  }

  /// Records a successful try per the mode; true when the checker recorded it.
  bool record_try(const source_location &site) noexcept {
    if (lock_order::get_mode() == lock_order::mode::ignore) {
      return false;
    }
    detail::lock_order::after_try_lock(cls_.info(), this, site);
    return true;
  }

  Mutex mu_;
  lock_order::lock_class cls_;
  std::atomic<const void *> owner_{nullptr}; // thread_token() of the exclusive owner
  bool tracked_ = false;                     // written and read by the owner only, under mu_
};

/// A mutual-exclusion lock with a rank and a name: std::mutex plus the checker.
using ranked_mutex = basic_ranked_mutex<std::mutex>;
/// A reader-writer lock with a rank and a name: std::shared_mutex plus the checker.
using ranked_shared_mutex = basic_ranked_mutex<std::shared_mutex>;

/// Holds one lock (exclusively) for a scope; Clang's -Wthread-safety follows it (libstdc++'s
/// std::lock_guard is not annotated). Passes the caller's position to the checker.
/// Thread-safety, memory ordering and fairness: those of M.
template <class M> class [[nodiscard]] LAKH_SCOPED_CAPABILITY lock_guard {
public:
  /// Locks `m`. Blocks: until acquired. Allocates: as M::lock.
  /// @throws what M::lock throws (lakh::lock_order_error in throw_error mode).
  explicit lock_guard(M &m, const source_location &site = source_location::current())
      LAKH_ACQUIRE(m)
      : m_(m) {
    detail::lock_order::lock_at(m_, site);
  }
  /// Unlocks, on the owning thread.
  ~lock_guard() LAKH_RELEASE() { m_.unlock(); }
  lock_guard(const lock_guard &) = delete;
  lock_guard &operator=(const lock_guard &) = delete;

private:
  M &m_;
};

} // namespace lakh
