#pragma once
// lakh/channel.hpp: a bounded multi-producer multi-consumer channel with Go semantics, and
// `select` over several channels.
//
// `lakh::channel<T>` is Go's `make(chan T, n)` for C++: a FIFO buffer of fixed capacity that
// blocks senders while full and receivers while empty, and that can be closed. Unlike Go:
//   - every blocking call has a try_ form, a deadline form (_for/_until) and a
//     std::stop_token form, and reports why it returned as a lakh::status;
//   - a send on a closed channel returns status::closed instead of panicking;
//   - capacity 0 (Go's unbuffered rendezvous channel) is rejected: use capacity 1 and an
//     acknowledgement if a hand-off must be synchronous;
//   - batch forms move up to N items per lock acquisition.
// Unlike moodycamel::ConcurrentQueue or boost::lockfree::queue it is bounded with blocking
// back-pressure, closable, cancellable and selectable; it is a ring buffer under one mutex
// (tried for a while before a thread sleeps on it) with condition variables, and batches
// (send_batch, recv_batch) are how it goes fastest. Guide: docs/channel.md.
//
// One header over ~500 lines because it is one concept: select() waits on the channels'
// own internals (their mutexes and waiter lists), so it lives beside them.

#include <lakh/detail/wait.hpp>
#include <lakh/status.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace lakh {

/// What a batch call moved and why it stopped.
struct batch_result {
  std::size_t count = 0;  ///< items moved
  status st = status::ok; ///< ok, or why fewer than asked were moved (closed, cancelled, ...)
};

namespace detail {

/// A `select` call waiting on several channels at once. Channels hold pointers to it while
/// it is registered and signal it on every state change (item added, slot freed, closed).
struct select_waiter {
  std::mutex mu;
  std::condition_variable cv;
  bool signaled = false;

  void signal() {
    {
      std::scoped_lock lk(mu);
      signaled = true;
    }
    cv.notify_one();
  }
};

/// The part of a channel that does not depend on T: the lock, the condition variables,
/// the waiter counts and the registered select waiters.
class channel_core {
public:
  channel_core() = default;
  channel_core(const channel_core &) = delete;
  channel_core &operator=(const channel_core &) = delete;

  void add_selector(select_waiter *w) {
    std::scoped_lock lk(mu_);
    selectors_.push_back(w);
  }
  void remove_selector(select_waiter *w) {
    std::scoped_lock lk(mu_);
    selectors_.erase(std::find(selectors_.begin(), selectors_.end(), w));
  }

protected:
  // Called with mu_ held after the state changed; wakes the interested waiters.
  void signal_selectors() {
    for (select_waiter *w : selectors_) {
      w->signal();
    }
  }
  void notify_receivers(std::size_t items) {
    if (items == 0) {
      return;
    }
    if (recv_waiters_ > 0) {
      if (items == 1) {
        not_empty_.notify_one();
      } else {
        not_empty_.notify_all();
      }
    }
    if (!selectors_.empty()) {
      signal_selectors();
    }
  }
  void notify_senders(std::size_t slots) {
    if (slots == 0) {
      return;
    }
    if (send_waiters_ > 0) {
      if (slots == 1) {
        not_full_.notify_one();
      } else {
        not_full_.notify_all();
      }
    }
    if (!selectors_.empty()) {
      signal_selectors();
    }
  }

  // Takes mu_, trying for a while before sleeping on it: the channel's critical sections are
  // a few moves long, so the holder usually lets go sooner than a futex sleep and wake-up take
  // (sleeping on the mutex was most of the cost of many-to-many batches). A batch call tries
  // often (its rivals hold the lock for a whole batch and take it back at once); a per-item
  // call backs off exponentially, so that its tries do not slow the holder down.
  // Settings measured with bench_channel (docs/channel.md#benchmarks).
  std::unique_lock<std::mutex> lock(bool batch = false) const {
    static constexpr int batch_tries = 200;     // one pause between tries
    static constexpr int item_max_pause = 1024; // pauses 1, 2, 4, ... 1024 between tries
    std::unique_lock lk(mu_, std::defer_lock);
    if (batch) {
      for (int i = 0; i < batch_tries; ++i) {
        if (lk.try_lock()) {
          return lk;
        }
        pause();
      }
    } else {
      for (int pauses = 1; pauses <= item_max_pause; pauses *= 2) {
        if (lk.try_lock()) {
          return lk;
        }
        for (int i = 0; i < pauses; ++i) {
          pause();
        }
      }
    }
    lk.lock();
    return lk;
  }
  static void pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
  }

