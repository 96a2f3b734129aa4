#pragma once
// lakh/pg/advisory_lock.hpp: PostgreSQL advisory locks as C++ lockables in lakh's lock order:
// advisory_key (a 64-bit key or a pair of 32-bit keys, two separate key spaces, and stable
// FNV-1a keys from names), xact_advisory_lock (released by the server at COMMIT/ROLLBACK),
// session_advisory_lock (held by the connection until unlocked) and lock_all_advisory for
// several keys in ONE order. Both lockables carry a lakh::lock_order::key and call the
// checker's hooks, so lakh::lock_all(mutex, pg_lock) orders a ranked mutex and an advisory
// lock together and the checker sees both. A session lock whose release fails closes its
// connection (a pool never lends out a session that still holds locks). A lockable belongs to the
// thread that owns its connection (libpqxx connections are single-threaded). Guide: docs/pg.md
// (API: lakh/pg/advisory_lock.hpp).
//
// One header over ~500 lines because it is one concept, the advisory lock, in its two
// scopes and its two forms (one key, several keys), which share the key and its order.
#include <lakh/error.hpp>
#include <lakh/lock_order.hpp>
#include <lakh/pg/detail/pqxx_compat.hpp>

#include <algorithm>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace lakh::pg {

/// Longest name advisory_key::hashed accepts, in bytes.
inline constexpr std::size_t max_advisory_name_size = 1024;

/// The key of a PostgreSQL advisory lock: one int64 (pg_advisory_lock(bigint)) or a pair of
/// int32 (pg_advisory_lock(int, int)). The two forms are different locks even for equal
/// bits. Ordered (<=>) by ordinal(), then the int64 key before the pair of equal ordinal:
/// the order in which lakh takes several keys, lock_all_advisory and lakh::lock_all alike
/// (both forms interleave). A value type: members are pure (thread-safe, never block, never
/// allocate) unless noted.
class advisory_key {
public:
  /// The 64-bit key `k`.
  constexpr advisory_key(std::int64_t k) noexcept : pair_(false), value_(k) {} // NOLINT: implicit

  /// The two-key form (ns, id), e.g. (table oid or a namespace constant, row id).
  constexpr advisory_key(std::int32_t ns, std::int32_t id) noexcept
      : pair_(true), value_(static_cast<std::int64_t>(
                         (static_cast<std::uint64_t>(static_cast<std::uint32_t>(ns)) << 32U) |
                         static_cast<std::uint32_t>(id))) {}

  /// FNV-1a 64 of `name`'s bytes (offset basis 14695981039346656037, prime 1099511628211),
  /// reinterpreted as a two's complement int64. Stable across processes, platforms and lakh
  /// versions (part of the API); NOT PostgreSQL's hashtext(), which is internal and has
  /// changed between server versions. Distinct names may collide: a collision only
  /// serializes two unrelated holders.
  /// Allocates: never (except for the exception).
  /// @throws std::invalid_argument if name is empty or longer than max_advisory_name_size.
  [[nodiscard]] static advisory_key hashed(std::string_view name) {
    return advisory_key(static_cast<std::int64_t>(fnv1a64(check_name("hashed", name))));
  }

  /// The pair (ns, fold32(FNV-1a 64 of name)): a hashed name within namespace `ns`. Only 32
  /// bits of the name survive: among n names of one namespace some two collide with
  /// probability about 1 - exp(-n^2 / 2^33), one in two at about 77,000 names; where the
  /// namespace can be part of a 64-bit key, hashed64(ns, name) keeps 64 bits.
  /// @throws std::invalid_argument if name is empty or longer than max_advisory_name_size.
  [[nodiscard]] static advisory_key hashed(std::int32_t ns, std::string_view name) {
    auto h = fnv1a64(check_name("hashed", name));
    return {ns, static_cast<std::int32_t>(static_cast<std::uint32_t>(h ^ (h >> 32U)))};
  }

