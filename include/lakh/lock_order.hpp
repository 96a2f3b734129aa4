#pragma once
// lakh/lock_order.hpp: the lock-order checker (namespace lakh::lock_order): lock classes
// (rank + name), the keys by which locks are ordered, the mode and report sink, the hooks
// through which any lockable joins the checker, and lock_order::ordered<L>, which wraps any
// lockable with those hooks. Unlike absl::Mutex's detector, the graph is keyed by lock CLASS
// (as Linux lockdep), not by address. Guide: docs/lock_order.md.
//
// The ranked mutexes (lakh/ranked_mutex.hpp) and lock_all (lakh/lock_all.hpp) are built on
// this header; it includes both at its end, so that `#include <lakh/lock_order.hpp>` gives
// the whole module.

#include <lakh/detail/lock_order_graph.hpp>
#include <lakh/detail/source_location.hpp>
#include <lakh/error.hpp>
#include <lakh/thread_annotations.hpp>

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string_view>
#include <type_traits>
#include <utility>

namespace lakh {

/// The checker's configuration and hooks. Every function here is thread-safe and never
/// blocks or allocates unless its comment says otherwise.
namespace lock_order {

/// Sets the checker's mode for the whole process (an atomic store; other threads see it on
/// their next acquisition). Locks already held keep their tracking: switching to ignore while
/// holding tracked locks still releases them cleanly.
inline void set_mode(mode m) noexcept {
  detail::lock_order::current.store(m, std::memory_order_relaxed);
}

/// The checker's current mode.
[[nodiscard]] inline mode get_mode() noexcept {
  return detail::lock_order::current_mode();
}

/// Sets the mode for a scope and restores the previous one on exit (handy in tests).
class [[nodiscard]] scoped_mode {
public:
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
/// Blocks: briefly, on the checker's internal mutex. Allocates: may.
inline void set_sink(std::function<void(std::string_view)> sink) {
  auto &r = detail::lock_order::global();
  const std::lock_guard g(r.mu);
  r.sink = std::move(sink);
}

/// How many reports (cycles, rank inversions, recursive acquisitions, non-owner unlocks, in
/// any mode but ignore) have been made since start or the last reset_for_testing().
[[nodiscard]] inline std::uint64_t report_count() noexcept {
  return detail::lock_order::reports.load(std::memory_order_relaxed);
}

/// How many acquired-before edges (between distinct classes) the global graph holds.
/// Blocks: briefly, on the checker's internal mutex.
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
/// thread's held locks stay held. Blocks: briefly, on the checker's internal mutex.
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
/// per class; lock_all orders by rank, then name. Cheap to copy (one pointer) and immutable;
/// build it once (construction takes a global mutex) and keep it in the lock object.
class lock_class {
public:
  /// Interns (rank, name); equal pairs give equal classes. The name is copied.
  /// Blocks: briefly, on the checker's internal mutex. Allocates: may.
  lock_class(std::uint32_t rank, std::string_view name)
      : info_(detail::lock_order::intern(rank, name)) {}

  /// The rank: locks must be acquired in non-decreasing rank order.
  [[nodiscard]] std::uint32_t rank() const noexcept { return info_->rank; }
  /// The name, as given (stable for the life of the process).
  [[nodiscard]] std::string_view name() const noexcept { return info_->name; }

  friend bool operator==(const lock_class &a, const lock_class &b) noexcept {
    return a.info_ == b.info_;
  }

  /// Internal: the interned record.
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
  /// The tie-breaker after `instance`, for lockables whose identities need more than 64 bits
  /// (lakh::pg's advisory keys: the key's form). 0 unless set.
  std::uint64_t subinstance = 0;

