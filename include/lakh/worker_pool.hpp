#pragma once
// lakh/worker_pool.hpp: a fixed set of std::jthread workers fed by a BOUNDED FIFO queue.
//
// How it differs from its peers: BS::thread_pool, boost::asio::thread_pool and TBB queue
// without bound, so a fast producer grows memory until the machine swaps. lakh::worker_pool
// has a fixed queue capacity: `submit` blocks when the queue is full (backpressure), `try_`
// forms report status::full, `submit_for`/`submit_until` give up at a deadline, and every
// blocking form has a std::stop_token overload. Shutdown is explicit and graceful
// (`shutdown()` drains, `stop()` cancels what has not started and returns the count), and a
// task that takes a std::stop_token (as its first parameter, like std::jthread's function)
// sees stop requested by `stop()`. `parallel_for_each` over a lakh::channel lives in
// lakh/parallel_for_each.hpp, so that this header does not pull in the channel.
//
// Go has no pool type; the Go idiom is N goroutines ranging over a channel, which is what
// lakh::parallel_for_each does on this pool's threads. Guide: docs/worker_pool.md.
//
// One header over ~500 lines because it is one concept: the pool and the futures its
// submit forms return share the queue and its shutdown.

#include <lakh/detail/task_invoke.hpp>
#include <lakh/detail/unique_function.hpp>
#include <lakh/detail/wait.hpp>
#include <lakh/error.hpp>
#include <lakh/status.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace lakh {

/// The outcome of a status-returning submit: `status::ok` and a valid future, or why not
/// (`full`, `timeout`, `cancelled`, `closed`) and an invalid future.
template <class R> struct [[nodiscard]] submit_result {
  lakh::status status = lakh::status::closed; ///< ok, full, timeout, cancelled or closed
  std::future<R> future;                      ///< valid only when status == ok

  /// True when the task was queued.
  explicit operator bool() const noexcept { return status == lakh::status::ok; }
};

/// A fixed pool of worker threads with a bounded FIFO submission queue. Every member but the
/// destructor is thread-safe; members never block (beyond the queue's lock, held briefly) or
/// allocate unless noted.
///
/// Memory ordering: everything a thread did before a successful submit/post happens-before
/// the task's body starts; the task's completion (return or exception) happens-before the
/// matching `future::get()`/`wait()` returns, and every task's completion happens-before
/// `wait_idle()`, `shutdown()` or `stop()` returns.
///
/// Fairness: queued tasks start in FIFO order (the order in which their submits took the
/// queue's lock). Submitters blocked on a full queue are woken one per freed slot, in an
/// unspecified order. With one worker, tasks therefore run strictly in submission order.
///
/// Exceptions: a `submit`ted task's exception goes to its future. A `post`ed task's has no
/// future: the FIRST one is kept and rethrown by the next `wait_idle()` or `shutdown()`
/// (and then forgotten); later ones, until it is rethrown, are dropped and counted by
/// `dropped_exceptions()`. The destructor cannot throw and drops a kept exception.
///
/// After `shutdown()` or `stop()` the pool is closed: plain `submit`/`post` throw
/// lakh::usage_error; status forms return status::closed.
///
/// Do not block a task on work that needs a free worker of the same pool (a task that waits
/// for another task's future, or submits to a full queue, can deadlock a small pool); use
/// `try_submit`/`try_post` from inside tasks. `wait_idle`, `shutdown` and `stop` called from
/// one of the pool's tasks throw lakh::usage_error; the pool must not be destroyed by one.
class worker_pool {
  using task_type = detail::unique_function<void(const std::stop_token &)>;

public:
  /// `std::thread::hardware_concurrency()`, or 1 when it is unknown.
  static std::size_t default_thread_count() noexcept {
    const unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<std::size_t>(n);
  }

  /// The queue capacity used when none is given: 256 slots per worker thread (a slot is 64
  /// bytes, so 16 KiB per worker plus whatever queued tasks capture beyond 48 bytes): enough
  /// to keep tiny tasks flowing (docs/worker_pool.md, "Sizing", has the measurement).
  static constexpr std::size_t default_queue_capacity(std::size_t threads) noexcept {
    return threads > std::numeric_limits<std::size_t>::max() / 256 ? threads : threads * 256;
  }

  /// A pool of `default_thread_count()` workers and `default_queue_capacity()` slots.
  /// @throws std::system_error if a thread cannot be started.
  /// Allocates: the queue and the threads.
  worker_pool() : worker_pool(default_thread_count()) {}