  /// The int64 key FNV-1a 64 of ns's four bytes (big-endian) followed by name's bytes: a
  /// hashed name within namespace `ns` that keeps 64 bits (one in two for a collision at
  /// about 5 billion names), in the int64 key space shared with hashed(name) and plain int64
  /// keys. Stable like hashed(name).
  /// @throws std::invalid_argument if name is empty or longer than max_advisory_name_size.
  [[nodiscard]] static advisory_key hashed64(std::int32_t ns, std::string_view name) {
    const auto n = static_cast<std::uint32_t>(ns);
    const char prefix[4] = {static_cast<char>(n >> 24U), static_cast<char>(n >> 16U),
                            static_cast<char>(n >> 8U), static_cast<char>(n)};
    return advisory_key(static_cast<std::int64_t>(
        fnv1a64(check_name("hashed64", name), fnv1a64(std::string_view(prefix, 4)))));
  }

  /// FNV-1a 64 as used by hashed(), continuing from `h` (default: the offset basis).
  [[nodiscard]] static constexpr std::uint64_t
  fnv1a64(std::string_view s, std::uint64_t h = 14695981039346656037ULL) noexcept {
    for (char c : s) {
      h ^= static_cast<std::uint8_t>(c);
      h *= 1099511628211ULL;
    }
    return h;
  }

  /// True for the two-key form.
  [[nodiscard]] constexpr bool is_pair() const noexcept { return pair_; }
  /// The 64-bit key (for a pair: ns in the high half, id in the low half).
  [[nodiscard]] constexpr std::int64_t value() const noexcept { return value_; }
  /// The pair's namespace (high half). Meaningful for pairs.
  [[nodiscard]] constexpr std::int32_t ns() const noexcept {
    return static_cast<std::int32_t>(
        static_cast<std::uint32_t>(static_cast<std::uint64_t>(value_) >> 32U));
  }
  /// The pair's id (low half). Meaningful for pairs.
  [[nodiscard]] constexpr std::int32_t id() const noexcept {
    return static_cast<std::int32_t>(
        static_cast<std::uint32_t>(static_cast<std::uint64_t>(value_)));
  }

  /// The SQL arguments: "42" or "7, 42".
  /// Allocates: may.
  [[nodiscard]] std::string sql_args() const {
    return pair_ ? std::to_string(ns()) + ", " + std::to_string(id()) : std::to_string(value_);
  }

  /// Human-readable: "42" or "(7, 42)". Allocates: may.
  [[nodiscard]] std::string to_string() const {
    return pair_ ? "(" + sql_args() + ")" : sql_args();
  }

  /// The key's place in lakh's order: an order-preserving unsigned image within each form
  /// (sign bits flipped; for a pair, in each half), the two forms sharing the range. An
  /// int64 key and a pair may have the same ordinal; the form breaks the tie (int64 first).
  /// The lock-order instance (the form its subinstance), so that lakh::lock_all orders
  /// advisory locks as lakh::pg does.
  [[nodiscard]] constexpr std::uint64_t ordinal() const noexcept {
    if (pair_) {
      return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(ns()) ^ 0x80000000U) << 32U) |
             (static_cast<std::uint32_t>(id()) ^ 0x80000000U);
    }
    return static_cast<std::uint64_t>(value_) ^ (1ULL << 63U);
  }

  friend constexpr bool operator==(const advisory_key &, const advisory_key &) = default;
  friend constexpr std::strong_ordering operator<=>(const advisory_key &a,
                                                    const advisory_key &b) noexcept {
    if (auto c = a.ordinal() <=> b.ordinal(); c != 0) {
      return c;
    }
    return a.pair_ <=> b.pair_;
  }

  /// The lock-order key of a lock on this key in class `cls` (see ordinal()).
  [[nodiscard]] lock_order::key lock_key(const lock_order::lock_class &cls) const noexcept {
    lock_order::key k(cls, ordinal());
    k.subinstance = pair_ ? 1 : 0;
    return k;
  }

