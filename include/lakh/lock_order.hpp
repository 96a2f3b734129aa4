#pragma once
// lakh/lock_order.hpp: ranked mutexes, lock_all(...) acquiring in ONE global order, and a
// lock-order checker that reports potential deadlocks that did not happen in this run.
//
// Provides:
//   - lakh::ranked_mutex / lakh::ranked_shared_mutex: std::mutex / std::shared_mutex with a
//     rank and a name (together: the lock's CLASS). lock()/unlock()/try_lock(), so they work
//     with std::scoped_lock and std::unique_lock; plus assert_held(), is_held_by_this_thread()
//     and with_lock(fn). Annotated for Clang's -Wthread-safety (lakh/thread_annotations.hpp).
//   - lakh::lock_all(a, b, ...): a [[nodiscard]] RAII guard that locks its arguments in the
//     global order (rank, then name, then the key's instance number, then address), whatever
//     order they are written in, so two threads locking the same set can never deadlock.
//     lakh::with_locks(fn, a, b, ...) runs fn under such a guard.
//   - lakh::lock_guard<M>: a scoped guard for one ranked mutex that Clang's analysis follows
//     (libstdc++'s std::lock_guard is not annotated).
//   - the checker (namespace lakh::lock_order): every blocking acquisition while other locks
//     are held records "held class -> new class" edges in one process-wide graph. A new edge
//     that closes a cycle is a POTENTIAL deadlock, reported with the cycle's names and ranks
//     and both acquisition sites of every edge, even when the two orders were never
//     concurrent (thread 1 took A then B; later thread 2 took B then A). Acquiring a lower
//     rank while holding a higher one is reported as a rank inversion (lockdep's rule), and
//     re-acquiring a lock this thread holds as a recursive acquisition. Modes: ignore,
//     report (to a settable sink, default std::cerr, counted), abort, throw_error (throws
//     lakh::lock_order_error before acquiring: for tests).
//   - the extension point: ANY lockable (a PostgreSQL advisory lock, a file lock) joins the
//     ordering by exposing a lock_order::key (member `lock_key()` or an ADL function
//     `lock_order_key(const L&)`) and calling lock_order::on_acquire / on_try_acquire /
//     on_release from its lock / try_lock / unlock (lock_order::ordered<L> does this for any
//     L, e.g. std::timed_mutex). lock_all then sorts a mix of ranked mutexes and such
//     lockables into the one order, and the checker sees them all.
//
// How it differs from its models. std::mutex has no order at all and std::scoped_lock avoids
// deadlock by try-and-back-off (livelock-prone, and no help across separate lock calls).
// absl::Mutex's detector (which this follows: graph per lock, modes, debug-only) keys the
// graph by mutex ADDRESS and so must forget a mutex when it is destroyed; lakh keys it by
// CLASS (rank + name), like Linux lockdep, so a reused address can neither fake nor hide a
// cycle, and a thousand "account" mutexes share one node. folly::acquireLocked orders by
// address only, which is not stable across runs or processes; lakh's rank+name order is.
// Go has no checker; its runtime detects only a full deadlock, after it has happened.
//
// Default mode: report when NDEBUG is not defined; ignore in release builds and under
// ThreadSanitizer (__SANITIZE_THREAD__ / __has_feature(thread_sanitizer)), which detects lock
// inversions itself. Override at build time with -DLAKH_LOCK_ORDER_DEFAULT_MODE=<mode> (one
// of ignore, report, abort, throw_error) and at run time with lock_order::set_mode().
//
// Instances of ONE class are not ordered by the checker (holding account #1 while locking
// account #2 records nothing): take several locks of one class with lock_all, whose
// address/instance tie-breaker orders them.

#include <lakh/detail/lock_order_graph.hpp>
#include <lakh/detail/source_location.hpp>
#include <lakh/error.hpp>
#include <lakh/thread_annotations.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