  /// A pool of `threads` workers and `default_queue_capacity(threads)` slots.
  /// @throws std::invalid_argument if threads is 0.
  /// @throws std::system_error if a thread cannot be started.
  /// Allocates: the queue and the threads.
  explicit worker_pool(std::size_t threads)
      : worker_pool(threads, default_queue_capacity(threads)) {}

  /// A pool of `threads` workers whose queue holds at most `queue_capacity` tasks that have
  /// not started yet (running tasks do not occupy a slot).
  /// @throws std::invalid_argument if threads or queue_capacity is 0.
  /// @throws std::system_error if a thread cannot be started (the ones already started are
  /// joined first).
  /// Allocates: the queue and the threads.
  worker_pool(std::size_t threads, std::size_t queue_capacity) {
    if (threads == 0) {
      throw std::invalid_argument("lakh::worker_pool: threads (0) must be at least 1");
    }
    if (queue_capacity == 0) {
      throw std::invalid_argument("lakh::worker_pool: queue_capacity (0) must be at least 1");
    }
    ring_.resize(queue_capacity);
    threads_.reserve(threads);
    try {
      for (std::size_t i = 0; i < threads; ++i) {
        threads_.emplace_back([this] { worker_main(); });
      }
    } catch (...) {
      close_and_join(false);
      throw;
    }
  }

  worker_pool(const worker_pool &) = delete;
  worker_pool &operator=(const worker_pool &) = delete;

  /// Equivalent to `shutdown()`: runs everything queued, joins the workers; a kept `post`
  /// exception is dropped (call `shutdown()` yourself to see it).
  ~worker_pool() { close_and_join(false); }

  // --- submit: a task with a result ---------------------------------------------------------

  /// Queues `fn(args...)` (or `fn(stop_token, args...)`) on decayed copies and returns the
  /// future of its result; the task's exception is stored in the future.
  /// Blocks: while the queue is full.
  /// @throws lakh::usage_error if the pool is (or gets, while waiting) shut down or stopped.
  /// @throws whatever copying fn or args throws; std::bad_alloc.
  /// Allocates: the future's shared state; the task when it captures more than 48 bytes.
  template <class F, class... Args>
  requires detail::stoppable_invocable<F, Args...> &&
      (!(sizeof...(Args) == 1 && (std::is_same_v<std::decay_t<Args>, std::stop_token> && ...)))
          std::future<detail::task_result_t<F, Args...>> submit(F &&fn, Args &&...args) {
    auto [task, future] = package(std::forward<F>(fn), std::forward<Args>(args)...);
    if (push(task, [](auto &lk, auto &cv, auto pred) {
          cv.wait(lk, pred);
          return status::ok;
        }) == status::closed) {
      throw usage_error("lakh::worker_pool::submit: the pool is shut down or stopped");
    }
    return std::move(future);
  }

  /// Queues `fn()` (or `fn(pool_stop_token)`) unless `st` is stopped first.
  /// Blocks: while the queue is full, until a slot frees, the pool
  /// closes, or stop is requested on `st`.
  /// @return {ok, future}, or {closed} / {cancelled} and an invalid future.
  /// @throws whatever copying fn throws; std::bad_alloc.
  /// Allocates: the future's shared state; the task when it captures more than 48 bytes.
  template <class F>
  requires detail::stoppable_invocable<F> submit_result<detail::task_result_t<F>>
  submit(F &&fn, std::stop_token st) {
    return submit_by(std::forward<F>(fn), std::nullopt, st);
  }

  /// Queues `fn()` (or `fn(pool_stop_token)`) only if a slot is free now.
  /// @return {ok, future}, or {full} / {closed} and an invalid future.
  /// @throws whatever copying fn throws; std::bad_alloc.
  /// Allocates: the future's shared state (even when full); the task when it captures more
  /// than 48 bytes.
  template <class F>
  requires detail::stoppable_invocable<F> submit_result<detail::task_result_t<F>>
  try_submit(F &&fn) {
    auto [task, future] = package(std::forward<F>(fn));
    const status s = push(task, [](auto &, auto &, auto) { return status::full; });
    return finish(s, std::move(future));
  }

  /// Queues `fn` unless `timeout` passes (or `st` is stopped) while the queue is full.
  /// Blocks: until a slot frees, the pool closes, the timeout, or stop.
  /// @return {ok, future}, or {timeout} / {cancelled} / {closed} and an invalid future.
  /// @throws whatever copying fn throws; std::bad_alloc.
  /// Allocates: the future's shared state; the task when it captures more than 48 bytes.
  template <class F, class Rep, class Period>
  requires detail::stoppable_invocable<F> submit_result<detail::task_result_t<F>>
  submit_for(F &&fn, const std::chrono::duration<Rep, Period> &timeout, std::stop_token st = {}) {
    return submit_by(std::forward<F>(fn), detail::steady_deadline_in(timeout), st);
  }

