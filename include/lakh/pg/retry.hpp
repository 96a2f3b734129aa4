#pragma once
// lakh/pg/retry.hpp: run a transaction, and run it again when PostgreSQL says a retry can
// succeed: lakh::pg::classify() and lakh::pg::retrier. Modelled on pqxx::perform (which
// retries broken_connection and every transaction_rollback a fixed number of times, with no
// pause), plus: a precise classifier (retry 40P01, 40001, 55P03 and lost connections; NEVER
// in_doubt_error or statement_completion_unknown, whose commit may have happened; decided by
// exception type first, since libpqxx 6.4's rollback errors carry no sqlstate()), full-jitter
// backoff (lakh::backoff), an attempt limit and a shared lakh::retry_budget, a fresh
// connection after a lost one, counters per cause, and a stop_token that cuts a backoff
// short. Guide: docs/pg.md (API: lakh/pg/retry.hpp and lakh/backoff.hpp).

#include <lakh/backoff.hpp>
#include <lakh/pg/batched_transaction.hpp>
#include <lakh/pg/connection.hpp>
#include <lakh/pg/detail/pqxx_compat.hpp>
#include <lakh/pg/pool.hpp>
#include <lakh/status.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace lakh::pg {

/// Why a transaction failed, as far as retrying is concerned.
enum class retry_cause : unsigned char {
  not_retryable,      ///< any other error: rethrown at once
  in_doubt,           ///< in_doubt_error / statement_completion_unknown (40003): NEVER retried
  query_canceled,     ///< 57014 (statement_timeout, pg_cancel_backend): not retried
  deadlock,           ///< 40P01 deadlock_detected: retried
  serialization,      ///< 40001 serialization_failure: retried
  lock_not_available, ///< 55P03 (lock_timeout, NOWAIT): retried
  connection_lost,    ///< broken_connection, connect_error, SQLSTATE 08xxx / 57P01-57P03: retried
};

/// Number of retry_cause enumerators.
inline constexpr std::size_t retry_cause_count = 7;

/// The enumerator's name, e.g. "deadlock".
constexpr std::string_view to_string(retry_cause c) noexcept {
  switch (c) {
  case retry_cause::not_retryable:
    return "not_retryable";
  case retry_cause::in_doubt:
    return "in_doubt";
  case retry_cause::query_canceled:
    return "query_canceled";
  case retry_cause::deadlock:
    return "deadlock";
  case retry_cause::serialization:
    return "serialization";
  case retry_cause::lock_not_available:
    return "lock_not_available";
  case retry_cause::connection_lost:
    return "connection_lost";
  }
  return "unknown";
}

/// Whether a failure with cause `c` is worth another attempt (deadlock, serialization,
/// lock_not_available, connection_lost).
constexpr bool is_retryable(retry_cause c) noexcept {
  return c == retry_cause::deadlock || c == retry_cause::serialization ||
         c == retry_cause::lock_not_available || c == retry_cause::connection_lost;
}