namespace lakh {
namespace lock_order {

/// Sets the checker's mode for the whole process. Locks already held keep their tracking:
/// switching to ignore while holding tracked locks still releases them cleanly.
/// Thread-safety: safe (an atomic store; other threads see it on their next acquisition).
/// Blocks: never. Allocates: never.
inline void set_mode(mode m) noexcept {
  detail::lock_order::current.store(m, std::memory_order_relaxed);
}

/// The checker's current mode.
/// Thread-safety: safe. Blocks: never. Allocates: never.
[[nodiscard]] inline mode get_mode() noexcept {
  return detail::lock_order::current_mode();
}

/// Sets the mode for a scope and restores the previous one on exit (handy in tests).
class [[nodiscard]] scoped_mode {
public:
  /// Thread-safety: as set_mode. Blocks: never. Allocates: never.
  explicit scoped_mode(mode m) noexcept : previous_(get_mode()) { set_mode(m); }
  ~scoped_mode() { set_mode(previous_); }
  scoped_mode(const scoped_mode &) = delete;
  scoped_mode &operator=(const scoped_mode &) = delete;

private:
  mode previous_;
};

/// Sends each report (one complete, multi-line text) to `sink` instead of std::cerr; an empty
/// function restores std::cerr. The sink runs on the reporting thread, outside the checker's
/// internal mutex, possibly concurrently on several threads: make it thread-safe.
/// Thread-safety: safe. Blocks: briefly, on the checker's internal mutex. Allocates: may.
inline void set_sink(std::function<void(std::string_view)> sink) {
  auto &r = detail::lock_order::global();
  const std::lock_guard g(r.mu);
  r.sink = std::move(sink);
}

/// How many reports (cycles, rank inversions, recursive acquisitions, non-owner unlocks, in
/// any mode but ignore) have been made since start or the last reset_for_testing().
/// Thread-safety: safe. Blocks: never. Allocates: never.
[[nodiscard]] inline std::uint64_t report_count() noexcept {
  return detail::lock_order::reports.load(std::memory_order_relaxed);
}

/// How many acquired-before edges (between distinct classes) the global graph holds.
/// Thread-safety: safe. Blocks: briefly, on the checker's internal mutex. Allocates: never.
[[nodiscard]] inline std::size_t edge_count() {
  auto &r = detail::lock_order::global();
  const std::lock_guard g(r.mu);
  std::size_t n = 0;
  for (const auto &out : r.out) {
    n += out.size();
  }
  return n;
}

/// Forgets every recorded edge and zeroes report_count(), so that each test starts from an
/// empty graph. Lock classes stay interned (live mutexes point at them).
/// Thread-safety: call only while no other thread acquires or releases checked locks; this
/// thread's held locks stay held. Blocks: briefly, on the internal mutex. Allocates: never.
inline void reset_for_testing() {
  auto &r = detail::lock_order::global();
  const std::lock_guard g(r.mu);
  for (auto &out : r.out) {
    out.clear();
  }
  detail::lock_order::reports.store(0, std::memory_order_relaxed);
  detail::lock_order::generation.fetch_add(1, std::memory_order_release);
}

/// A lock class: a rank and a name, interned process-wide. The checker's graph has one node
/// per class; lock_all orders by rank, then name. Cheap to copy (one pointer); build it once
/// (construction takes a global mutex) and keep it in the lock object.
class lock_class {
public:
  /// Interns (rank, name); equal pairs give equal classes. The name is copied.
  /// Thread-safety: safe. Blocks: briefly, on the checker's internal mutex. Allocates: may.
  lock_class(std::uint32_t rank, std::string_view name)
      : info_(detail::lock_order::intern(rank, name)) {}

  /// The rank: locks must be acquired in non-decreasing rank order.
  /// Thread-safety: safe (immutable once interned). Blocks: never. Allocates: never.
  [[nodiscard]] std::uint32_t rank() const noexcept { return info_->rank; }
  /// The name, as given (stable for the life of the process).
  /// Thread-safety: safe (immutable once interned). Blocks: never. Allocates: never.
  [[nodiscard]] std::string_view name() const noexcept { return info_->name; }

  friend bool operator==(const lock_class &a, const lock_class &b) noexcept {
    return a.info_ == b.info_;
  }

  /// Internal: the interned record. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] const detail::lock_order::class_info &info() const noexcept { return *info_; }

private:
  const detail::lock_order::class_info *info_;
};

/// What a lockable exposes to take part in the ordering: its class and an optional instance
/// number, the tie-breaker between locks of one class (e.g. a PostgreSQL advisory-lock key, so
/// that every PROCESS orders them alike). Instance 0 means "order by address" (stable within
/// one process only).
struct key {
  lock_class cls;
  std::uint64_t instance = 0;