  /// Queues `fn` unless `deadline` passes (or `st` is stopped) while the queue is full.
  /// Blocks: until a slot frees, the pool closes, the deadline, or stop.
  /// @return {ok, future}, or {timeout} / {cancelled} / {closed} and an invalid future.
  /// @throws whatever copying fn throws; std::bad_alloc.
  /// Allocates: the future's shared state; the task when it captures more than 48 bytes.
  template <class F, class Clock, class Duration>
  requires detail::stoppable_invocable<F> submit_result<detail::task_result_t<F>>
  submit_until(F &&fn, const std::chrono::time_point<Clock, Duration> &deadline,
               std::stop_token st = {}) {
    return submit_by(std::forward<F>(fn), detail::steady_deadline_at(deadline), st);
  }

  // --- post: fire and forget ----------------------------------------------------------------

  /// Queues `fn()` (or `fn(pool_stop_token)`) without a future. Its result is discarded; its
  /// exception is kept for `wait_idle()`/`shutdown()` (see the class comment).
  /// Blocks: while the queue is full.
  /// @throws lakh::usage_error if the pool is (or gets, while waiting) shut down or stopped.
  /// @throws whatever copying fn throws; std::bad_alloc if fn captures more than 48 bytes.
  /// Allocates: only when fn captures more than 48 bytes.
  template <class F>
  requires detail::stoppable_invocable<F>
  void post(F &&fn) {
    task_type task = wrap_post(std::forward<F>(fn));
    if (push(task, [](auto &lk, auto &cv, auto pred) {
          cv.wait(lk, pred);
          return status::ok;
        }) == status::closed) {
      throw usage_error("lakh::worker_pool::post: the pool is shut down or stopped");
    }
  }

  /// Queues `fn` without a future unless `st` is stopped first.
  /// Blocks: until a slot frees, the pool closes, or stop on `st`.
  /// @return ok, closed or cancelled.
  /// @throws whatever copying fn throws; std::bad_alloc if fn captures more than 48 bytes.
  /// Allocates: only when fn captures more than 48 bytes.
  template <class F>
  requires detail::stoppable_invocable<F>
  [[nodiscard]] status post(F &&fn, std::stop_token st) {
    task_type task = wrap_post(std::forward<F>(fn));
    return push(task, [&st](auto &lk, auto &cv, auto pred) {
      return cv.wait(lk, st, pred) ? status::ok : status::cancelled;
    });
  }

  /// Queues `fn` without a future only if a slot is free now.
  /// @return ok, full or closed.
  /// @throws whatever copying fn throws; std::bad_alloc if fn captures more than 48 bytes.
  /// Allocates: only when fn captures more than 48 bytes.
  template <class F>
  requires detail::stoppable_invocable<F>
  [[nodiscard]] status try_post(F &&fn) {
    task_type task = wrap_post(std::forward<F>(fn));
    return push(task, [](auto &, auto &, auto) { return status::full; });
  }

  // --- waiting and shutting down ------------------------------------------------------------

  /// Waits until the queue is empty and no task runs, then rethrows (and forgets) the first
  /// exception a posted task threw since the last rethrow. With concurrent submitters "idle"
  /// is a moment, not a state.
  /// Blocks: until idle.
  /// @throws lakh::usage_error if called from one of this pool's tasks (it would wait for
  /// itself).
  /// @throws the kept exception of a posted task.
  void wait_idle() {
    check_not_own_worker("wait_idle");
    std::unique_lock lk(mu_);
    ++idle_waiters_;
    idle_cv_.wait(lk, [this] { return count_ == 0 && running_ == 0; });
    --idle_waiters_;
    rethrow_kept(lk);
  }

  /// As `wait_idle()`, but gives up when stop is requested on `st`.
  /// Blocks: until idle or stop.
  /// @return ok (then a kept exception is rethrown, as by wait_idle()), or cancelled.
  /// @throws lakh::usage_error if called from one of this pool's tasks.
  /// @throws the kept exception of a posted task.
  [[nodiscard]] status wait_idle(std::stop_token st) {
    check_not_own_worker("wait_idle");
    std::unique_lock lk(mu_);
    ++idle_waiters_;
    const bool idle = idle_cv_.wait(lk, st, [this] { return count_ == 0 && running_ == 0; });
    --idle_waiters_;
    if (!idle) {
      return status::cancelled;
    }
    rethrow_kept(lk);
    return status::ok;
  }