private:
  static std::string_view check_name(const char *fn, std::string_view name) {
    if (name.empty()) {
      throw std::invalid_argument(std::string("lakh::pg::advisory_key::") + fn + ": name is empty");
    }
    if (name.size() > max_advisory_name_size) {
      throw std::invalid_argument(std::string("lakh::pg::advisory_key::") + fn + ": name size (" +
                                  std::to_string(name.size()) + " bytes) exceeds " +
                                  std::to_string(max_advisory_name_size));
    }
    return name;
  }

  bool pair_;
  std::int64_t value_;
};

/// The lock class of advisory locks that are given none: rank 100, "lakh::pg::advisory_lock".
/// Thread-safety: safe. Blocks: briefly, the first time (interning). Allocates: the first time.
[[nodiscard]] inline const lock_order::lock_class &default_advisory_class() {
  static const lock_order::lock_class cls(100, "lakh::pg::advisory_lock");
  return cls;
}

namespace detail {

inline bool exec_bool(pqxx::transaction_base &tx, const std::string &sql) {
  return tx.exec(sql)[0][0].as<bool>();
}

inline std::vector<advisory_key> sorted_unique(std::vector<advisory_key> keys) {
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

/// One round trip that takes every key in order: "SELECT f(k1); SELECT f(k2); ..." runs as
/// one simple-query message whose statements execute in sequence.
inline std::string batch(const char *fn, const std::vector<advisory_key> &keys) {
  std::string sql;
  for (const auto &k : keys) {
    sql += "SELECT ";
    sql += fn;
    sql += "(" + k.sql_args() + ");";
  }
  return sql;
}

/// One statement for many keys already in the order to take them: a function scan over
/// array literals, which PostgreSQL reads (and so locks) in array order, each row an int64
/// key or a pair. Thousands of keys cost one parse instead of one per key.
inline std::string lock_in_order_sql(const char *fn, const std::vector<advisory_key> &keys) {
  std::string pair;
  std::string single;
  std::string ns;
  std::string ids;
  for (const auto &k : keys) {
    const char *sep = pair.empty() ? "" : ",";
    pair += sep + std::string(k.is_pair() ? "t" : "f");
    single += sep + std::to_string(k.is_pair() ? 0 : k.value());
    ns += sep + std::to_string(k.is_pair() ? k.ns() : 0);
    ids += sep + std::to_string(k.is_pair() ? k.id() : 0);
  }
  return std::string("SELECT count(CASE WHEN p THEN ") + fn + "(a, b) ELSE " + fn +
         "(k) END) FROM unnest('{" + pair + "}'::bool[], '{" + single + "}'::bigint[], '{" + ns +
         "}'::int[], '{" + ids + "}'::int[]) AS t(p, k, a, b)";
}

/// Ends the session of `conn` after a failed release: the server drops every lock it holds,
/// and a pool (which checks is_open()) replaces the connection instead of lending it out
/// with locks nobody will release.
inline void close_after_failed_release(pqxx::connection &conn) noexcept {
  close_connection(conn);
}

} // namespace detail

/// A transaction-scoped advisory lock on `key` in transaction `tx`: lock() runs
/// pg_advisory_xact_lock, try_lock() pg_try_advisory_xact_lock. The SERVER releases it at
/// commit or rollback; unlock() cannot release it early and only ends lakh's lock-order
/// tracking (call it, or let a guard call it, when you no longer care about ordering, e.g.
/// just before commit). Re-locking a key this transaction holds succeeds (PostgreSQL counts).
///
/// Memory ordering: the server's: a lock granted after another transaction's commit sees that
/// transaction's writes (read committed) like any row lock. Fairness: PostgreSQL's lock queue
/// (FIFO with deadlock detection).
/// Used from the transaction's thread; lock_key() and key() from any. Members never block
/// or allocate unless noted.
class xact_advisory_lock {
public:
  xact_advisory_lock(pqxx::transaction_base &tx, advisory_key key,
                     const lock_order::lock_class &cls = default_advisory_class()) noexcept
      : tx_(&tx), key_(key), cls_(cls) {}

