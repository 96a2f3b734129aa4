#pragma once
// lakh/task_group.hpp: a group of concurrent tasks where the first failure cancels the rest,
// with an optional limit on how many run at once: Go's errgroup.WithContext + SetLimit.
//
// How it differs from Go: a task reports failure by throwing (not by returning an error),
// and `wait()` rethrows the FIRST exception, by time, after every task has returned; later
// exceptions are dropped and counted (`dropped_exceptions()`). Go's derived Context is a
// std::stop_token here: a task may take it as its parameter, and stop is requested on it
// when a task throws, on `request_stop()`, or when an optional parent token is stopped.
// Unlike Go, a successful `wait()` leaves the token unstopped, so the group can be reused.
// Tasks run on threads the group owns (std::jthread, never detached), reused by later
// spawns and joined by `wait()` and the destructor. A goroutine is cheap and a thread is
// not: use a task_group for a bounded set of concurrent jobs, and lakh::worker_pool for
// many small ones. Guide: docs/task_group.md.

#include <lakh/detail/task_invoke.hpp>
#include <lakh/detail/unique_function.hpp>
#include <lakh/error.hpp>
#include <lakh/status.hpp>

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace lakh {

/// Runs tasks concurrently, each on a thread of its own; the first exception requests stop
/// on all others and is rethrown by `wait()`. Every member but the constructor and destructor
/// is thread-safe; members never block (beyond the group's lock, held briefly) or allocate
/// unless noted.
///
/// Memory ordering: everything a thread did before `spawn`/`try_spawn` happens-before the
/// task's body starts; each task's completion (its return or throw, and the destruction of
/// what it captured) happens-before `wait()` (or the destructor) returns. The first failing
/// task's throw happens-before stop is requested on the group's token.
///
/// Fairness: with a limit, a task starts as soon as its spawn gets a slot; spawners blocked
/// at the limit are woken one per freed slot, in an unspecified order.
///
/// Deadlock: a task that spawns into its own group blocks while the group is at its limit;
/// if every running task does so, none can finish. Use `try_spawn` from inside tasks, or no
/// limit.
class task_group {
public:
  /// The value of `limit()` when there is none.
  static constexpr std::ptrdiff_t unlimited = -1;

  /// A group with no limit, stopped only by a failure or `request_stop()`.
  /// Allocates: the stop state (as std::stop_source).
  task_group() : task_group(std::stop_token{}) {}

  /// A group whose token is also stopped when `parent` is (Go's WithContext(parent)).
  /// Allocates: the stop state (as std::stop_source).
  explicit task_group(std::stop_token parent)
      : parent_link_(std::move(parent), forward_stop{&stop_source_}) {}

  task_group(const task_group &) = delete;
  task_group &operator=(const task_group &) = delete;

  /// If tasks are still running (no `wait()` since the last spawn), requests stop; then
  /// joins every task and thread. An exception no `wait()` rethrew is dropped: call `wait()`
  /// to see it. Must not run on one of the group's own tasks.
  ~task_group() {
    bool busy = false;
    {
      std::scoped_lock lk(mu_);
      busy = active_ > 0;
    }
    if (busy) {
      stop_source_.request_stop();
    }
    join_all();
  }

  /// Sets how many tasks may run at once: `n > 0`, or a negative value (`unlimited`) for no
  /// limit (as Go's SetLimit). Must be called while no task is active.
  /// @throws std::invalid_argument if n is 0 (every spawn would block forever).
  /// @throws lakh::usage_error if tasks are active (Go panics).
  /// Allocates: never.
  void set_limit(std::ptrdiff_t n) {
    if (n == 0) {
      throw std::invalid_argument("lakh::task_group::set_limit: n (0) would block every spawn; "
                                  "pass a negative value for no limit");
    }
    std::scoped_lock lk(mu_);
    if (active_ > 0) {
      throw usage_error("lakh::task_group::set_limit: called while " + std::to_string(active_) +
                        " task(s) are active; set the limit before spawning");
    }
    limit_ = n < 0 ? 0 : static_cast<std::size_t>(n);
  }

  /// The limit, or `unlimited`.
  [[nodiscard]] std::ptrdiff_t limit() const {
    std::scoped_lock lk(mu_);
    return limit_ == 0 ? unlimited : static_cast<std::ptrdiff_t>(limit_);
  }

  /// Runs `fn()`, or `fn(get_stop_token())` when it takes a token, on a thread of the group.
  /// After a failure or `request_stop()` the task still runs (as in Go), with its token
  /// already stopped; a task that honours the token returns at once.
  /// Tasks may spawn into their own group. Blocks: while the group is at its limit, until a
  /// task finishes.
  /// @throws std::system_error if a new thread cannot be started (the task is discarded).
  /// @throws whatever copying fn throws; std::bad_alloc.
  /// Allocates: a thread when no idle one is left; the task when it captures > 48 bytes.
  template <class F>
  requires detail::stoppable_invocable<F>
  void spawn(F &&fn) {
    task_type task = wrap(std::forward<F>(fn));
    std::unique_lock lk(mu_);
    if (!has_slot()) {
      slot_cv_.wait(lk, [this] { return has_slot(); });
    }
    start(lk, task);
  }

  /// As `spawn(fn)`, but gives up waiting for a slot when stop is requested on `st` (the
  /// caller's token, not the group's).
  /// Blocks: while at the limit, until a slot frees or stop on `st`.
  /// @return ok (the task was started) or cancelled (it was not, and is discarded).
  /// @throws std::system_error if a new thread cannot be started.
  /// @throws whatever copying fn throws; std::bad_alloc.
  /// Allocates: a thread when no idle one is left; the task when it captures > 48 bytes.
  template <class F>
  requires detail::stoppable_invocable<F>
  [[nodiscard]] status spawn(F &&fn, std::stop_token st) {
    task_type task = wrap(std::forward<F>(fn));
    std::unique_lock lk(mu_);
    if (!has_slot() && !slot_cv_.wait(lk, st, [this] { return has_slot(); })) {
      return status::cancelled;
    }
    start(lk, task);
    return status::ok;
  }

  /// Starts `fn` only if the group is below its limit now (Go's TryGo).
  /// Blocks: never (beyond the group's lock and starting a thread).
  /// @return true if started; false at the limit (fn is discarded).
  /// @throws std::system_error if a new thread cannot be started.
  /// @throws whatever copying fn throws; std::bad_alloc.
  /// Allocates: a thread when no idle one is left; the task when it captures > 48 bytes.
  template <class F>
  requires detail::stoppable_invocable<F>
  [[nodiscard]] bool try_spawn(F &&fn) {
    task_type task = wrap(std::forward<F>(fn));
    std::unique_lock lk(mu_);
    if (!has_slot()) {
      return false;
    }
    start(lk, task);
    return true;
  }

  /// Waits until every spawned task has returned (including tasks spawned meanwhile by
  /// tasks), joins the group's threads, then rethrows the first exception any task threw, if
  /// one did. The error is sticky: every later `wait()` rethrows it too, and the token stays
  /// stopped. After a `wait()` without error the group may be reused.
  /// Blocks: until all tasks return.
  /// @throws lakh::usage_error if called from one of the group's own tasks.
  /// @throws the first exception a task threw.
  /// Allocates: never.
  void wait() {
    if (detail::current_executor == this) {
      throw usage_error("lakh::task_group::wait: called from one of the group's own tasks (it "
                        "would wait for itself)");
    }
    join_all();
    std::unique_lock lk(mu_);
    if (first_error_) {
      std::exception_ptr e = first_error_;
      lk.unlock();
      std::rethrow_exception(e);
    }
  }

  /// Requests stop on the group's token, as a failing task does, without an exception.
  /// Blocks: while the token's stop callbacks run.
  /// @return true if this call made the request (std::stop_source::request_stop).
  /// Allocates: never.
  bool request_stop() noexcept { return stop_source_.request_stop(); }

  /// The group's token, passed to tasks that take one (Go's derived Context).
  [[nodiscard]] std::stop_token get_stop_token() const noexcept { return stop_source_.get_token(); }

  /// Tasks spawned and not yet returned; approximate.
  [[nodiscard]] std::size_t active() const {
    std::scoped_lock lk(mu_);
    return active_;
  }

  /// Exceptions thrown after the first, which `wait()` does not rethrow.
  [[nodiscard]] std::size_t dropped_exceptions() const {
    std::scoped_lock lk(mu_);
    return dropped_;
  }

private:
  using task_type = detail::unique_function<void(const std::stop_token &)>;

  struct forward_stop {
    std::stop_source *target;
    void operator()() const noexcept { target->request_stop(); }
  };

  // One thread and the task handed to it. A worker is either running its task, or parked in
  // idle_ waiting for the next one or for `exit`.
  struct worker {
    task_type task;
    bool exit = false;
    std::condition_variable wake;
    std::jthread thread;
  };

  template <class F> static task_type wrap(F &&fn) {
    static_assert(std::is_void_v<detail::task_result_t<F>>,
                  "lakh::task_group::spawn: a task reports failure by throwing; it must return "
                  "void (a returned value would be silently ignored)");
    return task_type([f = std::forward<F>(fn)](const std::stop_token &st) mutable {
      detail::invoke_task(std::move(f), st);
    });
  }

  bool has_slot() const { return limit_ == 0 || active_ < limit_; }

  // Hands `task` to an idle thread or a new one. Called with mu_ held and a slot free.
  void start(std::unique_lock<std::mutex> &lk, task_type &task) {
    ++active_;
    if (!idle_.empty()) {
      worker *w = idle_.back();
      idle_.pop_back();
      w->task = std::move(task);
      lk.unlock();
      w->wake.notify_one();
      return;
    }
    try {
      workers_.push_back(std::make_unique<worker>());
      worker &w = *workers_.back();
      w.task = std::move(task);
      w.thread = std::jthread([this, &w] { worker_main(w); });
    } catch (...) {
      if (!workers_.empty() && !workers_.back()->thread.joinable()) {
        workers_.pop_back();
      }
      --active_;
      lk.unlock();
      slot_cv_.notify_one();
      throw;
    }
  }

  void worker_main(worker &w) {
    detail::current_executor = this;
    std::stop_token const st = stop_source_.get_token();
    std::unique_lock lk(mu_);
    for (;;) {
      w.wake.wait(lk, [&w] { return static_cast<bool>(w.task) || w.exit; });
      if (!w.task) {
        break;
      }
      task_type task = std::move(w.task);
      lk.unlock();
      std::exception_ptr error;
      try {
        task(st);
      } catch (...) {
        error = std::current_exception();
      }
      task = nullptr; // captures die before the completion is published
      if (error) {
        lk.lock();
        if (first_error_) {
          ++dropped_;
        } else {
          first_error_ = std::move(error);
        }
        lk.unlock();
        stop_source_.request_stop(); // outside the lock: stop callbacks may call into us
      }
      lk.lock();
      idle_.push_back(&w);
      --active_;
      if (limit_ != 0) {
        slot_cv_.notify_one();
      }
      if (active_ == 0) {
        done_cv_.notify_all();
      }
    }
    detail::current_executor = nullptr;
  }

  // Waits for active_ == 0, then retires and joins every thread the group had. Concurrent
  // callers each wait for the tasks; one of them joins the threads.
  void join_all() {
    std::vector<std::unique_ptr<worker>> retired;
    {
      std::unique_lock lk(mu_);
      done_cv_.wait(lk, [this] { return active_ == 0; });
      retired.swap(workers_);
      idle_.clear(); // with no task active, every worker is idle
      for (auto &w : retired) {
        w->exit = true;
      }
    }
    for (auto &w : retired) {
      w->wake.notify_one();
      w->thread.join();
    }
  }

  mutable std::mutex mu_;
  std::condition_variable_any slot_cv_; // spawners at the limit (stop_token aware)
  std::condition_variable done_cv_;     // wait(): active_ reached 0
  std::vector<std::unique_ptr<worker>> workers_;
  std::vector<worker *> idle_;
  std::size_t active_ = 0;
  std::size_t limit_ = 0; // 0: no limit
  std::size_t dropped_ = 0;
  std::exception_ptr first_error_;
  std::stop_source stop_source_;
  std::stop_callback<forward_stop> parent_link_; // after stop_source_; inert without a parent
};

} // namespace lakh