  // Waits on cv until pred() holds, the token is stopped, or the deadline passes; returns
  // ok (lock held and pred() true), cancelled or timeout. waiters counts sleeping threads.
  template <class Pred>
  status wait(std::unique_lock<std::mutex> &lk, std::condition_variable &cv, std::size_t &waiters,
              Pred pred, const steady_deadline &deadline, const std::stop_token &st) {
    for (;;) {
      if (pred()) {
        return status::ok;
      }
      if (st.stop_requested()) {
        return status::cancelled;
      }
      status s = st.stop_possible() ? wait_cancellable(lk, cv, waiters, pred, deadline, st)
                                    : wait_plain(lk, cv, waiters, pred, deadline);
      if (s != status::ok || pred()) {
        return s;
      }
      // Another thread took what we were woken for while the lock was released: wait again.
    }
  }

private:
  template <class Pred>
  status wait_plain(std::unique_lock<std::mutex> &lk, std::condition_variable &cv,
                    std::size_t &waiters, Pred &pred, const steady_deadline &deadline) {
    ++waiters;
    const status result = wait_until(cv, lk, deadline, pred) ? status::ok : status::timeout;
    --waiters;
    return result;
  }

  // As wait_plain, also woken by a stop request. Returns with the lock released and retaken:
  // the stop callback takes mu_, so it must be destroyed while mu_ is not held (its
  // destructor waits for a callback that is running).
  template <class Pred>
  status wait_cancellable(std::unique_lock<std::mutex> &lk, std::condition_variable &cv,
                          std::size_t &waiters, Pred &pred, const steady_deadline &deadline,
                          const std::stop_token &st) {
    status result = status::ok;
    {
      // Taking the lock in the callback means a stop request cannot fall between our check
      // of stop_requested() and our sleep. If stop was requested before the callback is
      // registered, the constructor runs it right here, on this thread, which holds mu_:
      // then there is nobody to wake (the predicate sees the stop), and locking would
      // deadlock.
      const std::thread::id self = std::this_thread::get_id();
      std::stop_callback wake(st, [this, &cv, self] {
        if (std::this_thread::get_id() == self) {
          return;
        }
        std::scoped_lock relock(mu_);
        cv.notify_all();
      });
      ++waiters;
      if (!wait_until(cv, lk, deadline, [&] { return pred() || st.stop_requested(); })) {
        result = status::timeout;
      }
      --waiters;
      if (result == status::ok && !pred()) {
        result = status::cancelled;
      }
      lk.unlock(); // before `wake` is destroyed
    }
    lk.lock();
    return result;
  }

protected:
  mutable std::mutex mu_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::size_t recv_waiters_ = 0;
  std::size_t send_waiters_ = 0;
  std::vector<select_waiter *> selectors_;
  bool closed_ = false;
};

} // namespace detail