  /// Blocks: briefly (interning). Allocates: may.
  key(std::uint32_t rank, std::string_view name, std::uint64_t inst = 0)
      : cls(rank, name), instance(inst) {}
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
/// found by argument-dependent lookup. Thread-safety, blocking, allocation: the accessor's.
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
/// then instance, then subinstance, then address.
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
  if (a.subinstance != b.subinstance) {
    return a.subinstance < b.subinstance;
  }
  return std::less<const void *>{}(address_a, address_b);
}

/// Hook for foreign lockables: call from lock(), BEFORE blocking. Checks the acquisition
/// against the locks this thread holds (reporting per the mode), then records `lock` (the
/// object's address, its identity) as held. If the acquisition then fails, call
/// on_release(lock). In ignore mode it does nothing.
/// Blocks: only in mode report/abort when the sink blocks, and briefly on the internal mutex
/// the first time an edge is seen. Allocates: may, the first time this edge is seen.
/// @throws lakh::lock_order_error in throw_error mode if the acquisition would close a cycle,
/// invert ranks or re-acquire a held lock; the lock is then NOT recorded: do not acquire.
inline void on_acquire(const key &k, const void *lock,
                       const source_location &site = source_location::current()) {
  const mode m = get_mode();
  if (m != mode::ignore) {
    detail::lock_order::before_lock(k.cls.info(), lock, site, m);
  }
}

/// Hook for foreign lockables: call from try_lock() AFTER it succeeded. Records `lock` as
/// held without checking (a try cannot deadlock); later acquisitions are checked against it.
/// In ignore mode it does nothing.
inline void on_try_acquire(const key &k, const void *lock,
                           const source_location &site = source_location::current()) noexcept {
  if (get_mode() != mode::ignore) {
    detail::lock_order::after_try_lock(k.cls.info(), lock, site);
  }
}

/// Hook for foreign lockables: call from unlock() (any order, not only LIFO), and after a
/// failed acquisition that called on_acquire. Forgets `lock` for this thread; does nothing
/// if it was not recorded (e.g. it was acquired in ignore mode).
inline void on_release(const void *lock) noexcept {
  (void)detail::lock_order::release(lock);
}

/// True when the checker has `lock` recorded as held by this thread (always false for locks
/// taken in ignore mode).
[[nodiscard]] inline bool is_held(const void *lock) noexcept {
  return detail::lock_order::holds(lock);
}

} // namespace lock_order

namespace detail::lock_order {

/// l.lock(site) when L takes the caller's position (lakh's locks), else l.lock().
template <class L> void lock_at(L &l, const source_location &site) LAKH_NO_THREAD_SAFETY_ANALYSIS {
  if constexpr (requires { l.lock(site); }) {
    l.lock(site);
  } else {
    l.lock();
  }
}

/// Tells ThreadSanitizer that a lock of type M at `m` is gone, for the types whose destructor
/// does not (libstdc++'s std::mutex); see forget_mutex_for_tsan.
template <class M> void forget_for_tsan(M &m) noexcept {
  if constexpr (std::is_same_v<M, std::mutex>) {
    forget_mutex_for_tsan(&m);
  }
}

} // namespace detail::lock_order

namespace lock_order {

/// Any lockable L (std::mutex, std::timed_mutex, a third-party lock) given a key, so that it
/// takes part in lock_all's order and in the checker without writing the hooks by hand:
/// lock() calls on_acquire before blocking, try_lock() calls on_try_acquire after success,
/// unlock() calls on_release. `lock_order::ordered<std::mutex> m{lock_order::key(3, "io")};`
///
/// Thread-safety, memory ordering and fairness: those of L. No owner tracking (no
/// assert_held); the checker's lock_order::is_held(&m) tells, in any mode but ignore.
template <class L> class LAKH_CAPABILITY("mutex") ordered {
public:
  /// Builds the wrapped lock from `args`, with key `k`. Blocks and allocates as L's
  /// constructor.
  template <class... Args>
  explicit ordered(key k, Args &&...args) : lock_(std::forward<Args>(args)...), key_(k) {}
  ordered(const ordered &) = delete;
  ordered &operator=(const ordered &) = delete;
  /// No thread may hold or wait for it.
  ~ordered() { detail::lock_order::forget_for_tsan(lock_); }

  /// Checks the order (see on_acquire), then blocks in L::lock().
  /// Blocks: until L::lock() returns. Allocates: may, the first time an edge is seen.
  /// @throws lakh::lock_order_error in throw_error mode on a potential deadlock (not locked).
  /// @throws what L::lock() throws (the checker then forgets the attempt).
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
  /// Blocks: as L::try_lock (never, for the std types). @throws what L::try_lock() throws.
  [[nodiscard]] bool try_lock(const source_location &site = source_location::current())
      LAKH_TRY_ACQUIRE(true) {
    if (!lock_.try_lock()) {
      return false;
    }
    on_try_acquire(key_, this, site);
    return true;
  }

  /// L::unlock(), then the checker forgets it. Any order relative to other locks.
  /// Thread-safety: the holder. @throws what L::unlock throws.
  void unlock() LAKH_RELEASE() {
    lock_.unlock();
    on_release(this);
  }

  /// The key lock_all sorts by.
  [[nodiscard]] key lock_key() const noexcept { return key_; }
  /// The wrapped lock (e.g. for a condition variable). Locking it directly bypasses the
  /// checker.
  [[nodiscard]] L &underlying() noexcept { return lock_; }

private:
  L lock_;
  key key_;
};

} // namespace lock_order
} // namespace lakh

// The module's other headers, which build on the checker above (each includes this header;
// #pragma once makes any order of inclusion work).
#include <lakh/lock_all.hpp>
#include <lakh/ranked_mutex.hpp>
