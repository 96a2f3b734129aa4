#pragma once
// lakh/pg/pool.hpp: lakh::pg::pool, a bounded pool of libpqxx connections handed out as RAII
// leases (pooled_connection), at most max_size at once (a FIFO-fair lakh::semaphore), opened
// lazily; broken connections are never handed out (checked on return and, without a round
// trip, before reuse) and are replaced. Unlike other pools, acquire reports timeout,
// cancelled and closed as a lakh::status, never as an exception; a failure to connect throws
// lakh::pg::connect_error naming host:port/dbname, never the password. Session state is not
// reset between leases. Guide: docs/pg.md (API: lakh/pg/pool.hpp).
//
// One header over ~500 lines because it is one concept: the pool, its lease and
// with_connection share the pool's state (its mutex, semaphore and statistics).
//
// Memory ordering: returning a lease happens-before the acquire that receives the same
// connection (both pass through the pool's mutex and the semaphore), so a connection is
// never used by two threads at once and each user sees its predecessor's writes to it.
#include <lakh/error.hpp>
#include <lakh/pg/connection.hpp>
#include <lakh/semaphore.hpp>
#include <lakh/status.hpp>

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lakh::pg {

/// How an idle connection is checked before it is handed out.
enum class validation {
  none,   ///< only is_open(): cheapest, a terminated backend is found by the next query
  socket, ///< is_open() and a zero-timeout poll() of the socket: no round trip (default)
  query,  ///< socket, then "SELECT 1": one round trip per acquire, catches everything
};

/// Settings of a pool.
struct pool_options {
  /// libpq connection string: URI (`postgresql://user@host:port/db?connect_timeout=5`) or
  /// key=value, opened by lakh::pg::connect (with lakh's keepalive defaults where it sets
  /// none). Ignored when `factory` is set.
  std::string url;
  /// Most connections open at once (idle + leased). 1 ..= max_pool_size.
  std::size_t max_size = 8;
  /// How idle connections are checked before they are handed out.
  validation validate = validation::socket;
  /// Makes each connection; empty means lakh::pg::connect(url).
  connection_factory factory;
  /// Runs once on each new connection (prepare statements, SET ...); if it throws, the
  /// connection is discarded and acquire rethrows.
  std::function<void(pqxx::connection &)> on_connect;
  /// How long with_connection() and retrier::run() wait for a free connection before they
  /// throw acquire_error with status timeout (a service answers "busy, retry later" instead
  /// of queueing without bound). Empty: wait as long as it takes. pool::acquire() itself
  /// takes no default deadline: use acquire_for().
  std::optional<std::chrono::milliseconds> acquire_timeout;
};

/// Upper bound of pool_options::max_size (PostgreSQL's own max_connections is far lower).
inline constexpr std::size_t max_pool_size = 10000;

/// A snapshot of a pool's counters (each read atomically; together approximate).
struct pool_stats {
  std::size_t max_size = 0;           ///< the bound
  std::size_t size = 0;               ///< connections open now: idle + in_use
  std::size_t idle = 0;               ///< open and not leased
  std::size_t in_use = 0;             ///< leased now
  std::size_t max_in_use = 0;         ///< the most leased at once since construction
  std::uint64_t acquired = 0;         ///< successful acquires
  std::uint64_t created = 0;          ///< connections opened
  std::uint64_t replaced = 0;         ///< broken connections discarded (found on return or check)
  std::uint64_t waits = 0;            ///< acquires that found no free permit and had to wait
  std::uint64_t timeouts = 0;         ///< acquires that returned status::timeout
  std::uint64_t cancellations = 0;    ///< acquires that returned status::cancelled
  std::uint64_t connect_failures = 0; ///< connection attempts that threw
};

/// A helper that must have a connection (with_connection, retrier::run, copy_from) could not
/// lease one: the pool was closed, stop was requested while waiting, or
/// pool_options::acquire_timeout passed (the pool is exhausted). status() says which.
/// (pool::acquire itself never throws this: it returns the status.)
class acquire_error : public std::runtime_error {
public:
  acquire_error(lakh::status s, const std::string &target)
      : std::runtime_error("lakh::pg: no connection from the pool for " + target + " (" +
                           std::string(lakh::to_string(s)) + ")"),
        status_(s) {}
  /// closed, cancelled or timeout.
  [[nodiscard]] lakh::status status() const noexcept { return status_; }

private:
  lakh::status status_;
};

class pool;

namespace detail {

struct pool_state {
  explicit pool_state(pool_options o)
      : opts(std::move(o)), permits(static_cast<std::ptrdiff_t>(opts.max_size)) {}

  pool_options opts;
  lakh::semaphore permits; // FIFO: waiters for a connection are served in arrival order
  std::stop_source close_source;

  std::mutex m;
  std::vector<std::unique_ptr<pqxx::connection>> idle; // guarded by m; LIFO (warmest first)
  std::size_t open = 0;                                // guarded by m
  std::size_t in_use = 0;                              // guarded by m
  std::size_t max_in_use = 0;                          // guarded by m
  bool closed = false;                                 // guarded by m

  std::atomic<std::uint64_t> acquired{0}, created{0}, replaced{0}, waits{0}, timeouts{0},
      cancellations{0}, connect_failures{0};

  /// Return a leased connection (nullptr: it was lost while creating one).
  void give_back(std::unique_ptr<pqxx::connection> c, bool broken) noexcept {
    std::unique_ptr<pqxx::connection> discard;
    {
      std::lock_guard lock(m);
      --in_use;
      if (c != nullptr && (broken || closed || !c->is_open())) {
        if (broken || !c->is_open()) {
          replaced.fetch_add(1, std::memory_order_relaxed);
        }
        discard = std::move(c);
        --open;
      } else if (c != nullptr) {
        idle.push_back(std::move(c));
      }
    }
    discard.reset(); // closes the socket outside the lock
    permits.release(1);
  }
};

/// Whether an idle connection looks usable without a round trip. An idle connection must
/// have nothing to read; data or EOF means the server spoke (a FATAL "terminating
/// connection" then EOF, or a NOTIFY). Notifications are consumed and delivered; anything
/// left readable afterwards is taken as a dead connection.
inline bool idle_connection_alive(pqxx::connection &c) noexcept {
  try {
    if (!c.is_open()) {
      return false;
    }
    int fd = c.sock();
    if (fd < 0) {
      return false;
    }
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, 0);
    if (r == 0) {
      return true;
    }
    if (r < 0 || (p.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) {
      return false;
    }
    c.get_notifs();
    if (!c.is_open()) {
      return false;
    }
    p.revents = 0;
    return ::poll(&p, 1, 0) == 0;
  } catch (...) {
    return false;
  }
}

inline bool ping(pqxx::connection &c) noexcept {
  try {
    pqxx::nontransaction tx(c);
    tx.exec("SELECT 1");
    return true;
  } catch (...) {
    return false;
  }
}

} // namespace detail

/// A leased connection (RAII): returned to its pool when destroyed or release()d. Empty when
/// acquire did not succeed; status() says why. Move-only.
///
/// Use one lease from one thread at a time, and destroy every transaction on it before the
/// lease. Its members never block (beyond the pool's short critical section) or allocate
/// unless noted. If a pqxx::broken_connection escapes while you use it, call mark_broken() (or let
/// lakh::pg::retrier do it); a closed connection is detected on return anyway.
class [[nodiscard]] pooled_connection {
public:
  /// An empty lease with status `s` (default: closed).
  explicit pooled_connection(lakh::status s = lakh::status::closed) noexcept : status_(s) {}

  /// Takes over `o`'s lease; `o` becomes empty (status closed).
  pooled_connection(pooled_connection &&o) noexcept
      : state_(std::move(o.state_)), conn_(std::move(o.conn_)), status_(o.status_),
        broken_(o.broken_) {
    o.status_ = lakh::status::closed;
  }

  /// Returns this lease's connection (if any), then takes over `o`'s.
  pooled_connection &operator=(pooled_connection &&o) noexcept {
    if (this != &o) {
      release();
      state_ = std::move(o.state_);
      conn_ = std::move(o.conn_);
      status_ = o.status_;
      broken_ = o.broken_;
      o.status_ = lakh::status::closed;
    }
    return *this;
  }

  pooled_connection(const pooled_connection &) = delete;
  pooled_connection &operator=(const pooled_connection &) = delete;

  /// Returns the connection to its pool (closing it instead if broken or the pool is closed).
  ~pooled_connection() { release(); }

  /// True if this lease holds a connection.
  [[nodiscard]] explicit operator bool() const noexcept { return conn_ != nullptr; }

  /// ok while a connection is held; otherwise why acquire failed (timeout, cancelled,
  /// closed), or closed after release().
  [[nodiscard]] lakh::status status() const noexcept { return status_; }

  /// The connection.
  /// @throws lakh::usage_error if the lease is empty (the message gives its status).
  [[nodiscard]] pqxx::connection &get() const {
    if (conn_ == nullptr) {
      throw lakh::usage_error(
          std::string("lakh::pg::pooled_connection::get: no connection (acquire status: ") +
          std::string(lakh::to_string(status_)) + ")");
    }
    return *conn_;
  }
  /// Same as get(). @throws lakh::usage_error if the lease is empty.
  [[nodiscard]] pqxx::connection &operator*() const { return get(); }
  /// Same as &get(). @throws lakh::usage_error if the lease is empty.
  [[nodiscard]] pqxx::connection *operator->() const { return &get(); }

  /// Mark the connection unusable: it is closed and replaced instead of being reused.
  void mark_broken() noexcept { broken_ = true; }

  /// Whether mark_broken() was called.
  [[nodiscard]] bool marked_broken() const noexcept { return broken_; }

  /// Return the connection to the pool now; the lease becomes empty (status closed).
  /// Idempotent.
  void release() noexcept {
    if (state_ != nullptr) {
      auto st = std::move(state_);
      st->give_back(std::move(conn_), broken_);
    }
    conn_.reset();
    status_ = lakh::status::closed;
  }

private:
  friend class pool;
  pooled_connection(std::shared_ptr<detail::pool_state> st,
                    std::unique_ptr<pqxx::connection> c) noexcept
      : state_(std::move(st)), conn_(std::move(c)), status_(lakh::status::ok) {}

  std::shared_ptr<detail::pool_state> state_;
  std::unique_ptr<pqxx::connection> conn_;
  lakh::status status_;
  bool broken_ = false;
};

/// A bounded, lazily filled pool of PostgreSQL connections.
///
/// Every member but the destructor may be called concurrently; members never block (beyond
/// a short critical section) or allocate unless noted. Fairness: waiters are served in
/// FIFO order by the semaphore. Leases may outlive the pool object: they keep its state
/// alive and close their connection on return.
class pool {
  using steady = std::chrono::steady_clock;

public:
  /// A pool as described by `opts`. Opens no connection yet.
  /// @throws std::invalid_argument if opts.max_size is 0 or above max_pool_size.
  explicit pool(pool_options opts) : state_(make_state(std::move(opts))) {}

  /// A pool of up to `max_size` connections to `url`, validation::socket.
  /// @throws std::invalid_argument if max_size is 0 or above max_pool_size.
  pool(std::string url, std::size_t max_size)
      : pool(pool_options{std::move(url), max_size, validation::socket, {}, {}, {}}) {}

  pool(const pool &) = delete;
  pool &operator=(const pool &) = delete;

  /// close(); leases still out close their connections when returned.
  /// Thread-safety: no other call on this object may run concurrently. Blocks: while idle
  /// connections are closed. Allocates: never.
  ~pool() { close(); }

  /// Lease a connection, waiting as long as it takes for one to become free.
  /// Returns a lease with status ok, or an empty one with status cancelled (stop requested)
  /// or closed (the pool is or became closed).
  /// Blocks: until a connection is free, stop is requested or the pool
  /// is closed; then possibly while a new connection is opened.
  /// @throws lakh::pg::connect_error if a new connection cannot be opened (the permit is
  ///         given back), or whatever pool_options::on_connect throws.
  /// Allocates: may.
  [[nodiscard]] pooled_connection acquire(std::stop_token st = {}) {
    return acquire_impl(std::nullopt, std::move(st));
  }

  /// Like acquire(), but gives up with status timeout after `timeout`.
  /// Blocks: until a connection is free, the timeout passes, stop is requested
  /// or the pool is closed (then possibly while a new connection is opened).
  /// @throws lakh::pg::connect_error as acquire(). Allocates: may.
  template <class Rep, class Period>
  [[nodiscard]] pooled_connection acquire_for(std::chrono::duration<Rep, Period> timeout,
                                              std::stop_token st = {}) {
    // Saturate: a timeout of a century or more means "no deadline" (and cannot overflow).
    if (timeout >= std::chrono::hours(24 * 365 * 100)) {
      return acquire_impl(std::nullopt, std::move(st));
    }
    auto left = std::chrono::duration_cast<steady::duration>(timeout);
    return acquire_impl(steady::now() + std::max(left, steady::duration::zero()), std::move(st));
  }

  /// Like acquire(), but gives up with status timeout at `deadline` (any clock).
  /// Blocks: until a connection is free, the deadline passes, stop is
  /// requested or the pool is closed (then possibly while a new connection is opened).
  /// @throws lakh::pg::connect_error as acquire(). Allocates: may.
  template <class Clock, class Duration>
  [[nodiscard]] pooled_connection acquire_until(std::chrono::time_point<Clock, Duration> deadline,
                                                std::stop_token st = {}) {
    auto left = deadline - Clock::now();
    return acquire_for(left, std::move(st));
  }

  /// Lease a connection as the helpers do: acquire_for(pool_options::acquire_timeout) when
  /// it is set, acquire() otherwise.
  /// Blocks: as acquire_for or acquire.
  /// @throws lakh::pg::connect_error as acquire(). Allocates: may.
  [[nodiscard]] pooled_connection acquire_default(std::stop_token st = {}) {
    if (const auto &t = state_->opts.acquire_timeout) {
      return acquire_for(*t, std::move(st));
    }
    return acquire(std::move(st));
  }

  /// acquire_default(), but giving up at `deadline` (any clock; e.g. a call's deadline) when
  /// that comes before pool_options::acquire_timeout does: status timeout either way.
  /// Blocks: as acquire_for. @throws lakh::pg::connect_error as acquire(). Allocates: may.
  template <class Clock, class Duration>
  [[nodiscard]] pooled_connection
  acquire_default_until(std::chrono::time_point<Clock, Duration> deadline,
                        std::stop_token st = {}) {
    const auto left = deadline - Clock::now();
    if (const auto &t = state_->opts.acquire_timeout; t && *t < left) {
      return acquire_for(*t, std::move(st));
    }
    return acquire_for(left, std::move(st));
  }

  /// Lease a connection only if one is free now: status empty when all max_size are leased,
  /// closed if the pool is closed. May still open a new connection.
  /// Blocks: never waits for a lease; may open a connection.
  /// @throws lakh::pg::connect_error as acquire(). Allocates: may.
  [[nodiscard]] pooled_connection try_acquire() {
    return acquire_impl(steady::time_point::min(), {});
  }

  /// A new connection made as the pool makes its own (the factory or the URL, then
  /// on_connect), but not counted by the pool and owned by the caller: for a session that
  /// lives as long as a component (LISTEN, a heartbeat), which must not take one of the
  /// pool's connections from the work it bounds.
  /// Blocks: while the connection opens.
  /// @throws lakh::pg::connect_error, or whatever on_connect throws. Allocates: may.
  [[nodiscard]] std::unique_ptr<pqxx::connection> connect_dedicated() const {
    return open_connection(state_->opts, nullptr);
  }

  /// Close the pool: idle connections are closed now, leased ones when returned; waiting and
  /// later acquires return status closed. Idempotent.
  /// Blocks: while idle connections are closed. Allocates: never.
  void close() noexcept {
    std::vector<std::unique_ptr<pqxx::connection>> idle;
    {
      std::lock_guard lock(state_->m);
      if (state_->closed) {
        return;
      }
      state_->closed = true;
      idle.swap(state_->idle);
      state_->open -= idle.size();
    }
    state_->close_source.request_stop();
    idle.clear();
  }

  /// Whether close() was called.
  [[nodiscard]] bool closed() const noexcept {
    std::lock_guard lock(state_->m);
    return state_->closed;
  }

  /// The bound on open connections.
  [[nodiscard]] std::size_t max_size() const noexcept { return state_->opts.max_size; }

  /// The connection string the pool opens (password included, if it holds one); empty when a
  /// factory makes the connections. lakh::pg::wal_relay opens its replication connection with it.
  [[nodiscard]] const std::string &url() const noexcept { return state_->opts.url; }

  /// "host:port/dbname" of the pool's URL (never the password); "(factory)" when a factory
  /// makes the connections.
  [[nodiscard]] std::string target() const {
    return state_->opts.factory ? std::string("(factory)") : describe_target(state_->opts.url);
  }

  /// The counters, read now.
  [[nodiscard]] pool_stats stats() const noexcept {
    pool_stats s;
    auto &st = *state_;
    {
      std::lock_guard lock(st.m);
      s.size = st.open;
      s.idle = st.idle.size();
      s.in_use = st.in_use;
      s.max_in_use = st.max_in_use;
    }
    s.max_size = st.opts.max_size;
    s.acquired = st.acquired.load(std::memory_order_relaxed);
    s.created = st.created.load(std::memory_order_relaxed);
    s.replaced = st.replaced.load(std::memory_order_relaxed);
    s.waits = st.waits.load(std::memory_order_relaxed);
    s.timeouts = st.timeouts.load(std::memory_order_relaxed);
    s.cancellations = st.cancellations.load(std::memory_order_relaxed);
    s.connect_failures = st.connect_failures.load(std::memory_order_relaxed);
    return s;
  }

private:
  static std::shared_ptr<detail::pool_state> make_state(pool_options opts) {
    if (opts.max_size == 0 || opts.max_size > max_pool_size) {
      throw std::invalid_argument("lakh::pg::pool: max_size (" + std::to_string(opts.max_size) +
                                  ") must be in 1.." + std::to_string(max_pool_size));
    }
    return std::make_shared<detail::pool_state>(std::move(opts));
  }

  // deadline: nullopt = wait forever; time_point::min() = do not wait.
  pooled_connection acquire_impl(std::optional<steady::time_point> deadline, std::stop_token st) {
    auto &s = *state_;
    {
      std::lock_guard lock(s.m);
      if (s.closed) {
        return pooled_connection(lakh::status::closed);
      }
    }
    if (st.stop_requested()) {
      s.cancellations.fetch_add(1, std::memory_order_relaxed);
      return pooled_connection(lakh::status::cancelled);
    }
    if (!s.permits.try_acquire(1)) {
      lakh::status got = wait_for_permit(deadline, st);
      if (got != lakh::status::ok) {
        return pooled_connection(got);
      }
    }
    // Holding a permit: take an idle connection or the right to open one.
    std::unique_ptr<pqxx::connection> c;
    {
      std::lock_guard lock(s.m);
      if (s.closed) {
        s.permits.release(1);
        return pooled_connection(lakh::status::closed);
      }
      ++s.in_use;
      s.max_in_use = std::max(s.max_in_use, s.in_use);
      if (!s.idle.empty()) {
        c = std::move(s.idle.back());
        s.idle.pop_back();
      } else {
        ++s.open; // reserved for the connection opened below
      }
    }
    pooled_connection lease(state_, nullptr);
    if (c != nullptr && !usable(*c)) {
      s.replaced.fetch_add(1, std::memory_order_relaxed);
      c.reset(); // the slot stays counted in `open` for its replacement
    }
    if (c == nullptr) {
      try {
        c = open_connection(s.opts, &s.created);
      } catch (...) {
        s.connect_failures.fetch_add(1, std::memory_order_relaxed);
        {
          std::lock_guard lock(s.m);
          --s.open;
        }
        // lease (conn_ == nullptr) gives the permit and the in_use slot back
        throw;
      }
    }
    lease.conn_ = std::move(c);
    s.acquired.fetch_add(1, std::memory_order_relaxed);
    return lease;
  }

  /// A connection by the factory or the URL, counted in `created` (when given) once open,
  /// then on_connect. @throws connect_error, std::logic_error for a null from the factory,
  /// whatever on_connect throws.
  static std::unique_ptr<pqxx::connection> open_connection(const pool_options &o,
                                                           std::atomic<std::uint64_t> *created) {
    auto c = o.factory ? o.factory() : connect(o.url);
    if (c == nullptr) {
      throw std::logic_error("lakh::pg::pool: the connection factory returned null");
    }
    if (created != nullptr) {
      created->fetch_add(1, std::memory_order_relaxed);
    }
    if (o.on_connect) {
      o.on_connect(*c);
    }
    return c;
  }

  bool usable(pqxx::connection &c) const noexcept {
    switch (state_->opts.validate) {
    case validation::none:
      return c.is_open();
    case validation::socket:
      return detail::idle_connection_alive(c);
    case validation::query:
      return detail::idle_connection_alive(c) && detail::ping(c);
    }
    return false;
  }

  lakh::status wait_for_permit(std::optional<steady::time_point> deadline, std::stop_token &st) {
    auto &s = *state_;
    if (deadline && *deadline == steady::time_point::min()) {
      return lakh::status::empty; // try_acquire: no waiting
    }
    s.waits.fetch_add(1, std::memory_order_relaxed);
    // Wake on the caller's stop token OR on close().
    std::stop_source local;
    std::stop_callback on_user(st, [&local] { local.request_stop(); });
    std::stop_callback on_close(s.close_source.get_token(), [&local] { local.request_stop(); });
    lakh::status got;
    if (deadline) {
      auto left = *deadline - steady::now();
      got = left <= steady::duration::zero()
                ? (s.permits.try_acquire(1) ? lakh::status::ok : lakh::status::timeout)
                : s.permits.try_acquire_for(1, left, local.get_token());
    } else {
      got = s.permits.acquire(1, local.get_token());
    }
    if (got == lakh::status::ok) {
      return got;
    }
    if (s.close_source.stop_requested()) {
      return lakh::status::closed;
    }
    if (got == lakh::status::timeout) {
      s.timeouts.fetch_add(1, std::memory_order_relaxed);
    } else {
      s.cancellations.fetch_add(1, std::memory_order_relaxed);
    }
    return got;
  }

  std::shared_ptr<detail::pool_state> state_;
};

/// f(*lease) for a lease of `p` just acquired (with_connection's body, for callers that lease
/// with another deadline): a lease that came empty throws acquire_error naming `p`'s target;
/// a connection f leaves broken or closed is marked broken, so the pool never lends it again.
template <class F>
auto run_on_lease(const pool &p, pooled_connection lease, F &f)
    -> std::invoke_result_t<F &, pqxx::connection &> {
  if (!lease) {
    throw acquire_error(lease.status(), p.target());
  }
  try {
    return f(*lease);
  } catch (const pqxx::broken_connection &) {
    lease.mark_broken();
    throw;
  } catch (...) {
    if (!lease->is_open()) {
      lease.mark_broken();
    }
    throw;
  }
}

/// Calls `f(connection)` on a connection leased from `p` and returns what f returns; the
/// lease goes back to the pool afterwards, and a connection found lost (a
/// pqxx::broken_connection, or closed after f threw) is replaced instead of reused. f runs no
/// transaction of its own unless it opens one (pqxx::work w(c); ... w.commit()).
/// Blocks: while waiting for a connection (up to
/// pool_options::acquire_timeout when set, or until `st` is stopped) and while f runs.
/// @throws acquire_error when no connection could be leased (pool closed, the acquire
/// timeout passed, or stop requested), and whatever f throws. Allocates: may.
template <class F>
auto with_connection(pool &p, F &&f, std::stop_token st = {})
    -> std::invoke_result_t<F &, pqxx::connection &> {
  return run_on_lease(p, p.acquire_default(std::move(st)), f);
}

} // namespace lakh::pg