/// A bounded FIFO channel of T shared by any number of senders and receivers.
///
/// Memory ordering: a send happens-before the receive that obtains that item; close()
/// happens-before every call that returns status::closed because of it. Fairness: items
/// leave in the order they entered (FIFO); blocked threads are woken by the condition
/// variables' order, which on Linux is close to FIFO but not guaranteed.
///
/// T must be move-constructible. If T's move constructor or move assignment throws, the
/// exception propagates and the channel stays intact:
///   - a failed send buffers nothing: try_send and the try_send_* forms leave the caller's
///     value as it was (their argument is a reference); send(T v) drops v, its own copy;
///     send_batch keeps the items before the throwing one sent and the rest in `items`;
///   - a failed receive leaves the item at the head, whatever the form (recv, try_recv_*,
///     range-for, a select case): an item is removed only after its last move succeeded;
///     recv_batch keeps the items before the throwing one in `out`, taken.
template <class T> class channel : public detail::channel_core {
  static_assert(std::is_move_constructible_v<T>, "lakh::channel<T>: T must be move-constructible");

public:
  using value_type = T;

  /// A channel that buffers up to `capacity` items.
  /// @throws std::invalid_argument if capacity is 0 (lakh has no rendezvous channels).
  /// Allocates: once, capacity slots.
  explicit channel(std::size_t capacity) : slots_(checked(capacity)) {}

  channel(const channel &) = delete;
  channel &operator=(const channel &) = delete;

  // ---- send ------------------------------------------------------------------------------

  /// Sends v, blocking while the channel is full.
  /// Returns ok, or closed (v is dropped) if the channel is or becomes closed.
  /// Thread-safety: safe. Blocks: until there is room or the channel is closed.
  /// Allocates: never.
  status send(T v) { return send_impl(v, no_deadline(), std::stop_token{}); }

  /// Sends v, blocking while full; returns ok, closed, or cancelled when `st` is stopped
  /// first (v is dropped unless ok). Blocks: until room, closed, or stop requested.
  status send(T v, std::stop_token st) { return send_impl(v, no_deadline(), st); }

  /// Sends v if there is room now. Returns ok, full or closed; v is moved from only on ok.
  /// Blocks: never (takes the channel's mutex briefly).
  [[nodiscard]] status try_send(T &&v) {
    auto lk = lock();
    if (closed_) {
      return status::closed;
    }
    if (count_ == slots_.size()) {
      return status::full;
    }
    push(std::move(v));
    notify_receivers(1);
    return status::ok;
  }

  /// Sends v, waiting at most `d` for room: ok, closed, timeout, or cancelled.
  /// v is moved from only on ok. Blocks: until room, closed, deadline, or stop.
  template <class Rep, class Period>
  [[nodiscard]] status try_send_for(T &&v, std::chrono::duration<Rep, Period> d,
                                    std::stop_token st = {}) {
    return send_impl(v, detail::steady_deadline_in(d), st);
  }

  /// Sends v, waiting until `tp` for room: ok, closed, timeout, or cancelled.
  /// v is moved from only on ok. Blocks: until room, closed, deadline, or stop.
  template <class Clock, class Duration>
  [[nodiscard]] status try_send_until(T &&v, std::chrono::time_point<Clock, Duration> tp,
                                      std::stop_token st = {}) {
    return send_impl(v, detail::steady_deadline_at(tp), st);
  }

  /// Sends every item of `items` in order, moving as many per lock as fit, blocking while
  /// full. Returns how many were sent and ok, or closed/cancelled if it stopped early (the
  /// items not sent stay in `items`, moved-from ones are the first `count`).
  /// Blocks: until all are sent, the channel is closed, or stop is requested.
  batch_result send_batch(std::vector<T> &items, std::stop_token st = {}) {
    batch_result r;
    auto lk = lock(true);
    while (r.count < items.size()) {
      status s = wait(
          lk, not_full_, send_waiters_, [this] { return closed_ || count_ < slots_.size(); },
          no_deadline(), st);
      if (s != status::ok) {
        r.st = s;
        return r;
      }
      if (closed_) {
        r.st = status::closed;
        return r;
      }
      const std::size_t n = std::min(slots_.size() - count_, items.size() - r.count);
      // Receivers are woken for the items buffered, also when a move throws part way.
      struct wake_receivers {
        channel &ch;
        std::size_t pushed = 0;
        ~wake_receivers() { ch.notify_receivers(pushed); }
      } wake{*this};
      for (; wake.pushed < n; ++wake.pushed, ++r.count) {
        push(std::move(items[r.count]));
      }
    }
    return r;
  }

  // ---- receive ---------------------------------------------------------------------------

  /// Receives the next item, blocking while empty; nullopt once closed and drained.
  /// Thread-safety: safe. Blocks: until an item arrives or the channel is closed and empty.
  /// Allocates: never (beyond T's move).
  std::optional<T> recv() { return recv(std::stop_token{}); }

  /// Receives the next item; nullopt if closed and drained or `st` was stopped first
  /// (use the status form to tell which). Blocks: until item, closed+drained, or stop.
  std::optional<T> recv(std::stop_token st) {
    std::optional<T> out; // the one object returned (NRVO): the item is moved once, into it
    auto lk = lock();
    (void)recv_impl(lk, out, no_deadline(), st);
    return out;
  }

  /// Receives into `out`: ok, closed (closed and drained), or cancelled.
  /// Blocks: until item, closed+drained, or stop requested.
  status recv(T &out, std::stop_token st = {}) { return recv_into(out, no_deadline(), st); }

  /// Receives into `out` if an item is buffered now: ok, empty, or closed (and drained).
  /// Blocks: never (takes the channel's mutex briefly).
  [[nodiscard]] status try_recv(T &out) {
    auto lk = lock();
    if (count_ == 0) {
      return closed_ ? status::closed : status::empty;
    }
    pop_into(out);
    return status::ok;
  }

  /// Receives into `out`, waiting at most `d`: ok, closed, timeout, or cancelled.
  template <class Rep, class Period>
  [[nodiscard]] status try_recv_for(T &out, std::chrono::duration<Rep, Period> d,
                                    std::stop_token st = {}) {
    return recv_into(out, detail::steady_deadline_in(d), st);
  }

  /// Receives into `out`, waiting until `tp`: ok, closed, timeout, or cancelled.
  template <class Clock, class Duration>
  [[nodiscard]] status try_recv_until(T &out, std::chrono::time_point<Clock, Duration> tp,
                                      std::stop_token st = {}) {
    return recv_into(out, detail::steady_deadline_at(tp), st);
  }

  /// Appends up to `max` items to `out`, blocking until at least one is buffered.
  /// Returns the count and ok, or count 0 with closed (closed and drained) or cancelled.
  /// @throws std::invalid_argument if max is 0. Blocks: until an item, closed+drained, or stop.
  /// Allocates: may (grows `out`).
  batch_result recv_batch(std::vector<T> &out, std::size_t max, std::stop_token st = {}) {
    if (max == 0) {
      throw std::invalid_argument("lakh::channel::recv_batch: max is 0");
    }
    batch_result r;
    auto lk = lock(true);
    status s = wait(
        lk, not_empty_, recv_waiters_, [this] { return closed_ || count_ > 0; }, no_deadline(), st);
    if (s != status::ok) {
      r.st = s;
      return r;
    }
    if (count_ == 0) {
      r.st = status::closed;
      return r;
    }
    const std::size_t n = std::min(max, count_);
    out.reserve(out.size() + n);
    // Senders are woken for the slots taken, also when a move throws part way.
    struct wake_senders {
      channel &ch;
      std::size_t &taken;
      ~wake_senders() { ch.notify_senders(taken); }
    } wake{*this, r.count};
    for (; r.count < n; ++r.count) {
      out.push_back(std::move(*slots_[head_])); // no reallocation: reserved above
      drop_head();
    }
    return r;
  }

  // ---- state -----------------------------------------------------------------------------

  /// Closes the channel: later sends return closed; receivers drain what is buffered, then
  /// see closed. Wakes every blocked sender, receiver and select. Idempotent.
  /// Thread-safety: safe. Blocks: never (takes the mutex briefly). Allocates: never.
  void close() {
    std::scoped_lock lk(mu_);
    if (closed_) {
      return;
    }
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
    signal_selectors();
  }

  /// True once close() was called (items may still be buffered). Blocks: never.
  [[nodiscard]] bool is_closed() const {
    std::scoped_lock lk(mu_);
    return closed_;
  }
  /// Items buffered now; approximate, since others may change it at once. Blocks: never.
  [[nodiscard]] std::size_t size() const {
    std::scoped_lock lk(mu_);
    return count_;
  }
  /// True when nothing is buffered now (approximate, as size()). Blocks: never.
  [[nodiscard]] bool empty() const { return size() == 0; }
  /// The capacity given at construction. Blocks: never.
  [[nodiscard]] std::size_t capacity() const noexcept { return slots_.size(); }

  // ---- range-for -------------------------------------------------------------------------

  /// An input iterator that receives (blocking) until the channel is closed and drained.
  class iterator {
  public:
    using iterator_category = std::input_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = T *;
    using reference = T &;

    iterator() = default;
    explicit iterator(channel *ch) : ch_(ch) { ++*this; }
    reference operator*() { return *current_; }
    pointer operator->() { return &*current_; }
    iterator &operator++() {
      current_.reset();
      auto lk = ch_->lock();
      (void)ch_->recv_impl(lk, current_, no_deadline(), std::stop_token{});
      if (!current_) {
        ch_ = nullptr;
      }
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator &a, const iterator &b) noexcept { return a.ch_ == b.ch_; }

  private:
    channel *ch_ = nullptr;
    std::optional<T> current_;
  };

  /// Starts receiving: `for (auto& v : ch)` runs until the channel is closed and drained.
  /// Blocks: as recv().
  iterator begin() { return iterator(this); }
  iterator end() noexcept { return iterator(); }

private:
  template <class U> friend struct recv_case;
  template <class U> friend struct send_case;

  static std::size_t checked(std::size_t capacity) {
    if (capacity == 0) {
      throw std::invalid_argument("lakh::channel: capacity is 0 (rendezvous channels are not "
                                  "supported; use capacity >= 1)");
    }
    return capacity;
  }
  static detail::steady_deadline no_deadline() noexcept { return std::nullopt; }

  std::size_t next(std::size_t i) const noexcept { return i + 1 == slots_.size() ? 0 : i + 1; }

  // mu_ held, count_ < capacity. Strong guarantee: if T's move throws, nothing changes.
  void push(T &&v) {
    slots_[tail_].emplace(std::move(v));
    tail_ = next(tail_);
    ++count_;
  }

  // mu_ held, count_ > 0. Moves the head item into `out` (a T, or an empty std::optional<T>)
  // and only then removes it: if T's move throws, the item stays at the head.
  template <class Out> void pop_into(Out &out) {
    if constexpr (std::is_same_v<Out, std::optional<T>>) {
      out.emplace(std::move(*slots_[head_]));
    } else {
      out = std::move(*slots_[head_]);
    }
    drop_head();
    notify_senders(1);
  }

  // mu_ held, count_ > 0, the head item moved out.
  void drop_head() noexcept {
    slots_[head_].reset();
    head_ = next(head_);
    --count_;
  }

  status send_impl(T &v, const detail::steady_deadline &deadline, const std::stop_token &st) {
    auto lk = lock();
    status s = wait(
        lk, not_full_, send_waiters_, [this] { return closed_ || count_ < slots_.size(); },
        deadline, st);
    if (s != status::ok) {
      return s;
    }
    if (closed_) {
      return status::closed;
    }
    push(std::move(v));
    notify_receivers(1);
    return status::ok;
  }

  template <class Out>
  status recv_impl(std::unique_lock<std::mutex> &lk, Out &out,
                   const detail::steady_deadline &deadline, const std::stop_token &st) {
    status s = wait(
        lk, not_empty_, recv_waiters_, [this] { return closed_ || count_ > 0; }, deadline, st);
    if (s != status::ok) {
      return s;
    }
    if (count_ == 0) {
      return status::closed;
    }
    pop_into(out);
    return status::ok;
  }

  status recv_into(T &out, const detail::steady_deadline &deadline, const std::stop_token &st) {
    auto lk = lock();
    return recv_impl(lk, out, deadline, st);
  }

  std::vector<std::optional<T>> slots_;
  std::size_t head_ = 0;
  std::size_t tail_ = 0;
  std::size_t count_ = 0;
};

