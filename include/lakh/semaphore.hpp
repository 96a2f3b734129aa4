#pragma once
// lakh/semaphore.hpp: a weighted counting semaphore with strict FIFO order, cancellation,
// deadlines, RAII permits and resize().
//
// Go's golang.org/x/sync/semaphore.Weighted for C++: `acquire(n)` takes n units of a shared
// capacity (connections, bytes in flight, CPU slots) and `release(n)` gives them back.
// Unlike std::counting_semaphore it has weights, a stop_token and deadline on every blocking
// call, and strict FIFO order: a waiter is served only when everyone who arrived before it
// has been, so a large request at the head is never starved by a stream of small ones (while
// it waits, small requests queue behind it even if they would fit). Unlike Go's, the
// capacity can be changed at run time (`resize`), and asking for more than the capacity is
// an immediate error instead of a wait that can never end. Guide: docs/semaphore.md.

#include <lakh/detail/wait.hpp>
#include <lakh/error.hpp>
#include <lakh/status.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>

namespace lakh {

class semaphore;

/// Units held from a lakh::semaphore, released when the permit is destroyed (RAII). Movable,
/// not copyable; an empty permit (owns() == false) holds nothing. Not thread-safe (one
/// owner); members never block or allocate unless noted.
class [[nodiscard]] permit {
public:
  /// An empty permit.
  permit() noexcept = default;

  /// Takes over other's units; other becomes empty.
  permit(permit &&other) noexcept
      : sem_(std::exchange(other.sem_, nullptr)), n_(std::exchange(other.n_, 0)) {}

  /// Releases the units this permit holds, then takes over other's; other becomes empty.
  /// Blocks: briefly (the semaphore's mutex).
  permit &operator=(permit &&other) noexcept {
    if (this != &other) {
      release();
      sem_ = std::exchange(other.sem_, nullptr);
      n_ = std::exchange(other.n_, 0);
    }
    return *this;
  }

  permit(const permit &) = delete;
  permit &operator=(const permit &) = delete;

  /// Releases the units still held (see release()).
  /// Blocks: briefly (the semaphore's mutex).
  ~permit() { release(); }

  /// Releases the units now; the permit becomes empty. Does nothing on an empty permit.
  /// Releasing the same units by hand as well (semaphore::release) is misuse: the permit's
  /// own release then finds them gone and calls std::terminate (it is noexcept).
  /// Blocks: briefly (the semaphore's mutex).
  void release() noexcept;

  /// Whether the permit holds units.
  [[nodiscard]] bool owns() const noexcept { return sem_ != nullptr; }

  /// owns().
  explicit operator bool() const noexcept { return owns(); }

  /// Units held (0 when empty).
  [[nodiscard]] std::ptrdiff_t count() const noexcept { return n_; }

private:
  friend class semaphore;
  permit(semaphore *s, std::ptrdiff_t n) noexcept : sem_(s), n_(n) {}

  semaphore *sem_ = nullptr;
  std::ptrdiff_t n_ = 0;
};

/// Weighted counting semaphore, strictly FIFO. Every member but the destructor may be called
/// concurrently; none allocates (except an exception's message), and those that do not wait
/// hold the internal mutex only briefly.
///
/// Memory ordering: a release(n) happens-before every acquisition that the released units let
/// complete (acquire and release synchronize through one mutex), so whatever a holder wrote
/// before releasing is visible to the next holder of those units.
/// Fairness: strictly first come, first served among blocked callers; try_acquire never
/// jumps the queue (it fails while anyone waits). A waiter that gives up (deadline or stop)
/// leaves the queue at once, and if it was the head the waiters behind it that now fit are
/// granted, so a cancelled big request never blocks the small ones behind it.
/// resize() may shrink the capacity below a queued request: that waiter's acquire throws
/// std::invalid_argument (the error it would have got on arrival) instead of waiting for a
/// capacity that may never come back; Go, which cannot resize, would block it forever.
/// Cost: one mutex per call (no atomic fast path: FIFO hand-off needs the queue); each
/// waiter has its own condition variable and is woken only when its own units are granted
/// (no thundering herd). Nothing allocates: a waiter lives on its caller's stack, and the
/// stop_token is watched by a std::stop_callback, not by condition_variable_any.
class semaphore {
public:
  /// A semaphore with `capacity` units, none in use.
  /// @throws std::invalid_argument if capacity < 1.
  explicit semaphore(std::ptrdiff_t capacity) : capacity_(capacity) {
    if (capacity < 1) {
      throw std::invalid_argument("lakh::semaphore: capacity (" + std::to_string(capacity) +
                                  ") must be at least 1");
    }
  }