  /// Thread-safety: safe. Blocks: briefly (interning). Allocates: may.
  key(std::uint32_t rank, std::string_view name, std::uint64_t inst = 0)
      : cls(rank, name), instance(inst) {}
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  explicit key(lock_class c, std::uint64_t inst = 0) noexcept : cls(c), instance(inst) {}
};

/// True when lock_order::key_of(l) works: L has `lock_key()` returning a key, or an ADL
/// function `lock_order_key(const L&)` does.
template <class L>
concept has_lock_key = requires(const L &l) {
  { l.lock_key() } -> std::convertible_to<key>;
}
|| requires(const L &l) {
  { lock_order_key(l) } -> std::convertible_to<key>;
};

/// The key of a lockable: its member `lock_key()` if it has one, else `lock_order_key(l)`
/// found by argument-dependent lookup.
/// Thread-safety: as the lockable's accessor. Blocks: never. Allocates: as the accessor.
template <has_lock_key L> [[nodiscard]] key key_of(const L &l) {
  if constexpr (requires {
                  { l.lock_key() } -> std::convertible_to<key>;
                }) {
    return l.lock_key();
  } else {
    return lock_order_key(l);
  }
}

/// A lockable (lock/unlock) that has a lock-order key: what lock_all accepts.
template <class L>
concept ordered_lockable = has_lock_key<L> && requires(L &l) {
  l.lock();
  l.unlock();
};

/// True when (a, address_a) comes before (b, address_b) in the global order: rank, then name,
/// then instance, then address.
/// Thread-safety: pure. Blocks: never. Allocates: never.
[[nodiscard]] inline bool ordered_before(const key &a, const void *address_a, const key &b,
                                         const void *address_b) noexcept {
  if (a.cls.rank() != b.cls.rank()) {
    return a.cls.rank() < b.cls.rank();
  }
  if (!(a.cls == b.cls)) {
    return a.cls.name() < b.cls.name();
  }
  if (a.instance != b.instance) {
    return a.instance < b.instance;
  }
  return std::less<const void *>{}(address_a, address_b);
}

/// Hook for foreign lockables: call from lock(), BEFORE blocking. Checks the acquisition
/// against the locks this thread holds (reporting per the mode), then records `lock` (the
/// object's address, its identity) as held. If the acquisition then fails, call
/// on_release(lock). In ignore mode it does nothing.
/// Thread-safety: safe; records for the calling thread. Blocks: only in mode report/abort
/// when the sink blocks, and briefly on the internal mutex the first time an edge is seen.
/// @throws lakh::lock_order_error in throw_error mode if the acquisition would close a cycle,
/// invert ranks or re-acquire a held lock; the lock is then NOT recorded: do not acquire.
/// Allocates: may, the first time this edge is seen (never on the cached fast path).
inline void on_acquire(const key &k, const void *lock,
                       const source_location &site = source_location::current()) {
  const mode m = get_mode();
  if (m != mode::ignore) {
    detail::lock_order::before_lock(k.cls.info(), lock, site, m);
  }
}

/// Hook for foreign lockables: call from try_lock() AFTER it succeeded. Records `lock` as
/// held without checking (a try cannot deadlock); later acquisitions are checked against it.
/// Thread-safety: safe. Blocks: never. Allocates: never. In ignore mode it does nothing.
inline void on_try_acquire(const key &k, const void *lock,
                           const source_location &site = source_location::current()) noexcept {
  if (get_mode() != mode::ignore) {
    detail::lock_order::after_try_lock(k.cls.info(), lock, site);
  }
}

/// Hook for foreign lockables: call from unlock() (any order, not only LIFO), and after a
/// failed acquisition that called on_acquire. Forgets `lock` for this thread; does nothing
/// if it was not recorded (e.g. it was acquired in ignore mode).
/// Thread-safety: safe. Blocks: never. Allocates: never.
inline void on_release(const void *lock) noexcept {
  (void)detail::lock_order::release(lock);
}

/// True when the checker has `lock` recorded as held by this thread (always false for locks
/// taken in ignore mode).
/// Thread-safety: safe. Blocks: never. Allocates: never.
[[nodiscard]] inline bool is_held(const void *lock) noexcept {
  return detail::lock_order::holds(lock);
}

} // namespace lock_order

namespace detail::lock_order {

template <class L> void lock_at(L &l, const source_location &site) LAKH_NO_THREAD_SAFETY_ANALYSIS {
  if constexpr (requires { l.lock(site); }) {
    l.lock(site);
  } else {
    l.lock();
  }
}

/// An unlock() by a thread that does not hold the lock: reports per the mode and returns
/// true when the unlock must be skipped (any mode but ignore).
[[gnu::noinline, gnu::cold]] inline bool unlock_not_held(std::string_view function,
                                                         const class_info &c) {
  const mode m = current_mode();
  if (m == mode::ignore) {
    return false;
  }
  thread_state &t = this_thread();
  deliver(m, "lakh::lock_order: " + std::string(function) + ": thread #" +
                 std::to_string(thread_number(t)) + " unlocks " + describe(c) +
                 ", which it does not hold; the unlock is skipped\n");
  return true;
}

[[noreturn]] inline void not_held(std::string_view function, const class_info &c,
                                  const source_location &site) {
  std::string text = std::string(function) + ": " + describe(c) +
                     " is not held by this thread (checked at " + describe(site) + ")";
  if (current_mode() == mode::abort) {
    deliver(mode::abort, text + '\n');
  }
  throw usage_error(text);
}

} // namespace detail::lock_order

namespace lock_order {

/// Any lockable L (std::mutex, std::timed_mutex, a third-party lock) given a key, so that it
/// takes part in lock_all's order and in the checker without writing the hooks by hand:
/// lock() calls on_acquire before blocking, try_lock() calls on_try_acquire after success,
/// unlock() calls on_release. `lock_order::ordered<std::mutex> m{lock_order::key(3, "io")};`
///
/// Memory ordering and fairness: those of L. No owner tracking (no assert_held); the
/// checker's lock_order::is_held(&m) tells, in any mode but ignore.
template <class L> class LAKH_CAPABILITY("mutex") ordered {
public:
  /// Builds the wrapped lock from `args`, with key `k`.
  /// Thread-safety: safe. Blocks: as L's constructor. Allocates: as L's constructor.
  template <class... Args>
  explicit ordered(key k, Args &&...args) : lock_(std::forward<Args>(args)...), key_(k) {}
  ordered(const ordered &) = delete;
  ordered &operator=(const ordered &) = delete;
  /// Thread-safety: no thread may hold or wait for it. Blocks: never. Allocates: never.
  ~ordered() {
    if constexpr (std::is_same_v<L, std::mutex>) {
      detail::lock_order::forget_mutex_for_tsan(&lock_); // see ranked_mutex's destructor
    }
  }

  /// Checks the order (see on_acquire), then blocks in L::lock().
  /// Thread-safety: as L. Blocks: until L::lock() returns.
  /// @throws lakh::lock_order_error in throw_error mode on a potential deadlock (not locked).
  /// @throws what L::lock() throws (the checker then forgets the attempt).
  /// Allocates: may, the first time an edge is seen.
  void lock(const source_location &site = source_location::current()) LAKH_ACQUIRE() {
    on_acquire(key_, this, site);
    try {
      lock_.lock();
    } catch (...) {
      on_release(this);
      throw;
    }
  }

  /// L::try_lock(), recorded by the checker on success. Only for an L that has try_lock().
  /// Thread-safety: as L. Blocks: as L::try_lock (never, for the std types).
  /// @throws what L::try_lock() throws. Allocates: never.
  [[nodiscard]] bool try_lock(const source_location &site = source_location::current())
      LAKH_TRY_ACQUIRE(true) {
    if (!lock_.try_lock()) {
      return false;
    }
    on_try_acquire(key_, this, site);
    return true;
  }

  /// L::unlock(), then the checker forgets it. Any order relative to other locks.
  /// Thread-safety: as L (the holder). Blocks: as L::unlock. @throws what L::unlock throws.
  /// Allocates: never.
  void unlock() LAKH_RELEASE() {
    lock_.unlock();
    on_release(this);
  }

  /// The key lock_all sorts by. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] key lock_key() const noexcept { return key_; }
  /// The wrapped lock (e.g. for a condition variable). Locking it directly bypasses the
  /// checker. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] L &underlying() noexcept { return lock_; }

private:
  L lock_;
  key key_;
};

} // namespace lock_order

/// A mutual-exclusion lock with a rank and a name, checked by lakh's lock-order checker.
///
/// Memory ordering: as std::mutex: an unlock() happens-before the next successful lock() or
/// try_lock() of the same mutex. Fairness: none beyond std::mutex (pthread: none).
/// Not recursive: re-locking from the owning thread is reported by the checker (and is
/// undefined behaviour, a self-deadlock, if the mode lets it proceed).
/// Use with lakh::lock_all for several locks; std::scoped_lock / std::unique_lock work too,
/// but then the checker's reports show a site inside the standard library.
class LAKH_CAPABILITY("mutex") ranked_mutex {
public:
  /// A mutex of class (rank, name). Locks must be acquired in non-decreasing rank order.
  /// Thread-safety: safe. Blocks: briefly (interning the class). Allocates: may (first use of
  /// a class).
  ranked_mutex(std::uint32_t rank, std::string_view name) : cls_(rank, name) {}
  /// A mutex of an already interned class. Thread-safety: safe. Blocks: never. Allocates: never.
  explicit ranked_mutex(lock_order::lock_class cls) noexcept : cls_(cls) {}
  ranked_mutex(const ranked_mutex &) = delete;
  ranked_mutex &operator=(const ranked_mutex &) = delete;
  /// Thread-safety: no thread may hold or wait for it. Blocks: never. Allocates: never.
  ~ranked_mutex() { detail::lock_order::forget_mutex_for_tsan(&mu_); }