// ---- select ------------------------------------------------------------------------------

/// A receive case for select: fires when `ch` has an item (moved into `out`, status ok) or
/// is closed and drained (status closed, `out` untouched).
template <class T> struct recv_case {
  channel<T> &ch;
  T &out;

  status try_fire() { return ch.try_recv(out); }
  detail::channel_core &core() noexcept { return ch; }
};

/// A send case for select: fires when `ch` has room (value moved in, status ok) or is
/// closed (status closed). `value` is moved from only if this case fired with ok.
template <class T> struct send_case {
  channel<T> &ch;
  T value;

  status try_fire() { return ch.try_send(std::move(value)); }
  detail::channel_core &core() noexcept { return ch; }
};

template <class T> recv_case(channel<T> &, T &) -> recv_case<T>;

/// Makes a send case; the value is moved into the case (and into the channel if it fires).
template <class T, class U> send_case<T> make_send_case(channel<T> &ch, U &&value) {
  return send_case<T>{ch, T(std::forward<U>(value))};
}

/// Which case of a select fired.
struct select_result {
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  std::size_t index = none; ///< the case that fired, or none on timeout/cancelled
  status st = status::ok;   ///< ok or closed for the fired case; timeout or cancelled otherwise
};

namespace detail {

inline std::size_t select_start(std::size_t n) {
  // A per-thread xorshift: when several cases are ready, each is chosen about equally often.
  thread_local std::uint64_t x = 0x9E3779B97F4A7C15ULL ^ reinterpret_cast<std::uintptr_t>(&x);
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return static_cast<std::size_t>(x % n);
}

template <class Tuple, std::size_t... I>
bool try_cases(Tuple &cases, std::size_t start, select_result &r, std::index_sequence<I...>) {
  constexpr std::size_t n = sizeof...(I);
  auto try_one = [&](std::size_t idx) {
    bool fired = false;
    ((I == idx ? (void)([&] {
       status s = std::get<I>(cases).try_fire();
       if (s == status::ok || s == status::closed) {
         r.index = I;
         r.st = s;
         fired = true;
       }
     }())
               : void()),
     ...);
    return fired;
  };
  for (std::size_t k = 0; k < n; ++k) {
    if (try_one((start + k) % n)) {
      return true;
    }
  }
  return false;
}

template <class... Cases>
select_result select_impl(const steady_deadline &deadline, const std::stop_token &st,
                          Cases &...cases) {
  static_assert(sizeof...(Cases) > 0, "lakh::select needs at least one case");
  auto tuple = std::tie(cases...);
  auto seq = std::index_sequence_for<Cases...>{};
  select_result r;
  if (try_cases(tuple, select_start(sizeof...(Cases)), r, seq)) {
    return r;
  }
  select_waiter w;
  std::stop_callback wake(st, [&w] { w.signal(); });
  for (;;) {
    if (st.stop_requested()) {
      return {select_result::none, status::cancelled};
    }
    (cases.core().add_selector(&w), ...);
    // Re-check after registering: a change that happened before registration is seen
    // here, one after it signals w.
    bool fired = try_cases(tuple, select_start(sizeof...(Cases)), r, seq);
    if (!fired) {
      std::unique_lock lk(w.mu);
      if (!wait_until(w.cv, lk, deadline, [&] { return w.signaled || st.stop_requested(); })) {
        lk.unlock();
        (cases.core().remove_selector(&w), ...);
        return {select_result::none, status::timeout};
      }
      w.signaled = false;
    }
    (cases.core().remove_selector(&w), ...);
    if (fired) {
      return r;
    }
  }
}

} // namespace detail