  semaphore(const semaphore &) = delete;
  semaphore &operator=(const semaphore &) = delete;

  /// Destroying a semaphore while calls are blocked in it or permits refer to it is
  /// undefined behaviour, as for std::mutex.
  /// Thread-safety: no other call may run concurrently.
  ~semaphore() = default;

  /// Takes n units, waiting in FIFO order until they are free.
  /// Blocks: until the units are granted.
  /// @throws std::invalid_argument if n < 1 or n > capacity(), also when a resize() while
  /// waiting makes the capacity smaller than n.
  void acquire(std::ptrdiff_t n = 1) {
    (void)acquire_impl("acquire", n, std::nullopt, std::stop_token{});
  }

  /// Takes n units, or gives up when stop is requested on `st`.
  /// Blocks: until granted or stop requested.
  /// @return status::ok (the units are held) or status::cancelled (nothing is held).
  /// @throws std::invalid_argument as acquire(n).
  [[nodiscard]] status acquire(std::ptrdiff_t n, std::stop_token st) {
    return acquire_impl("acquire", n, std::nullopt, st);
  }

  /// Takes n units if they are free and nobody waits; never blocks, never jumps the queue.
  /// @return true if the units are now held.
  /// @throws std::invalid_argument as acquire(n).
  [[nodiscard]] bool try_acquire(std::ptrdiff_t n = 1) {
    std::lock_guard lk(mu_);
    check_n("try_acquire", n);
    if (head_ == nullptr && n <= capacity_ - in_use_) {
      in_use_ += n;
      return true;
    }
    return false;
  }

  /// Takes n units, waiting at most `timeout`, or until stop is requested on `st`. A timeout
  /// of zero or less only succeeds if the units are free now (and nobody waits); one longer
  /// than about a century means no deadline (it cannot overflow).
  /// Blocks: until granted, the deadline, or stop requested.
  /// @return status::ok, status::timeout or status::cancelled (nothing held unless ok).
  /// @throws std::invalid_argument as acquire(n).
  template <class Rep, class Period>
  [[nodiscard]] status try_acquire_for(std::ptrdiff_t n, std::chrono::duration<Rep, Period> timeout,
                                       std::stop_token st = {}) {
    return acquire_impl("try_acquire_for", n, detail::steady_deadline_in(timeout), st);
  }

  /// Takes n units, waiting until `deadline` at most (any clock: the time left is measured
  /// once and waited on the steady clock), or until stop is requested on `st`.
  /// Blocks: until granted, the deadline, or stop requested.
  /// @return status::ok, status::timeout or status::cancelled (nothing held unless ok).
  /// @throws std::invalid_argument as acquire(n).
  template <class Clock, class Duration>
  [[nodiscard]] status try_acquire_until(std::ptrdiff_t n,
                                         std::chrono::time_point<Clock, Duration> deadline,
                                         std::stop_token st = {}) {
    return acquire_impl("try_acquire_until", n, detail::steady_deadline_at(deadline), st);
  }

  /// Gives back n units and grants waiters from the head of the queue while they fit.
  /// Thread-safety: safe; any thread may release (not only the acquirer).
  /// @throws std::invalid_argument if n < 1.
  /// @throws lakh::usage_error if n is more than in_use().
  void release(std::ptrdiff_t n = 1) {
    std::lock_guard lk(mu_);
    if (n < 1) {
      throw std::invalid_argument("lakh::semaphore::release: n (" + std::to_string(n) +
                                  ") must be at least 1");
    }
    if (n > in_use_) {
      throw usage_error("lakh::semaphore::release: n (" + std::to_string(n) +
                        ") exceeds the units in use (" + std::to_string(in_use_) + ")");
    }
    in_use_ -= n;
    grant_locked();
  }

  /// acquire(n) as a RAII permit.
  /// Blocking and exceptions: as acquire(n).
  [[nodiscard]] permit acquire_permit(std::ptrdiff_t n = 1) {
    acquire(n);
    return permit(this, n);
  }