  /// Blocks until the mutex is acquired. With the checker on, first checks the order against
  /// the locks this thread holds (`site`, defaulted to the caller's position, goes in reports).
  /// Thread-safety: safe. Blocks: until the mutex is free.
  /// @throws lakh::lock_order_error in throw_error mode on a potential deadlock (not acquired).
  /// @throws std::system_error if the underlying std::mutex fails.
  /// Allocates: may (checker bookkeeping, the first time an edge is seen).
  void lock(const source_location &site = source_location::current()) LAKH_ACQUIRE() {
    const lock_order::mode m = lock_order::get_mode();
    const bool tracked = m != lock_order::mode::ignore;
    if (tracked) {
      detail::lock_order::before_lock(cls_.info(), this, site, m);
    }
    try {
      mu_.lock();
    } catch (...) {
      if (tracked) {
        (void)detail::lock_order::release(this);
      }
      throw;
    }
    owner_.store(detail::lock_order::thread_token(), std::memory_order_relaxed);
    tracked_ = tracked;
  }

  /// Acquires the mutex if it is free. Records it for the checker, without an order check.
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] bool try_lock(const source_location &site = source_location::current())
      LAKH_TRY_ACQUIRE(true) {
    if (!mu_.try_lock()) {
      return false;
    }
    const bool tracked = lock_order::get_mode() != lock_order::mode::ignore;
    if (tracked) {
      detail::lock_order::after_try_lock(cls_.info(), this, site);
    }
    owner_.store(detail::lock_order::thread_token(), std::memory_order_relaxed);
    tracked_ = tracked;
    return true;
  }