  /// Closes the pool to new work, runs everything already queued, joins the workers, then
  /// rethrows (and forgets) a posted task's kept exception. Idempotent: later calls (and
  /// concurrent ones, which wait for the first) only rethrow what was kept since.
  /// Blocks: until the queue is drained and the workers have exited.
  /// @throws lakh::usage_error if called from one of this pool's tasks.
  /// @throws the kept exception of a posted task.
  void shutdown() {
    check_not_own_worker("shutdown");
    close_and_join(false);
    std::unique_lock lk(mu_);
    rethrow_kept(lk);
  }

  /// Closes the pool, discards every queued task that has not started (a discarded submit's
  /// future throws std::future_error with std::future_errc::broken_promise from get(); a
  /// discarded post never runs), requests stop on the pool's stop token (seen by running
  /// tasks that take one), and joins the workers. Does not rethrow a kept exception
  /// (`wait_idle()` still can). Safe to call after or during `shutdown()`, which it hurries.
  /// Blocks: until the running tasks return and the workers exit.
  /// @return how many queued tasks this call discarded (submitted - started, for the pool's
  /// whole life, when nothing else discarded any).
  /// @throws lakh::usage_error if called from one of this pool's tasks.
  /// Allocates: a vector for the discarded tasks.
  std::size_t stop() {
    check_not_own_worker("stop");
    return close_and_join(true);
  }

  // --- observers ----------------------------------------------------------------------------

  /// The number of worker threads.
  [[nodiscard]] std::size_t size() const noexcept { return threads_.size(); }

  /// The queue's capacity.
  [[nodiscard]] std::size_t capacity() const noexcept { return ring_.size(); }

  /// Queued tasks that have not started; approximate (stale as soon as it returns).
  [[nodiscard]] std::size_t pending() const {
    std::scoped_lock lk(mu_);
    return count_;
  }

  /// Tasks running now; approximate. Blocks: briefly.
  [[nodiscard]] std::size_t running() const {
    std::scoped_lock lk(mu_);
    return running_;
  }

  /// True once `shutdown()`, `stop()` or the destructor has closed the pool.
  [[nodiscard]] bool is_closed() const {
    std::scoped_lock lk(mu_);
    return closed_;
  }

  /// Exceptions of posted tasks that were dropped because an earlier one was still kept.
  [[nodiscard]] std::size_t dropped_exceptions() const {
    std::scoped_lock lk(mu_);
    return dropped_;
  }

  /// The token passed to tasks that take one; stop is requested on it by `stop()`.
  [[nodiscard]] std::stop_token get_stop_token() const noexcept { return stop_source_.get_token(); }

private:
  template <class F, class... Args> static auto package(F &&fn, Args &&...args) {
    using result = detail::task_result_t<F, Args...>;
    std::promise<result> promise;
    std::future<result> future = promise.get_future();
    task_type task([f = std::forward<F>(fn), ... as = std::forward<Args>(args),
                    p = std::move(promise)](const std::stop_token &st) mutable {
      try {
        if constexpr (std::is_void_v<result>) {
          detail::invoke_task(std::move(f), st, std::move(as)...);
          p.set_value();
        } else {
          p.set_value(detail::invoke_task(std::move(f), st, std::move(as)...));
        }
      } catch (...) {
        p.set_exception(std::current_exception());
      }
    });
    return std::pair<task_type, std::future<result>>(std::move(task), std::move(future));
  }

  template <class F> static task_type wrap_post(F &&fn) {
    return task_type([f = std::forward<F>(fn)](const std::stop_token &st) mutable {
      static_cast<void>(detail::invoke_task(std::move(f), st));
    });
  }

  /// submit(), submit_for() and submit_until(): waits for room until `deadline` (none when
  /// empty) or a stop request on `st`.
  template <class F>
  submit_result<detail::task_result_t<F>> submit_by(F &&fn, const detail::steady_deadline &deadline,
                                                    const std::stop_token &st) {
    auto [task, future] = package(std::forward<F>(fn));
    const status s = push(task, [&](auto &lk, auto &cv, auto pred) {
      if (deadline ? cv.wait_until(lk, st, *deadline, pred) : cv.wait(lk, st, pred)) {
        return status::ok;
      }
      return st.stop_requested() ? status::cancelled : status::timeout;
    });
    return finish(s, std::move(future));
  }

  template <class R> static submit_result<R> finish(status s, std::future<R> future) {
    submit_result<R> r;
    r.status = s;
    if (s == status::ok) {
      r.future = std::move(future);
    }
    return r;
  }