  /// acquire(n, st) as a permit; empty (owns() == false) when cancelled.
  /// Blocking and exceptions: as acquire(n, st).
  [[nodiscard]] permit acquire_permit(std::ptrdiff_t n, std::stop_token st) {
    return acquire(n, std::move(st)) == status::ok ? permit(this, n) : permit();
  }

  /// try_acquire(n) as a permit; empty when the units were not free.
  /// Blocking and exceptions: as try_acquire(n).
  [[nodiscard]] permit try_acquire_permit(std::ptrdiff_t n = 1) {
    return try_acquire(n) ? permit(this, n) : permit();
  }

  /// try_acquire_for(n, timeout, st) as a permit; empty on timeout or cancellation (call
  /// try_acquire_for itself to tell them apart).
  /// Blocking and exceptions: as try_acquire_for.
  template <class Rep, class Period>
  [[nodiscard]] permit try_acquire_permit_for(std::ptrdiff_t n,
                                              std::chrono::duration<Rep, Period> timeout,
                                              std::stop_token st = {}) {
    return try_acquire_for(n, timeout, std::move(st)) == status::ok ? permit(this, n) : permit();
  }

  /// try_acquire_until(n, deadline, st) as a permit; empty on timeout or cancellation.
  /// Blocking and exceptions: as try_acquire_until.
  template <class Clock, class Duration>
  [[nodiscard]] permit try_acquire_permit_until(std::ptrdiff_t n,
                                                std::chrono::time_point<Clock, Duration> deadline,
                                                std::stop_token st = {}) {
    return try_acquire_until(n, deadline, std::move(st)) == status::ok ? permit(this, n) : permit();
  }

  /// Changes the capacity. Growing grants waiters that now fit. Shrinking below in_use() is
  /// allowed: units in use stay in use and new acquisitions wait until enough are released.
  /// Waiters asking for more than the new capacity could never be served: they are woken
  /// and their acquire throws std::invalid_argument (as it would have on arrival).
  /// @throws std::invalid_argument if new_capacity < 1.
  void resize(std::ptrdiff_t new_capacity) {
    std::lock_guard lk(mu_);
    if (new_capacity < 1) {
      throw std::invalid_argument("lakh::semaphore::resize: new_capacity (" +
                                  std::to_string(new_capacity) + ") must be at least 1");
    }
    capacity_ = new_capacity;
    for (waiter *w = head_; w != nullptr;) {
      waiter *next = w->next;
      if (w->n > capacity_) {
        unlink(w);
        w->state = waiter::state_t::too_big;
        w->cv.notify_one();
      }
      w = next;
    }
    grant_locked();
  }

  /// The total number of units.
  [[nodiscard]] std::ptrdiff_t capacity() const {
    std::lock_guard lk(mu_);
    return capacity_;
  }

  /// Units held now (approximate as soon as it returns).
  [[nodiscard]] std::ptrdiff_t in_use() const {
    std::lock_guard lk(mu_);
    return in_use_;
  }

  /// capacity() - in_use(), at least 0 (approximate as soon as it returns).
  [[nodiscard]] std::ptrdiff_t available() const {
    std::lock_guard lk(mu_);
    return capacity_ > in_use_ ? capacity_ - in_use_ : 0;
  }

  /// Callers queued in acquire now, i.e. not yet granted, timed out or cancelled
  /// (approximate as soon as it returns).
  [[nodiscard]] std::size_t waiting() const {
    std::lock_guard lk(mu_);
    return waiting_;
  }

private:
  // A blocked caller, on its own stack, linked into the FIFO queue while it waits.
  // Its own condition variable means a release wakes exactly the waiters it grants.
  struct waiter {
    enum class state_t { waiting, granted, cancelled, too_big };
    explicit waiter(std::ptrdiff_t units) noexcept : n(units) {}
    std::ptrdiff_t n;
    std::condition_variable cv; // never allocates (condition_variable_any would)
    state_t state = state_t::waiting;
    waiter *prev = nullptr;
    waiter *next = nullptr;
  };

  void check_n(const char *fn, std::ptrdiff_t n) const {
    if (n < 1) {
      throw std::invalid_argument(std::string("lakh::semaphore::") + fn + ": n (" +
                                  std::to_string(n) + ") must be at least 1");
    }
    if (n > capacity_) {
      throw std::invalid_argument(std::string("lakh::semaphore::") + fn + ": n (" +
                                  std::to_string(n) + ") exceeds capacity (" +
                                  std::to_string(capacity_) + ")");
    }
  }