  xact_advisory_lock(const xact_advisory_lock &) = delete;
  xact_advisory_lock &operator=(const xact_advisory_lock &) = delete;
  /// Ends lock-order tracking if still tracked (the server lock lives until the transaction
  /// ends).
  ~xact_advisory_lock() {
    if (tracked_) {
      lock_order::on_release(this);
    }
  }

  /// Wait for the lock (pg_advisory_xact_lock).
  /// Blocks: until granted, or the server ends the
  /// wait (deadlock 40P01, lock_timeout 55P03, statement_timeout 57014).
  /// @throws pqxx::sql_error / pqxx::deadlock_detected / pqxx::broken_connection from the
  ///         server; lakh::lock_order_error in throw_error mode (not locked).
  /// Allocates: may.
  void lock() {
    lock_order::on_acquire(lock_key(), this);
    try {
      tx_->exec("SELECT pg_advisory_xact_lock(" + key_.sql_args() + ")");
    } catch (...) {
      lock_order::on_release(this);
      throw;
    }
    tracked_ = true;
  }

  /// Take the lock if it is free now (pg_try_advisory_xact_lock): true if taken.
  /// Blocks: one round trip, never on the lock.
  /// @throws pqxx errors from the server. Allocates: may.
  [[nodiscard]] bool try_lock() {
    if (!detail::exec_bool(*tx_, "SELECT pg_try_advisory_xact_lock(" + key_.sql_args() + ")")) {
      return false;
    }
    lock_order::on_try_acquire(lock_key(), this);
    tracked_ = true;
    return true;
  }

  /// End lakh's lock-order tracking. The server keeps the lock until the transaction ends.
  void unlock() noexcept {
    if (tracked_) {
      lock_order::on_release(this);
      tracked_ = false;
    }
  }

  /// The lock-order key: this lock's class and key().lock_key(class).
  [[nodiscard]] lock_order::key lock_key() const noexcept { return key_.lock_key(cls_); }
  /// The advisory key.
  [[nodiscard]] advisory_key key() const noexcept { return key_; }

private:
  pqxx::transaction_base *tx_;
  advisory_key key_;
  lock_order::lock_class cls_;
  bool tracked_ = false;
};

/// A session-scoped advisory lock on `key` held by connection `conn`: lock() runs
/// pg_advisory_lock, try_lock() pg_try_advisory_lock, unlock() pg_advisory_unlock; the
/// destructor unlocks if still held (RAII). The lock survives commits and rollbacks.
/// Each call runs in its own pqxx::nontransaction, so no transaction may be open on `conn`
/// at that moment (libpqxx allows one at a time); lock first, then open your transaction.
///
/// Memory ordering: the server's (an unlock happens-before the grant to the next waiter).
/// Fairness: PostgreSQL's lock queue.
/// Used from the connection's thread; lock_key() and key() from any. Members never block
/// or allocate unless noted.
class session_advisory_lock {
public:
  session_advisory_lock(pqxx::connection &conn, advisory_key key,
                        const lock_order::lock_class &cls = default_advisory_class()) noexcept
      : conn_(&conn), key_(key), cls_(cls) {}

  session_advisory_lock(const session_advisory_lock &) = delete;
  session_advisory_lock &operator=(const session_advisory_lock &) = delete;

  /// Unlocks if held; errors are not reported (unlock() closed the connection, which
  /// released the lock).
  /// Blocks: one round trip if held. Allocates: may.
  ~session_advisory_lock() {
    if (held_) {
      try {
        unlock();
      } catch (...) {
        lock_order::on_release(this);
      }
    }
  }