/// Classify an exception thrown by a transaction: THE retry classifier of lakh (the job
/// queue, the outbox, the examples all use this one). Works with libpqxx 6.4 and 7.x.
///
/// Order matters: in_doubt_error and statement_completion_unknown are checked first (in
/// 6.4 the latter is a transaction_rollback, in 7.x an sql_error too), then the typed
/// deadlock/serialization errors, then broken_connection (which includes
/// lakh::pg::connect_error and, in 6.4, too_many_connections), and finally the SQLSTATE of
/// a pqxx::sql_error.
/// Allocates: may (copies the SQLSTATE).
[[nodiscard]] inline retry_cause classify(const std::exception &e) noexcept {
  if (dynamic_cast<const pqxx::in_doubt_error *>(&e) != nullptr ||
      dynamic_cast<const pqxx::statement_completion_unknown *>(&e) != nullptr) {
    return retry_cause::in_doubt;
  }
  if (dynamic_cast<const pqxx::deadlock_detected *>(&e) != nullptr) {
    return retry_cause::deadlock;
  }
  if (dynamic_cast<const pqxx::serialization_failure *>(&e) != nullptr) {
    return retry_cause::serialization;
  }
  if (dynamic_cast<const pqxx::broken_connection *>(&e) != nullptr) {
    return retry_cause::connection_lost;
  }
  std::string state;
  try {
    state = detail::sqlstate_of(e);
  } catch (...) {
    return retry_cause::not_retryable;
  }
  if (state == "40003") {
    return retry_cause::in_doubt;
  }
  if (state == "40P01") {
    return retry_cause::deadlock;
  }
  if (state == "40001") {
    return retry_cause::serialization;
  }
  if (state == "55P03") {
    return retry_cause::lock_not_available;
  }
  if (state == "57014") {
    return retry_cause::query_canceled;
  }
  if (state.size() == 5 && (state.compare(0, 2, "08") == 0 || state == "57P01" ||
                            state == "57P02" || state == "57P03")) {
    return retry_cause::connection_lost;
  }
  return retry_cause::not_retryable;
}

/// Settings of a retrier.
struct retry_options {
  /// Most attempts per run() call, the first included (1 = never retry). 1 ..= 1000.
  unsigned max_attempts = 5;
  /// Delay before retry k: uniform in [0, min(cap, base * 2^k)].
  lakh::backoff backoff{std::chrono::milliseconds(5), std::chrono::milliseconds(500)};
  /// Optional budget shared across calls (and retriers); null means unlimited. Each retry
  /// withdraws a token; each success deposits.
  std::shared_ptr<lakh::retry_budget> budget;
};

/// A snapshot of a retrier's counters.
struct retry_stats {
  std::uint64_t calls = 0;              ///< run() calls started
  std::uint64_t attempts = 0;           ///< transaction attempts (first tries + retries)
  std::uint64_t successes = 0;          ///< calls that committed
  std::uint64_t failures = 0;           ///< calls that ended with an exception
  std::uint64_t exhausted_attempts = 0; ///< failures with a retryable cause at max_attempts
  std::uint64_t exhausted_budget = 0;   ///< failures with a retryable cause and no budget left
  std::uint64_t cancelled = 0;          ///< failures because stop was requested during backoff
  /// Retries made, by cause (index: static_cast<std::size_t>(retry_cause)).
  std::array<std::uint64_t, retry_cause_count> retries{};
  /// Errors seen, by cause, whether retried or not.
  std::array<std::uint64_t, retry_cause_count> errors{};

  /// Retries made because of cause `c`.
  [[nodiscard]] std::uint64_t retries_for(retry_cause c) const noexcept {
    return retries[static_cast<std::size_t>(c)];
  }
  /// Errors classified as `c`.
  [[nodiscard]] std::uint64_t errors_for(retry_cause c) const noexcept {
    return errors[static_cast<std::size_t>(c)];
  }
};

/// Runs transaction functions with retry. Share one retrier between threads: every member is
/// thread-safe, and members other than run() never block or allocate. Its counters are
/// atomics (relaxed: each is exact, a snapshot of several is approximate).
///
/// The function is called with a fresh transaction for each attempt and must not commit:
/// run() commits after it returns. It may run several times, so it must not have side
/// effects outside the transaction (or they must be idempotent). Its return value is
/// returned by run().
class retrier {
  // Defined first: the members below use their deduced return types.
  /// run_loop's way to a connection: a lease of `p` (a lost connection is not given back).
  static auto on_pool(pool &p, std::stop_token &st) {
    return [&p, &st](auto &&body) {
      auto lease = p.acquire_default(st);
      if (!lease) {
        throw acquire_error(lease.status(), p.target());
      }
      try {
        return body(*lease);
      } catch (const std::exception &e) {
        if (!lease->is_open() || classify(e) == retry_cause::connection_lost) {
          lease.mark_broken();
        }
        throw;
      }
    };
  }