  /// Moves `task` into the queue. When it is full, `wait(lock, cv, pred)` waits for room and
  /// returns ok, or returns why it gave up. On anything but ok, `task` is left untouched.
  template <class Wait> status push(task_type &task, Wait &&wait) {
    std::unique_lock lk(mu_);
    const auto room = [this] { return closed_ || count_ < ring_.size(); };
    if (!room()) {
      ++blocked_submitters_;
      const status s = wait(lk, not_full_, room);
      --blocked_submitters_;
      if (s != status::ok) {
        return s;
      }
    }
    if (closed_) {
      return status::closed;
    }
    std::size_t tail = head_ + count_;
    if (tail >= ring_.size()) {
      tail -= ring_.size();
    }
    ring_[tail] = std::move(task);
    ++count_;
    const bool wake = idle_workers_ > 0;
    lk.unlock();
    if (wake) {
      not_empty_.notify_one();
    }
    return status::ok;
  }

  void worker_main() {
    detail::current_executor = this;
    std::stop_token const st = stop_source_.get_token();
    task_type task;
    std::unique_lock lk(mu_);
    for (;;) {
      if (count_ == 0) {
        if (closed_) {
          break;
        }
        ++idle_workers_;
        not_empty_.wait(lk, [this] { return count_ > 0 || closed_; });
        --idle_workers_;
        continue;
      }
      task = std::move(ring_[head_]);
      head_ = head_ + 1 == ring_.size() ? 0 : head_ + 1;
      --count_;
      ++running_;
      const bool wake_submitter = blocked_submitters_ > 0;
      lk.unlock();
      if (wake_submitter) {
        not_full_.notify_one();
      }
      std::exception_ptr error;
      try {
        task(st); // submit's wrapper never throws; a posted task may
      } catch (...) {
        error = std::current_exception();
      }
      task = nullptr; // captures die before the completion is published
      lk.lock();
      if (error) {
        if (first_error_) {
          ++dropped_;
        } else {
          first_error_ = std::move(error);
        }
      }
      --running_;
      if (running_ == 0 && count_ == 0 && idle_waiters_ > 0) {
        idle_cv_.notify_all();
      }
    }
    detail::current_executor = nullptr;
  }

  /// Closes, optionally discards the queue and requests stop, and joins (once, whoever
  /// calls first; concurrent callers wait). Returns how many tasks it discarded.
  std::size_t close_and_join(bool cancel) {
    std::vector<task_type> discarded;
    std::unique_lock lk(mu_);
    closed_ = true;
    if (cancel) {
      discarded.reserve(count_);
      for (; count_ > 0; --count_) {
        discarded.push_back(std::move(ring_[head_]));
        head_ = head_ + 1 == ring_.size() ? 0 : head_ + 1;
      }
      head_ = 0;
    }
    const bool joiner = !join_started_;
    join_started_ = true;
    lk.unlock();
    not_empty_.notify_all();
    not_full_.notify_all();
    idle_cv_.notify_all();
    std::size_t const n = discarded.size();
    discarded.clear(); // outside the lock: breaks promises, runs captures' destructors
    if (cancel) {
      stop_source_.request_stop();
    }
    if (joiner) {
      for (std::jthread &t : threads_) {
        if (t.joinable()) {
          t.join();
        }
      }
      lk.lock();
      joined_ = true;
      lk.unlock();
      idle_cv_.notify_all();
    } else {
      lk.lock();
      idle_cv_.wait(lk, [this] { return joined_; });
    }
    return n;
  }

  void rethrow_kept(std::unique_lock<std::mutex> &lk) {
    if (first_error_) {
      std::exception_ptr e = std::exchange(first_error_, nullptr);
      lk.unlock();
      std::rethrow_exception(e);
    }
  }

  void check_not_own_worker(const char *fn) const {
    if (detail::current_executor == this) {
      throw usage_error(std::string("lakh::worker_pool::") + fn +
                        ": called from one of the pool's own tasks (it would wait for itself)");
    }
  }

  mutable std::mutex mu_;
  std::condition_variable not_empty_;    // workers wait for a task or close
  std::condition_variable_any not_full_; // submitters wait for a slot (stop_token aware)
  std::condition_variable_any idle_cv_;  // wait_idle and late joiners
  std::vector<task_type> ring_;          // the bounded FIFO: head_, count_
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::size_t running_ = 0;
  std::size_t idle_workers_ = 0;
  std::size_t blocked_submitters_ = 0;
  std::size_t idle_waiters_ = 0;
  std::size_t dropped_ = 0;
  std::exception_ptr first_error_;
  bool closed_ = false;
  bool join_started_ = false;
  bool joined_ = false;
  std::stop_source stop_source_;
  std::vector<std::jthread> threads_; // last: workers start after every other member exists
};

} // namespace lakh