  /// Wait for the lock (pg_advisory_lock).
  /// Blocks: until granted or the server ends the
  /// wait (40P01, 55P03, 57014).
  /// @throws lakh::usage_error if this object already holds it; pqxx errors from the
  ///         server; lakh::lock_order_error in throw_error mode (not locked).
  /// Allocates: may.
  void lock() {
    if (held_) {
      throw usage_error("lakh::pg::session_advisory_lock::lock: key " + key_.to_string() +
                        " is already held by this object");
    }
    lock_order::on_acquire(lock_key(), this);
    try {
      pqxx::nontransaction tx(*conn_);
      tx.exec("SELECT pg_advisory_lock(" + key_.sql_args() + ")");
    } catch (...) {
      lock_order::on_release(this);
      throw;
    }
    held_ = true;
  }

  /// Take the lock if it is free now (pg_try_advisory_lock): true if taken.
  /// Blocks: one round trip, never on the lock.
  /// @throws lakh::usage_error if this object already holds it; pqxx errors.
  /// Allocates: may.
  [[nodiscard]] bool try_lock() {
    if (held_) {
      throw usage_error("lakh::pg::session_advisory_lock::try_lock: key " + key_.to_string() +
                        " is already held by this object");
    }
    pqxx::nontransaction tx(*conn_);
    if (!detail::exec_bool(tx, "SELECT pg_try_advisory_lock(" + key_.sql_args() + ")")) {
      return false;
    }
    lock_order::on_try_acquire(lock_key(), this);
    held_ = true;
    return true;
  }

  /// Release the lock (pg_advisory_unlock). If the statement fails (a cancel, a lost
  /// connection, a transaction open on the connection), the connection is closed: the server
  /// releases the lock with the session, and a pool replaces the connection.
  /// Blocks: one round trip.
  /// @throws lakh::usage_error if this object does not hold it, or if the server says the
  ///         session did not hold it; pqxx errors (the connection is then closed). The object
  ///         no longer holds it afterwards in every case.
  /// Allocates: may.
  void unlock() {
    if (!held_) {
      throw usage_error("lakh::pg::session_advisory_lock::unlock: key " + key_.to_string() +
                        " is not held by this object");
    }
    held_ = false;
    lock_order::on_release(this);
    bool was_held = false;
    try {
      pqxx::nontransaction tx(*conn_);
      was_held = detail::exec_bool(tx, "SELECT pg_advisory_unlock(" + key_.sql_args() + ")");
    } catch (...) {
      detail::close_after_failed_release(*conn_);
      throw;
    }
    if (!was_held) {
      throw usage_error("lakh::pg::session_advisory_lock::unlock: the server did not hold key " +
                        key_.to_string() + " for this session");
    }
  }

  /// Whether this object holds the lock.
  [[nodiscard]] bool owns_lock() const noexcept { return held_; }