  /// A body for run_loop: fn(tx) in a transaction Tx(connection, args...), then its commit.
  template <class Tx, class Fn, class... Args> static auto in_transaction(Fn &fn, Args... args) {
    using result_t = std::invoke_result_t<Fn &, Tx &>;
    return [&fn, args...](pqxx::connection &c) -> result_t {
      Tx tx(c, args...);
      if constexpr (std::is_void_v<result_t>) {
        std::invoke(fn, tx);
        tx.commit();
      } else {
        result_t r = std::invoke(fn, tx);
        tx.commit();
        return r;
      }
    };
  }

public:
  /// A retrier with `opts`.
  /// @throws std::invalid_argument if opts.max_attempts is 0 or above 1000.
  explicit retrier(retry_options opts = {}) : opts_(std::move(opts)) {
    if (opts_.max_attempts == 0 || opts_.max_attempts > 1000) {
      throw std::invalid_argument("lakh::pg::retrier: max_attempts (" +
                                  std::to_string(opts_.max_attempts) + ") must be in 1..1000");
    }
  }

  /// Run `fn(tx)` in a pqxx::transaction<Isolation> on a connection from `p`, commit, and
  /// return fn's result; on a retryable failure (see classify) wait a jittered backoff and
  /// try again with a newly acquired connection, within max_attempts and the budget.
  /// Thread-safety: safe. Blocks: while the transaction runs, waiting for a connection, and
  /// during backoff; a stop request ends the waits.
  /// @throws the last attempt's exception when it is not retryable, attempts or budget are
  ///         exhausted, or stop was requested during backoff (in_doubt errors are always
  ///         rethrown at once);
  /// @throws lakh::pg::acquire_error if the pool is closed, stop is requested while
  ///         waiting for a connection, or the pool's acquire_timeout passes (not retried:
  ///         an exhausted pool is the caller's to report).
  /// Allocates: may.
  template <pqxx::isolation_level Isolation = pqxx::isolation_level::read_committed, class Fn>
  auto run(pool &p, Fn &&fn, std::stop_token st = {})
      -> std::invoke_result_t<Fn &, pqxx::transaction<Isolation> &> {
    return run_loop(on_pool(p, st), in_transaction<pqxx::transaction<Isolation>>(fn), st);
  }

  /// Like run(pool&, ...), with the transaction batched (lakh/pg/batched_transaction.hpp):
  /// fn(batched_transaction&) queues what it need not read with defer(), and BEGIN and the
  /// queued statements travel with its next exec() or the commit. A commit whose outcome is
  /// unknown throws pqxx::in_doubt_error, never retried.
  template <pqxx::isolation_level Isolation = pqxx::isolation_level::read_committed, class Fn>
  auto run_batched(pool &p, Fn &&fn, std::stop_token st = {})
      -> std::invoke_result_t<Fn &, batched_transaction &> {
    return run_loop(on_pool(p, st), in_transaction<batched_transaction>(fn, Isolation), st);
  }

  /// Like run(pool&, ...), on connections made by `factory`: one connection is kept across
  /// attempts and replaced (by calling factory again) only after it was lost.
  /// @throws as run(pool&, ...), and whatever the factory throws (connect_error is
  ///         classified as connection_lost and retried).
  template <pqxx::isolation_level Isolation = pqxx::isolation_level::read_committed, class Fn>
  auto run(const connection_factory &factory, Fn &&fn, std::stop_token st = {})
      -> std::invoke_result_t<Fn &, pqxx::transaction<Isolation> &> {
    std::unique_ptr<pqxx::connection> conn;
    return run_loop(
        [&conn, &factory](auto &&body) {
          if (conn == nullptr || !conn->is_open()) {
            conn.reset();
            conn = factory();
            if (conn == nullptr) {
              throw std::logic_error(
                  "lakh::pg::retrier::run: the connection factory returned null");
            }
          }
          try {
            return body(*conn);
          } catch (const std::exception &e) {
            if (!conn->is_open() || classify(e) == retry_cause::connection_lost) {
              conn.reset();
            }
            throw;
          }
        },
        in_transaction<pqxx::transaction<Isolation>>(fn), st);
  }