/// Waits until one of the cases can proceed, performs exactly that one, and says which.
/// When several are ready, one is chosen at random (fair). A recv case on a closed, drained
/// channel and a send case on a closed channel fire with status::closed.
/// Thread-safety: safe; channels may be used concurrently by other threads and selects.
/// Blocks: until a case fires. Allocates: may (registration on each channel).
template <class... Cases> select_result select(Cases &&...cases) {
  return detail::select_impl(detail::steady_deadline(), std::stop_token{}, cases...);
}

/// As select(), but returns {none, cancelled} once `st` is stopped.
/// Blocks: until a case fires or stop is requested.
template <class... Cases> select_result select(std::stop_token st, Cases &&...cases) {
  return detail::select_impl(detail::steady_deadline(), st, cases...);
}

/// As select(), but returns {none, timeout} once `d` has passed (or cancelled via `st`).
/// Blocks: until a case fires, the deadline, or stop.
template <class Rep, class Period, class... Cases>
select_result select_for(std::chrono::duration<Rep, Period> d, std::stop_token st,
                         Cases &&...cases) {
  return detail::select_impl(detail::steady_deadline_in(d), st, cases...);
}

/// As select_for() with an absolute deadline.
template <class Clock, class Duration, class... Cases>
select_result select_until(std::chrono::time_point<Clock, Duration> tp, std::stop_token st,
                           Cases &&...cases) {
  return detail::select_impl(detail::steady_deadline_at(tp), st, cases...);
}

} // namespace lakh