  /// Releases the mutex, which this thread must hold. Any order relative to other locks.
  /// With the checker on, an unlock by a thread that does not hold it is reported and then
  /// SKIPPED (unlocking another thread's std::mutex is undefined behaviour); in ignore mode
  /// it is not checked.
  /// Thread-safety: owner only. Blocks: never.
  /// @throws lakh::lock_order_error in throw_error mode if this thread does not hold it.
  /// Allocates: only to build a report.
  void unlock() LAKH_RELEASE() {
    if (owner_.load(std::memory_order_relaxed) != detail::lock_order::thread_token() &&
        detail::lock_order::unlock_not_held("lakh::ranked_mutex::unlock", cls_.info())) {
      return;
    }
    const bool tracked = tracked_; // read under the lock; the bookkeeping runs after it
    owner_.store(nullptr, std::memory_order_relaxed);
    mu_.unlock();
    if (tracked) {
      (void)detail::lock_order::release(this);
    }
  }

  /// Fails unless the calling thread holds this mutex; tells Clang's analysis it is held.
  /// Works in every checker mode.
  /// Thread-safety: safe. Blocks: never.
  /// @throws lakh::usage_error if this thread does not hold it (std::abort in abort mode).
  /// Allocates: only to build the error.
  void assert_held(const source_location &site = source_location::current()) const
      LAKH_ASSERT_CAPABILITY(this) {
    if (!is_held_by_this_thread()) {
      detail::lock_order::not_held("lakh::ranked_mutex::assert_held", cls_.info(), site);
    }
  }