  /// See xact_advisory_lock::lock_key.
  [[nodiscard]] lock_order::key lock_key() const noexcept { return key_.lock_key(cls_); }
  /// The advisory key.
  [[nodiscard]] advisory_key key() const noexcept { return key_; }

private:
  pqxx::connection *conn_;
  advisory_key key_;
  lock_order::lock_class cls_;
  bool held_ = false;
};

/// Take transaction-scoped locks on every key, in sorted order, duplicates once, in one
/// round trip; the server releases them at commit/rollback. Two transactions calling this
/// with overlapping sets cannot deadlock on these locks.
/// Blocks: until all are granted (or the server
/// ends the wait: 40P01 if the caller mixes orders elsewhere, 55P03, 57014).
/// @throws pqxx errors from the server. Allocates: may.
inline void lock_all_advisory(pqxx::transaction_base &tx, std::vector<advisory_key> keys) {
  keys = detail::sorted_unique(std::move(keys));
  if (!keys.empty()) {
    tx.exec(detail::lock_in_order_sql("pg_advisory_xact_lock", keys));
  }
}

/// lock_all_advisory(tx, {keys...}). @throws as above.
template <class... Keys>
requires(sizeof...(Keys) >= 1 && (std::is_convertible_v<Keys, advisory_key> &&
                                  ...)) void lock_all_advisory(pqxx::transaction_base &tx,
                                                               const Keys &...keys) {
  lock_all_advisory(tx, std::vector<advisory_key>{advisory_key(keys)...});
}

/// Try to take transaction-scoped locks on every key, all or nothing: in a savepoint,
/// pg_try_advisory_xact_lock in sorted order; if one is taken by someone else the savepoint
/// is rolled back, which releases the ones taken. True if all were taken.
/// Blocks: one or two round trips, never on a lock.
/// @throws pqxx errors from the server. Allocates: may.
[[nodiscard]] inline bool try_lock_all_advisory(pqxx::dbtransaction &tx,
                                                std::vector<advisory_key> keys) {
  keys = detail::sorted_unique(std::move(keys));
  if (keys.empty()) {
    return true;
  }
  pqxx::subtransaction sub(tx, "lakh_try_lock_all_advisory");
  for (const auto &k : keys) {
    if (!detail::exec_bool(sub, "SELECT pg_try_advisory_xact_lock(" + k.sql_args() + ")")) {
      sub.abort();
      return false;
    }
  }
  sub.commit();
  return true;
}

/// Session-scoped locks on several keys, taken in sorted order and released (in reverse)
/// when the guard is destroyed. Empty (owns_lock() false) after a failed try.
/// Move-only. Use from the connection's thread, with no transaction open on it while
/// locking and unlocking.
class [[nodiscard]] session_advisory_locks {
public:
  /// An empty guard. Thread-safety: n/a. Blocks: never. Allocates: never.
  session_advisory_locks() noexcept = default;

  /// Adopt session locks on `held` that `conn` already holds (unlocked in reverse order).
  /// Thread-safety: n/a. Blocks: never. Allocates: never.
  session_advisory_locks(pqxx::connection &conn, std::vector<advisory_key> held,
                         std::adopt_lock_t) noexcept
      : conn_(&conn), keys_(std::move(held)) {}
  /// Takes over `o`'s locks; `o` becomes empty.
  /// Thread-safety: n/a. Blocks: never. Allocates: never.
  session_advisory_locks(session_advisory_locks &&o) noexcept
      : conn_(std::exchange(o.conn_, nullptr)), keys_(std::move(o.keys_)) {}
  /// Unlocks this guard's keys (errors not reported: see unlock()), then takes over `o`'s.
  /// Thread-safety: the owner. Blocks: one round trip if this guard held keys.
  /// Allocates: may.
  session_advisory_locks &operator=(session_advisory_locks &&o) noexcept {
    if (this != &o) {
      release_noexcept();
      conn_ = std::exchange(o.conn_, nullptr);
      keys_ = std::move(o.keys_);
    }
    return *this;
  }
  session_advisory_locks(const session_advisory_locks &) = delete;
  session_advisory_locks &operator=(const session_advisory_locks &) = delete;

  /// Unlocks every key (errors not reported: see unlock()).
  /// Thread-safety: the owner. Blocks: one round trip. Allocates: may.
  ~session_advisory_locks() { release_noexcept(); }

  /// Whether the guard holds its keys.
  [[nodiscard]] bool owns_lock() const noexcept { return conn_ != nullptr; }
  /// Same as owns_lock().
  [[nodiscard]] explicit operator bool() const noexcept { return owns_lock(); }
  /// The keys held, in acquisition order.
  [[nodiscard]] const std::vector<advisory_key> &keys() const noexcept { return keys_; }