  // Blocks for n units in FIFO order; no deadline when `deadline` is empty.
  status acquire_impl(const char *fn, std::ptrdiff_t n, detail::steady_deadline deadline,
                      const std::stop_token &st) {
    std::unique_lock lk(mu_);
    check_n(fn, n);
    if (head_ == nullptr && n <= capacity_ - in_use_) {
      in_use_ += n; // free and nobody queued: granted even if stop was already requested
      return status::ok;
    }
    if (st.stop_requested()) {
      return status::cancelled;
    }
    if (deadline && std::chrono::steady_clock::now() >= *deadline) {
      return status::timeout;
    }
    waiter w(n);
    enqueue(&w);
    if (st.stop_possible()) {
      // The callback takes mu_, so it is registered (it may run at once, on this thread) and
      // destroyed (it may be running on the stopping thread) with mu_ unlocked; it unlinks a
      // waiting `w` itself, so that the waiters behind it move on without waiting for us.
      lk.unlock();
      {
        std::stop_callback on_stop(st, [this, &w]() noexcept { cancel(&w); });
        lk.lock();
        wait_locked(lk, w, deadline);
        lk.unlock();
      }
      lk.lock();
    } else {
      wait_locked(lk, w, deadline);
    }
    switch (w.state) {
    case waiter::state_t::granted: // granted, even if stop or the deadline came at the same time
      return status::ok;
    case waiter::state_t::cancelled:
      return status::cancelled;
    case waiter::state_t::too_big:
      throw std::invalid_argument(std::string("lakh::semaphore::") + fn + ": n (" +
                                  std::to_string(n) + ") exceeds capacity (" +
                                  std::to_string(capacity_) + ") after resize");
    case waiter::state_t::waiting:
      break;
    }
    // The deadline passed: leave the queue, and let those behind through if the head moved.
    leave_locked(&w);
    return status::timeout;
  }

  static void wait_locked(std::unique_lock<std::mutex> &lk, waiter &w,
                          const detail::steady_deadline &deadline) {
    (void)detail::wait_until(w.cv, lk, deadline,
                             [&w] { return w.state != waiter::state_t::waiting; });
  }

  // The stop callback of a waiter: gives up its place unless it was already granted.
  void cancel(waiter *w) noexcept {
    std::lock_guard lk(mu_);
    if (w->state == waiter::state_t::waiting) {
      leave_locked(w);
      w->state = waiter::state_t::cancelled;
      w->cv.notify_one();
    }
  }

  void enqueue(waiter *w) noexcept {
    w->prev = tail_;
    (tail_ != nullptr ? tail_->next : head_) = w;
    tail_ = w;
    ++waiting_;
  }

  // Unlinks a waiter that gives up; if it was the head, grants those behind that now fit.
  void leave_locked(waiter *w) noexcept {
    const bool was_head = head_ == w;
    unlink(w);
    if (was_head) {
      grant_locked();
    }
  }

  void unlink(waiter *w) noexcept {
    (w->prev != nullptr ? w->prev->next : head_) = w->next;
    (w->next != nullptr ? w->next->prev : tail_) = w->prev;
    w->prev = w->next = nullptr;
    --waiting_;
  }

  // Grants from the head while the head fits (strict FIFO: stops at the first that does
  // not). Notifies under the lock: a woken waiter's stack (and its cv) may vanish as soon as
  // the lock is released.
  void grant_locked() noexcept {
    while (head_ != nullptr && head_->n <= capacity_ - in_use_) {
      waiter *w = head_;
      in_use_ += w->n;
      unlink(w);
      w->state = waiter::state_t::granted;
      w->cv.notify_one();
    }
  }

  mutable std::mutex mu_;
  std::ptrdiff_t capacity_;
  std::ptrdiff_t in_use_ = 0;
  std::size_t waiting_ = 0;
  waiter *head_ = nullptr;
  waiter *tail_ = nullptr;
};

inline void permit::release() noexcept {
  if (sem_ != nullptr) {
    // Throws only if the same units were also released by hand (resize keeps in-use units):
    // noexcept turns that into std::terminate, as Go panics on "released more than held".
    semaphore *s = std::exchange(sem_, nullptr);
    s->release(std::exchange(n_, 0));
  }
}

} // namespace lakh