  /// True when the calling thread holds this mutex (exact, in every checker mode).
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] bool is_held_by_this_thread() const noexcept {
    return owner_.load(std::memory_order_relaxed) == detail::lock_order::thread_token();
  }

  /// Runs fn() with the mutex held and returns its result; unlocks even if fn throws.
  /// (Clang's analysis checks lambdas on their own: call assert_held() first inside fn to
  /// touch LAKH_GUARDED_BY data.)
  /// Thread-safety: safe. Blocks: until the mutex is free, then for fn.
  /// @throws what lock() or fn throws.  Allocates: as lock() and fn.
  template <class F>
  decltype(auto) with_lock(F &&fn, const source_location &site = source_location::current())
      LAKH_EXCLUDES(this) LAKH_NO_THREAD_SAFETY_ANALYSIS {
    lock(site);
    const unlocker u{*this};
    return std::invoke(std::forward<F>(fn));
  }

  /// The key lock_all sorts by: this mutex's class, instance 0 (order by address).
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] lock_order::key lock_key() const noexcept { return lock_order::key(cls_); }
  /// The class (rank and name). Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] lock_order::lock_class lock_class() const noexcept { return cls_; }
  /// The rank. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::uint32_t rank() const noexcept { return cls_.rank(); }
  /// The name. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::string_view name() const noexcept { return cls_.name(); }

private:
  struct unlocker {
    ranked_mutex &m;
    ~unlocker() LAKH_NO_THREAD_SAFETY_ANALYSIS { m.unlock(); }
  };

  std::mutex mu_;
  lock_order::lock_class cls_;
  std::atomic<const void *> owner_{nullptr}; // thread_token() of the exclusive owner
  bool tracked_ = false;                     // written and read by the owner only, under mu_
};

/// A reader-writer lock with a rank and a name: std::shared_mutex plus the checker.
///
/// Memory ordering: as std::shared_mutex: an unlock() happens-before every later lock or
/// shared lock; an unlock_shared() happens-before a later lock(). Fairness: as the platform's
/// std::shared_mutex (glibc: readers may starve a writer). The checker treats shared and
/// exclusive acquisitions alike (a reader can be part of a deadlock cycle with writers).
/// is_held_by_this_thread()/assert_held() concern EXCLUSIVE ownership; is_shared_held_by_
/// this_thread() relies on the checker's bookkeeping and is false in ignore mode.
class LAKH_CAPABILITY("shared_mutex") ranked_shared_mutex {
public:
  /// A reader-writer lock of class (rank, name).
  /// Thread-safety: safe. Blocks: briefly (interning the class). Allocates: may (first use of
  /// a class).
  ranked_shared_mutex(std::uint32_t rank, std::string_view name) : cls_(rank, name) {}
  /// A reader-writer lock of an already interned class.
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  explicit ranked_shared_mutex(lock_order::lock_class cls) noexcept : cls_(cls) {}
  ranked_shared_mutex(const ranked_shared_mutex &) = delete;
  ranked_shared_mutex &operator=(const ranked_shared_mutex &) = delete;
  ~ranked_shared_mutex() = default;

  /// Exclusive lock; see ranked_mutex::lock.
  /// Thread-safety: safe. Blocks: until no other holder.
  /// @throws lakh::lock_order_error in throw_error mode on a potential deadlock.
  /// Allocates: may.
  void lock(const source_location &site = source_location::current()) LAKH_ACQUIRE() {
    const bool tracked = check(site);
    try {
      mu_.lock();
    } catch (...) {
      if (tracked) {
        (void)detail::lock_order::release(this);
      }
      throw;
    }
    owner_.store(detail::lock_order::thread_token(), std::memory_order_relaxed);
    tracked_ = tracked;
  }

  /// Exclusive try-lock. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] bool try_lock(const source_location &site = source_location::current())
      LAKH_TRY_ACQUIRE(true) {
    if (!mu_.try_lock()) {
      return false;
    }
    tracked_ = record_try(site);
    owner_.store(detail::lock_order::thread_token(), std::memory_order_relaxed);
    return true;
  }

