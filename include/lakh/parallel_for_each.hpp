#pragma once
// lakh/parallel_for_each.hpp: consume a lakh::channel<T> with a worker_pool's threads.
//
// The Go idiom `for i := 0; i < n; i++ { go func() { for v := range ch { fn(v) } }() }` plus
// an errgroup, as one call: up to `consumers` of the pool's workers receive from the channel
// and call fn on each item until the channel is closed and drained. The first exception fn
// throws stops the other consumers, closes the channel (so that producers blocked in send
// wake up with status::closed instead of hanging), and is rethrown. Kept apart from
// worker_pool.hpp so that the pool does not pull in the channel.

#include <lakh/channel.hpp>
#include <lakh/detail/task_invoke.hpp>
#include <lakh/error.hpp>
#include <lakh/status.hpp>
#include <lakh/worker_pool.hpp>

#include <cstddef>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lakh {

namespace detail {

/// fn(T&&, std::stop_token) when it accepts the token, else fn(T&&).
template <class F, class T>
concept item_consumer =
    std::is_invocable_v<F &, T &&, std::stop_token> || std::is_invocable_v<F &, T &&>;

template <class T, class F> class for_each_run {
public:
  for_each_run(channel<T> &ch, F &fn) : ch_(ch), fn_(fn) {}

  /// One consumer: receive and process until the channel is drained and closed (true) or
  /// stop is requested (false).
  bool consume(const std::stop_token &pool_token) {
    // The pool's stop() also stops this run.
    std::stop_callback const link(pool_token, [this]() noexcept { stop_.request_stop(); });
    std::stop_token const st = stop_.get_token();
    // Everything is caught, not only fn's exceptions: a receive whose T move throws must
    // stop the run too, and no exception may leave through the future while other
    // consumers still use this object.
    try {
      for (;;) {
        if (st.stop_requested()) {
          return false;
        }
        std::optional<T> item = ch_.recv(st);
        if (!item) {
          return !st.stop_requested();
        }
        if constexpr (std::is_invocable_v<F &, T &&, std::stop_token>) {
          std::invoke(fn_, std::move(*item), st);
        } else {
          std::invoke(fn_, std::move(*item));
        }
      }
    } catch (...) {
      fail(std::current_exception());
      return false;
    }
  }

  void fail(std::exception_ptr e) {
    {
      std::scoped_lock lk(mu_);
      if (error_) {
        return; // a later exception: dropped
      }
      error_ = std::move(e);
    }
    stop_.request_stop();
    ch_.close(); // wake producers blocked in send; receivers drain what is buffered
  }

  void request_stop() noexcept { stop_.request_stop(); }

  std::exception_ptr error() {
    std::scoped_lock lk(mu_);
    return error_;
  }

private:
  channel<T> &ch_;
  F &fn_;
  std::stop_source stop_;
  std::mutex mu_;
  std::exception_ptr error_;
};

} // namespace detail

/// Calls `fn(std::move(item))` (or `fn(std::move(item), token)`) for every item received from
/// `ch`, on up to `consumers` of `pool`'s workers at once, until `ch` is closed and drained.
/// fn is called concurrently from several threads and must be safe for that. Every item a
/// consumer receives is passed to fn, exactly once; items still in the channel when the run
/// stops early stay there. The token given to fn is stopped by the first exception, by stop
/// on `st`, or by `pool.stop()`.
///
/// On the first exception fn throws: the other consumers stop after their current item,
/// `ch` is closed (producers blocked in send get status::closed), and once every consumer
/// has returned the exception is rethrown; later ones are dropped.
///
/// Memory ordering: a send happens-before the fn call that gets its item; every fn call
/// happens-before this function returns or throws.
/// Thread-safety: safe; any number of runs may share a pool or a channel. Blocks: until the
/// channel is drained and closed, stop, or the first exception (and its consumers return).
/// @return status::ok when the channel was drained and closed; status::cancelled when stop
/// was requested on `st` or the pool was stopped before that.
/// @throws the first exception fn (or a throwing move of T while receiving) threw.
/// @throws std::invalid_argument if consumers is 0.
/// @throws lakh::usage_error if the pool is closed, or if called from one of the pool's own
/// tasks (it would wait for workers it may be occupying).
/// Allocates: the run's state and one pool task per consumer.
template <class T, class F>
requires detail::item_consumer<F, T> status parallel_for_each(worker_pool &pool, channel<T> &ch,
                                                              F &&fn, std::size_t consumers,
                                                              std::stop_token st = {}) {
  if (consumers == 0) {
    throw std::invalid_argument("lakh::parallel_for_each: consumers (0) must be at least 1");
  }
  if (detail::current_executor == &pool) {
    throw usage_error("lakh::parallel_for_each: called from one of the pool's own tasks (it "
                      "would wait for workers it may be occupying)");
  }
  // On the heap: GCC 12 at -O1 with sanitizers warns (-Wmaybe-uninitialized, a false
  // positive) about a std::stop_source member of a local object.
  auto owner = std::make_unique<detail::for_each_run<T, std::remove_reference_t<F>>>(ch, fn);
  auto &run = *owner;
  std::stop_callback const link(st, [&run]() noexcept { run.request_stop(); });

  std::vector<std::future<bool>> running;
  running.reserve(consumers);
  // Waits for every started consumer: they use `run`, which this frame owns.
  auto join = [&running] {
    bool all_drained = !running.empty();
    for (auto &f : running) {
      try {
        all_drained = f.get() && all_drained;
      } catch (...) { // future_error: discarded by pool.stop() before it started
        all_drained = false;
      }
    }
    return all_drained;
  };
  try {
    for (std::size_t i = 0; i < consumers; ++i) {
      auto r =
          pool.submit([&run](std::stop_token pool_token) { return run.consume(pool_token); }, st);
      if (r.status == status::ok) {
        running.push_back(std::move(r.future));
        continue;
      }
      if (r.status == status::closed && running.empty()) {
        throw usage_error("lakh::parallel_for_each: the pool is shut down or stopped");
      }
      break; // cancelled: the run is stopping anyway; closed meanwhile: fewer consumers
    }
  } catch (...) { // e.g. bad_alloc from submit: stop and wait for those already running
    run.request_stop();
    (void)join();
    throw;
  }
  const bool drained = join();
  if (std::exception_ptr e = run.error()) {
    std::rethrow_exception(e);
  }
  return drained ? status::ok : status::cancelled;
}

/// As above, with one consumer per worker of `pool` (`pool.size()`).
/// Thread-safety, blocking, return, exceptions and allocation: as above.
template <class T, class F>
requires detail::item_consumer<F, T> status parallel_for_each(worker_pool &pool, channel<T> &ch,
                                                              F &&fn, std::stop_token st = {}) {
  return parallel_for_each(pool, ch, std::forward<F>(fn), pool.size(), std::move(st));
}

} // namespace lakh