  /// Unlock now, in reverse order, in one round trip; the guard becomes empty. Idempotent.
  /// If the statement fails, the connection is closed (the server releases the locks with
  /// the session, and a pool replaces the connection).
  /// Thread-safety: the owner. Blocks: one round trip.
  /// @throws pqxx errors (the guard is empty and the connection closed). Allocates: may.
  void unlock() {
    if (conn_ == nullptr) {
      return;
    }
    auto *c = std::exchange(conn_, nullptr);
    std::vector<advisory_key> rev(keys_.rbegin(), keys_.rend());
    keys_.clear();
    if (rev.empty()) {
      return;
    }
    try {
      pqxx::nontransaction tx(*c);
      tx.exec(detail::batch("pg_advisory_unlock", rev));
    } catch (...) {
      detail::close_after_failed_release(*c);
      throw;
    }
  }

private:
  void release_noexcept() noexcept {
    try {
      unlock();
    } catch (...) {
    }
  }

  pqxx::connection *conn_ = nullptr;
  std::vector<advisory_key> keys_;
};

namespace detail {

/// After a failure part way through taking `keys` in order: releases keys[0, taken), newest
/// first, or closes the connection if that fails (the caller reports its own error).
inline void give_back(pqxx::connection &conn, std::vector<advisory_key> keys, std::size_t taken) {
  keys.erase(keys.begin() + static_cast<std::ptrdiff_t>(taken), keys.end());
  try {
    session_advisory_locks(conn, std::move(keys), std::adopt_lock).unlock();
  } catch (...) { // the connection is closed
  }
}

} // namespace detail

/// Take session-scoped locks on every key, in sorted order, duplicates once (one statement
/// per key, so that a failure knows what it holds); the returned guard unlocks them. No transaction
/// may be open on `conn`. Blocks: until all are granted (or
/// the server ends the wait).
/// @throws pqxx errors from the server (locks taken before the error are released, or the
/// connection closed if that fails).
/// Allocates: may.
[[nodiscard]] inline session_advisory_locks lock_all_advisory(pqxx::connection &conn,
                                                              std::vector<advisory_key> keys) {
  keys = detail::sorted_unique(std::move(keys));
  std::size_t taken = 0;
  try {
    pqxx::nontransaction tx(conn);
    for (; taken < keys.size(); ++taken) {
      tx.exec("SELECT pg_advisory_lock(" + keys[taken].sql_args() + ")");
    }
  } catch (const pqxx::broken_connection &) {
    throw; // the session and its locks are gone
  } catch (...) {
    detail::give_back(conn, std::move(keys), taken); // the error that stopped us propagates
    throw;
  }
  return session_advisory_locks(conn, std::move(keys), std::adopt_lock);
}

/// Try to take session-scoped locks on every key, all or nothing (pg_try_advisory_lock in
/// sorted order; on a miss or an error, the ones taken are unlocked, or the connection is
/// closed if that fails). The guard is empty on failure.
/// Blocks: round trips, never on a lock.
/// @throws pqxx errors from the server. Allocates: may.
[[nodiscard]] inline session_advisory_locks try_lock_all_advisory(pqxx::connection &conn,
                                                                  std::vector<advisory_key> keys) {
  keys = detail::sorted_unique(std::move(keys));
  std::size_t taken = 0;
  try {
    pqxx::nontransaction tx(conn);
    while (taken < keys.size() &&
           detail::exec_bool(tx, "SELECT pg_try_advisory_lock(" + keys[taken].sql_args() + ")")) {
      ++taken;
    }
  } catch (...) {
    detail::give_back(conn, std::move(keys), taken); // the error that stopped us propagates
    throw;
  }
  if (taken < keys.size()) { // a miss: give back what was taken
    keys.erase(keys.begin() + static_cast<std::ptrdiff_t>(taken), keys.end());
    session_advisory_locks(conn, std::move(keys), std::adopt_lock).unlock();
    return session_advisory_locks();
  }
  return session_advisory_locks(conn, std::move(keys), std::adopt_lock);
}

} // namespace lakh::pg