  /// Exclusive unlock; a non-owner's unlock is checked as in ranked_mutex::unlock.
  /// Thread-safety: owner only. Blocks: never.
  /// @throws lakh::lock_order_error in throw_error mode if this thread does not hold it.
  /// Allocates: only to build a report.
  void unlock() LAKH_RELEASE() {
    if (owner_.load(std::memory_order_relaxed) != detail::lock_order::thread_token() &&
        detail::lock_order::unlock_not_held("lakh::ranked_shared_mutex::unlock", cls_.info())) {
      return;
    }
    const bool tracked = tracked_; // read under the lock; the bookkeeping runs after it
    owner_.store(nullptr, std::memory_order_relaxed);
    mu_.unlock();
    if (tracked) {
      (void)detail::lock_order::release(this);
    }
  }

  /// Shared lock; checked like lock().
  /// Thread-safety: safe. Blocks: while a writer holds it.
  /// @throws lakh::lock_order_error in throw_error mode on a potential deadlock.
  /// Allocates: may.
  void lock_shared(const source_location &site = source_location::current()) LAKH_ACQUIRE_SHARED() {
    const bool tracked = check(site);
    try {
      mu_.lock_shared();
    } catch (...) {
      if (tracked) {
        (void)detail::lock_order::release(this);
      }
      throw;
    }
  }

  /// Shared try-lock. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] bool try_lock_shared(const source_location &site = source_location::current())
      LAKH_TRY_ACQUIRE_SHARED(true) {
    if (!mu_.try_lock_shared()) {
      return false;
    }
    (void)record_try(site);
    return true;
  }

  /// Shared unlock. Thread-safety: a shared holder only. Blocks: never. Allocates: never.
  void unlock_shared() LAKH_RELEASE_SHARED() {
    mu_.unlock_shared();
    (void)detail::lock_order::release(this);
  }

  /// Fails unless this thread holds the lock EXCLUSIVELY; see ranked_mutex::assert_held.
  /// Thread-safety: safe. Blocks: never.
  /// @throws lakh::usage_error if not held exclusively (std::abort in abort mode).
  /// Allocates: only to build the error.
  void assert_held(const source_location &site = source_location::current()) const
      LAKH_ASSERT_CAPABILITY(this) {
    if (!is_held_by_this_thread()) {
      detail::lock_order::not_held("lakh::ranked_shared_mutex::assert_held", cls_.info(), site);
    }
  }

  /// True when this thread holds the lock exclusively.
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] bool is_held_by_this_thread() const noexcept {
    return owner_.load(std::memory_order_relaxed) == detail::lock_order::thread_token();
  }

  /// True when the checker has this thread holding the lock, shared or exclusive (false in
  /// ignore mode). Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] bool is_shared_held_by_this_thread() const noexcept {
    return lock_order::is_held(this);
  }

  /// Runs fn() holding the lock exclusively; see ranked_mutex::with_lock.
  /// Thread-safety: safe. Blocks: until acquired, then for fn. @throws what lock() or fn throw.
  /// Allocates: as lock() and fn.
  template <class F>
  decltype(auto) with_lock(F &&fn, const source_location &site = source_location::current())
      LAKH_EXCLUDES(this) LAKH_NO_THREAD_SAFETY_ANALYSIS {
    lock(site);
    const unlocker u{*this};
    return std::invoke(std::forward<F>(fn));
  }

  /// Runs fn() holding the lock shared.
  /// Thread-safety: safe. Blocks: while a writer holds it, then for fn.
  /// @throws what lock_shared() or fn throw. Allocates: as lock_shared() and fn.
  template <class F>
  decltype(auto) with_shared_lock(F &&fn, const source_location &site = source_location::current())
      LAKH_EXCLUDES(this) LAKH_NO_THREAD_SAFETY_ANALYSIS {
    lock_shared(site);
    const shared_unlocker u{*this};
    return std::invoke(std::forward<F>(fn));
  }

  /// See ranked_mutex::lock_key. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] lock_order::key lock_key() const noexcept { return lock_order::key(cls_); }
  /// The class. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] lock_order::lock_class lock_class() const noexcept { return cls_; }
  /// The rank. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::uint32_t rank() const noexcept { return cls_.rank(); }
  /// The name. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::string_view name() const noexcept { return cls_.name(); }