  /// The counters now.
  [[nodiscard]] retry_stats stats() const noexcept {
    retry_stats s;
    s.calls = calls_.load(std::memory_order_relaxed);
    s.attempts = attempts_.load(std::memory_order_relaxed);
    s.successes = successes_.load(std::memory_order_relaxed);
    s.failures = failures_.load(std::memory_order_relaxed);
    s.exhausted_attempts = exhausted_attempts_.load(std::memory_order_relaxed);
    s.exhausted_budget = exhausted_budget_.load(std::memory_order_relaxed);
    s.cancelled = cancelled_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < retry_cause_count; ++i) {
      s.retries[i] = retries_[i].load(std::memory_order_relaxed);
      s.errors[i] = errors_[i].load(std::memory_order_relaxed);
    }
    return s;
  }

  /// The settings.
  [[nodiscard]] const retry_options &options() const noexcept { return opts_; }

private:
  template <class WithConnection, class Body>
  auto run_loop(WithConnection &&with_connection, Body body, std::stop_token &st)
      -> std::invoke_result_t<Body &, pqxx::connection &> {
    using result_t = std::invoke_result_t<Body &, pqxx::connection &>;
    calls_.fetch_add(1, std::memory_order_relaxed);
    for (unsigned attempt = 1;; ++attempt) {
      attempts_.fetch_add(1, std::memory_order_relaxed);
      retry_cause cause = retry_cause::not_retryable;
      try {
        if constexpr (std::is_void_v<result_t>) {
          with_connection(body);
          succeeded();
          return;
        } else {
          result_t r = with_connection(body);
          succeeded();
          return r;
        }
      } catch (const acquire_error &) {
        failures_.fetch_add(1, std::memory_order_relaxed);
        throw;
      } catch (const std::exception &e) {
        cause = classify(e);
        errors_[static_cast<std::size_t>(cause)].fetch_add(1, std::memory_order_relaxed);
        if (!should_retry(cause, attempt)) {
          failures_.fetch_add(1, std::memory_order_relaxed);
          throw;
        }
        retries_[static_cast<std::size_t>(cause)].fetch_add(1, std::memory_order_relaxed);
        if (lakh::sleep_for(opts_.backoff.delay(attempt - 1), st) != lakh::status::ok) {
          cancelled_.fetch_add(1, std::memory_order_relaxed);
          failures_.fetch_add(1, std::memory_order_relaxed);
          throw;
        }
      } catch (...) {
        failures_.fetch_add(1, std::memory_order_relaxed);
        throw;
      }
    }
  }

  void succeeded() noexcept {
    successes_.fetch_add(1, std::memory_order_relaxed);
    if (opts_.budget) {
      opts_.budget->deposit();
    }
  }

  bool should_retry(retry_cause cause, unsigned attempt) noexcept {
    if (!is_retryable(cause)) {
      return false;
    }
    if (attempt >= opts_.max_attempts) {
      exhausted_attempts_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (opts_.budget && !opts_.budget->try_withdraw()) {
      exhausted_budget_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }

  retry_options opts_;
  std::atomic<std::uint64_t> calls_{0}, attempts_{0}, successes_{0}, failures_{0},
      exhausted_attempts_{0}, exhausted_budget_{0}, cancelled_{0};
  std::array<std::atomic<std::uint64_t>, retry_cause_count> retries_{};
  std::array<std::atomic<std::uint64_t>, retry_cause_count> errors_{};
};

} // namespace lakh::pg