private:
  struct unlocker {
    ranked_shared_mutex &m;
    ~unlocker() LAKH_NO_THREAD_SAFETY_ANALYSIS { m.unlock(); }
  };
  struct shared_unlocker {
    ranked_shared_mutex &m;
    ~shared_unlocker() LAKH_NO_THREAD_SAFETY_ANALYSIS { m.unlock_shared(); }
  };

  bool check(const source_location &site) {
    const lock_order::mode m = lock_order::get_mode();
    if (m == lock_order::mode::ignore) {
      return false;
    }
    detail::lock_order::before_lock(cls_.info(), this, site, m);
    return true;
  }

  bool record_try(const source_location &site) noexcept {
    if (lock_order::get_mode() == lock_order::mode::ignore) {
      return false;
    }
    detail::lock_order::after_try_lock(cls_.info(), this, site);
    return true;
  }

  std::shared_mutex mu_;
  lock_order::lock_class cls_;
  std::atomic<const void *> owner_{nullptr}; // thread_token() of the exclusive owner
  bool tracked_ = false;                     // exclusive owner only
};

/// Holds one lock (exclusively) for a scope; Clang's -Wthread-safety follows it (libstdc++'s
/// std::lock_guard is not annotated). Passes the caller's position to the checker.
/// Memory ordering and fairness: those of M.
template <class M> class [[nodiscard]] LAKH_SCOPED_CAPABILITY lock_guard {
public:
  /// Locks `m`. Thread-safety: as M::lock. Blocks: until acquired.
  /// @throws what M::lock throws (lakh::lock_order_error in throw_error mode).
  /// Allocates: as M::lock.
  explicit lock_guard(M &m, const source_location &site = source_location::current())
      LAKH_ACQUIRE(m)
      : m_(m) {
    detail::lock_order::lock_at(m_, site);
  }
  /// Unlocks. Thread-safety: the owning thread. Blocks: never. Allocates: never.
  ~lock_guard() LAKH_RELEASE() { m_.unlock(); }
  lock_guard(const lock_guard &) = delete;
  lock_guard &operator=(const lock_guard &) = delete;

private:
  M &m_;
};

/// lock_all(a, b, ...): locks all its arguments in the ONE global order (rank, then name,
/// then key instance, then address) whatever order they are passed in, and unlocks them in
/// reverse when it goes out of scope. Written like a function call:
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
/// Memory ordering: that of each lock. Fairness: none beyond each lock's.
template <lock_order::ordered_lockable... Ls> class [[nodiscard]] lock_all {
  static_assert(sizeof...(Ls) >= 1, "lakh::lock_all needs at least one lock");
  static constexpr std::size_t count = sizeof...(Ls);

public:
  /// Sorts and locks. Thread-safety: safe. Blocks: until every lock is acquired.
  /// @throws std::invalid_argument if the same lock object is passed twice.
  /// @throws what a lock() throws (lakh::lock_order_error in throw_error mode), after
  /// releasing the ones already acquired.
  /// Allocates: never itself (the checker may).
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

  /// Unlocks in reverse acquisition order. Thread-safety: the owning thread. Blocks: never.
  /// Allocates: never.
  ~lock_all() LAKH_NO_THREAD_SAFETY_ANALYSIS {
    for (std::size_t i = count; i-- > 0;) {
      unlock_index(order_[i], std::index_sequence_for<Ls...>{});
    }
  }
  lock_all(const lock_all &) = delete;
  lock_all &operator=(const lock_all &) = delete;

  /// The argument positions (0-based) in the order they were locked (for tests and logs).
  /// Thread-safety: safe. Blocks: never. Allocates: never.
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
/// Thread-safety: safe. Blocks: until every lock is acquired, then for fn.
/// @throws std::invalid_argument if a lock is passed twice; what a lock() or fn throws.
/// Allocates: as the locks and fn.
template <class F, lock_order::ordered_lockable... Ls>
decltype(auto) with_locks(F &&fn, Ls &...locks) {
  const lock_all<Ls...> guard(locks...);
  return std::invoke(std::forward<F>(fn));
}

} // namespace lakh
