#pragma once
// lakh/idempotency.hpp: run an operation at most once per idempotency key, and replay its
// result to every retry of the same request.
//
// A client that retries a POST after a timeout cannot know whether the first attempt
// happened. With an Idempotency-Key header (Stripe; IETF draft-ietf-httpapi-idempotency-key-
// header) the server runs the first request and answers every later request with that key
// from a stored copy of the first response. lakh::idempotency_guard<Store> implements the
// protocol once; a store keeps the records: lakh::memory_idempotency_store (here: sharded
// in-process maps, for tests and single-process services), lakh::pg::idempotency_store
// (lakh/pg/idempotency_store.hpp: the result is committed in the SAME transaction as the
// business writes) and lakh::redis::idempotency_store (lakh/redis/idempotency_store.hpp:
// SET NX PX + a fenced Lua completion). All three have the same semantics:
//
//  1. Scope. A key belongs to a tenant: tenant A's key "k" and tenant B's key "k" are
//     different records, and B can never read A's stored response.
//  2. Binding. A record remembers the request fingerprint (lakh::fingerprint(method, path,
//     body): FNV-1a 64). The same key with another fingerprint is
//     idempotency_outcome::mismatch (HTTP 422), whether the first request finished or not.
//  3. First request runs. The caller that creates the record runs the operation
//     (idempotency_outcome::executed) and its response is stored.
//  4. Later duplicates replay. A request that finds a completed record gets the stored
//     status and body (idempotency_outcome::replayed) and the operation does NOT run.
//  5. Concurrent duplicates wait, boundedly. A request that finds the record in progress
//     polls (lakh::backoff, full jitter) for up to options.wait for the result; then it
//     reports idempotency_outcome::in_progress (HTTP 409; Stripe answers 409 at once).
//  6. Leases. An in-progress record carries a lock expiry (options.lease). A process that
//     crashes mid-run leaves the record in progress; once the lease has expired the next
//     request with the key takes it over and runs the operation. A lease must outlast the
//     slowest operation: the memory and Redis stores fence a completion with the owner's
//     token, so an owner whose lease was taken over gets idempotency_outcome::lease_lost
//     and cannot overwrite the new owner's record (the PostgreSQL store checks the token
//     under a row lock before the operation runs, so there it cannot happen mid-run).
//  7. Failures. A response the operation RETURNS is stored, whatever its status code
//     (a 4xx/5xx the operation chose to return is replayed, as Stripe replays 500s). An
//     operation that THROWS has produced no response: the guard releases the key (deletes
//     the in-progress record) and rethrows, so the client may retry at once. Why: a throw
//     means "no decision was made" (a lost database connection, a bug); storing it would
//     pin a transient failure to the key for 24 h, and with the PostgreSQL store the
//     business writes rolled back anyway, so a retry is exactly right. Operations that
//     must not be repeated after a partial external side effect should catch and RETURN a
//     response describing it.
//  8. Expiry. A completed record expires options.ttl (default 24 h) after it completed;
//     after that the key is new again.
//  9. Keys. 1..255 bytes of printable ASCII without space (0x21..0x7E); tenants 0..255
//     bytes of the same. Anything else throws std::invalid_argument naming the problem.
//
// Outcomes are values (idempotency_result), never exceptions; exceptions mean misuse
// (std::invalid_argument), a store failure (e.g. lakh::redis::redis_error) or the operation's own.
//
// Unlike a std::once_flag (one process, one flag, forever), a key here is data: it is shared
// by processes through the store, bound to a request, and expires.

#include <lakh/backoff.hpp>
#include <lakh/status.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lakh {

/// What happened to one guarded request.
enum class idempotency_outcome {
  executed,    ///< this call ran the operation; its response is stored (HTTP: the response)
  replayed,    ///< a stored response was returned; the operation did not run (the response)
  in_progress, ///< another call holds the key and did not finish within options.wait (409)
  mismatch,    ///< the key was used with a different request fingerprint (422)
  lease_lost,  ///< this call ran the operation but its lease expired and another caller took
               ///< the key over; the response was NOT stored (treat as 409 or log: the lease
               ///< is shorter than the operation)
};

/// The enumerator's name, e.g. "replayed". Thread-safety: pure. Blocks: never.
/// Allocates: never.
constexpr std::string_view to_string(idempotency_outcome o) noexcept {
  switch (o) {
  case idempotency_outcome::executed:
    return "executed";
  case idempotency_outcome::replayed:
    return "replayed";
  case idempotency_outcome::in_progress:
    return "in_progress";
  case idempotency_outcome::mismatch:
    return "mismatch";
  case idempotency_outcome::lease_lost:
    return "lease_lost";
  }
  return "unknown";
}

/// A response as stored and replayed: an HTTP-like status code and an opaque body.
struct stored_response {
  int status = 0;   ///< e.g. 201; any value the operation chooses
  std::string body; ///< opaque bytes (PostgreSQL store: bytea, so any bytes)

  friend bool operator==(const stored_response &, const stored_response &) = default;
};

/// The result of idempotency_guard::run.
struct idempotency_result {
  idempotency_outcome outcome = idempotency_outcome::in_progress;
  /// executed, replayed, lease_lost: the operation's response; otherwise empty.
  stored_response response;

  /// True for executed and replayed: `response` is the answer to send.
  [[nodiscard]] bool has_response() const noexcept {
    return outcome == idempotency_outcome::executed || outcome == idempotency_outcome::replayed;
  }
};

/// Settings shared by the guard and the stores.
struct idempotency_options {
  /// How long a completed record is kept (from completion). Default 24 h, as Stripe.
  std::chrono::milliseconds ttl{std::chrono::hours(24)};
  /// Lock expiry of an in-progress record: after it, a crashed run's key can be retried.
  /// Must exceed the slowest operation.
  std::chrono::milliseconds lease{std::chrono::seconds(30)};
  /// How long a duplicate waits for an in-progress record to complete before reporting
  /// in_progress. Zero: report at once.
  std::chrono::milliseconds wait{std::chrono::seconds(2)};
  /// Delay between polls while waiting (full jitter).
  lakh::backoff poll{std::chrono::milliseconds(1), std::chrono::milliseconds(50)};
};

/// Longest key accepted (bytes).
inline constexpr std::size_t max_idempotency_key_size = 255;
/// Longest tenant accepted (bytes).
inline constexpr std::size_t max_idempotency_tenant_size = 255;

namespace detail {

inline void check_token_chars(std::string_view what, std::string_view fn, std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x21 || c > 0x7E) {
      throw std::invalid_argument(
          std::string(fn) + ": " + std::string(what) + " has a forbidden byte 0x" +
          "0123456789abcdef"[c >> 4U] + "0123456789abcdef"[c & 0xFU] + " at position " +
          std::to_string(i) + " (allowed: printable ASCII 0x21..0x7E, no space)");
    }
  }
}

/// The 16 lower-case hex digits of `v`.
inline std::string to_hex16(std::uint64_t v) {
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i) {
    s[static_cast<std::size_t>(i)] = "0123456789abcdef"[v & 0xFU];
    v >>= 4U;
  }
  return s;
}

} // namespace detail

/// Check an idempotency key: 1..255 bytes, each in 0x21..0x7E.
/// Thread-safety: pure. Blocks: never.
/// @throws std::invalid_argument naming the problem ("... key is empty", "... key is 300
///         bytes (at most 255)", "... key has a forbidden byte 0x20 at position 3 ...").
/// Allocates: only for the exception.
inline void validate_idempotency_key(std::string_view key,
                                     std::string_view fn = "lakh::idempotency") {
  if (key.empty()) {
    throw std::invalid_argument(std::string(fn) + ": key is empty (1.." +
                                std::to_string(max_idempotency_key_size) + " bytes required)");
  }
  if (key.size() > max_idempotency_key_size) {
    throw std::invalid_argument(std::string(fn) + ": key is " + std::to_string(key.size()) +
                                " bytes (at most " + std::to_string(max_idempotency_key_size) +
                                ")");
  }
  detail::check_token_chars("key", fn, key);
}

/// Check a tenant: 0..255 bytes, each in 0x21..0x7E (empty = the single default tenant).
/// Thread-safety: pure. Blocks: never.
/// @throws std::invalid_argument naming the problem. Allocates: only for the exception.
inline void validate_idempotency_tenant(std::string_view tenant,
                                        std::string_view fn = "lakh::idempotency") {
  if (tenant.size() > max_idempotency_tenant_size) {
    throw std::invalid_argument(std::string(fn) + ": tenant is " + std::to_string(tenant.size()) +
                                " bytes (at most " + std::to_string(max_idempotency_tenant_size) +
                                ")");
  }
  detail::check_token_chars("tenant", fn, tenant);
}

/// The request fingerprint a key is bound to: 64-bit FNV-1a over the method, the path and
/// the body, each preceded by its length as 8 little-endian bytes (so ("ab","c") and
/// ("a","bc") differ). Stable across platforms, compilers and lakh versions: stores may
/// persist it. Not a cryptographic hash: a client could craft a collision between two of
/// ITS OWN requests under ITS OWN key, which only harms itself (it would get a replay).
/// Canonicalise the body (e.g. sorted JSON) before hashing if clients may reorder fields.
/// Thread-safety: pure. Blocks: never. Allocates: never.
constexpr std::uint64_t fingerprint(std::string_view method, std::string_view path,
                                    std::string_view body) noexcept {
  std::uint64_t h = 14695981039346656037ULL; // FNV-1a 64 offset basis
  constexpr std::uint64_t prime = 1099511628211ULL;
  auto mix = [&h](unsigned char b) {
    h ^= b;
    h *= prime;
  };
  for (std::string_view part : {method, path, body}) {
    auto n = static_cast<std::uint64_t>(part.size());
    for (int i = 0; i < 8; ++i) {
      mix(static_cast<unsigned char>((n >> (8 * i)) & 0xFFU));
    }
    for (char c : part) {
      mix(static_cast<unsigned char>(c));
    }
  }
  return h;
}

/// What a store found when a request tried to take a key (idempotency_store::begin).
enum class begin_state {
  acquired,  ///< the caller now owns a new in-progress record (token set): run the operation
  completed, ///< a completed record with the same fingerprint (response set): replay it
  running,   ///< an in-progress record with the same fingerprint and a live lease
  mismatch,  ///< a live record with another fingerprint
};

/// Returned by a store's begin().
struct begin_result {
  begin_state state = begin_state::running;
  std::string token;        ///< acquired: the owner's fencing token
  stored_response response; ///< completed: the stored response
};

/// Returned by a store's execute().
struct execute_result {
  idempotency_outcome outcome = idempotency_outcome::executed; ///< executed, lease_lost or
                                                               ///< in_progress (PG: lease
                                                               ///< lost before the run)
  stored_response response;
};

/// Runs operations under idempotency keys kept in a Store (see the header comment for the
/// rules). The guard holds a reference to the store and its options; it keeps no state of
/// its own, so one guard may serve every thread, and several guards (in several processes)
/// may share one store's records.
///
/// A Store provides (see memory_idempotency_store for the reference):
///   begin_result begin(std::string_view tenant, std::string_view key, std::uint64_t fp,
///                      const idempotency_options &);
///   execute_result execute(std::string_view tenant, std::string_view key,
///                          const std::string &token, const idempotency_options &, Fn &&fn);
///     runs fn (with whatever the store hands it: nothing, or a pqxx::work&) and records
///     its response fenced by `token`; if fn throws it releases the key and rethrows.
///
/// Memory ordering: the completion of a record (store-internal lock, Redis, or PostgreSQL
/// commit) happens-before any begin() that observes it, so a replaying caller sees the
/// stored response the executing caller produced. Fairness: none among waiters; each polls
/// with jittered backoff, and any one of them may take over an expired lease.
template <class Store> class idempotency_guard {
public:
  /// A guard over `store` (which must outlive it) with `opts`.
  /// Thread-safety: n/a. Blocks: never. Allocates: never.
  /// @throws std::invalid_argument if ttl or lease is not positive, or wait is negative.
  explicit idempotency_guard(Store &store, idempotency_options opts = {})
      : store_(&store), opts_(opts) {
    using namespace std::chrono;
    if (opts_.ttl <= milliseconds::zero()) {
      throw std::invalid_argument("lakh::idempotency_guard: ttl (" +
                                  std::to_string(opts_.ttl.count()) + " ms) must be positive");
    }
    if (opts_.lease <= milliseconds::zero()) {
      throw std::invalid_argument("lakh::idempotency_guard: lease (" +
                                  std::to_string(opts_.lease.count()) + " ms) must be positive");
    }
    if (opts_.wait < milliseconds::zero()) {
      throw std::invalid_argument("lakh::idempotency_guard: wait (" +
                                  std::to_string(opts_.wait.count()) + " ms) must not be negative");
    }
  }

  /// Run `fn` once for (tenant, key) bound to fingerprint `fp`, or replay its stored response.
  /// fn returns a stored_response; what it receives depends on the store (memory, Redis:
  /// nothing; PostgreSQL: the pqxx::work of the business writes).
  /// Returns executed / replayed with the response, mismatch, in_progress (after waiting up
  /// to options.wait, or at once when stop is requested), or lease_lost.
  /// Thread-safety: safe. Blocks: while fn runs, and up to options.wait on a duplicate that
  /// is in progress (a stop request ends the wait).
  /// @throws std::invalid_argument if the key or tenant is invalid (before anything runs);
  /// @throws whatever fn throws (the key is released first, so a retry runs again);
  /// @throws the store's errors (e.g. lakh::redis::redis_error): fn has then not run, or ran and
  ///         its result could not be recorded (the record stays in progress until its lease
  ///         expires).
  /// Allocates: may.
  template <class Fn>
  idempotency_result run(std::string_view tenant, std::string_view key, std::uint64_t fp, Fn &&fn,
                         std::stop_token st = {}) {
    validate_idempotency_key(key, "lakh::idempotency_guard::run");
    validate_idempotency_tenant(tenant, "lakh::idempotency_guard::run");
    const auto deadline = std::chrono::steady_clock::now() + opts_.wait;
    for (unsigned attempt = 0;; ++attempt) {
      begin_result b = store_->begin(tenant, key, fp, opts_);
      switch (b.state) {
      case begin_state::acquired: {
        // fn is passed as an lvalue: a PostgreSQL store may hand the key back (in_progress)
        // and a later iteration run it.
        execute_result e = store_->execute(tenant, key, b.token, opts_, fn);
        if (e.outcome != idempotency_outcome::in_progress) {
          return {e.outcome, std::move(e.response)};
        }
        break; // PG: taken over before we ran; wait like any duplicate
      }
      case begin_state::completed:
        return {idempotency_outcome::replayed, std::move(b.response)};
      case begin_state::mismatch:
        return {idempotency_outcome::mismatch, {}};
      case begin_state::running:
        break;
      }
      auto now = std::chrono::steady_clock::now();
      if (now >= deadline || st.stop_requested()) {
        return {idempotency_outcome::in_progress, {}};
      }
      auto d = std::min<std::chrono::nanoseconds>(opts_.poll.delay(std::min(attempt, 30U)),
                                                  deadline - now);
      if (lakh::sleep_for(d, st) == lakh::status::cancelled) {
        return {idempotency_outcome::in_progress, {}};
      }
    }
  }

  /// The settings. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] const idempotency_options &options() const noexcept { return opts_; }

  /// The store. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] Store &store() const noexcept { return *store_; }

private:
  Store *store_;
  idempotency_options opts_;
};

/// Settings of a memory_idempotency_store.
struct memory_store_options {
  /// Number of shards (each a mutex + hash map); more shards, less contention. 1..65536.
  std::size_t shards = 64;
};

/// Idempotency records in this process's memory: `shards` hash maps, each behind its own
/// mutex, selected by the hash of (tenant, key). For tests and single-process services;
/// records vanish with the process (so a crash frees every key at once).
///
/// Expired records are dropped when their key is touched and by purge_expired(); call that
/// periodically in a long-running service, or memory grows with the distinct keys of one TTL.
///
/// Memory ordering: every member locks the key's shard mutex, so complete() happens-before
/// any begin() that sees the completed record. Fairness: std::mutex (none).
class memory_idempotency_store {
  using clock = std::chrono::steady_clock;

public:
  /// An empty store.
  /// Thread-safety: n/a. Blocks: never. Allocates: may.
  /// @throws std::invalid_argument if opts.shards is 0 or above 65536.
  explicit memory_idempotency_store(memory_store_options opts = {})
      : shards_(checked_shards(opts.shards)) {}

  /// Take (tenant, key) for a request with fingerprint `fp`, or report what holds it. A
  /// record whose lease or TTL has expired is replaced. Low-level: idempotency_guard calls
  /// it; tests call it to simulate a run that crashed.
  /// Thread-safety: safe. Blocks: on the shard mutex only. Allocates: may.
  [[nodiscard]] begin_result begin(std::string_view tenant, std::string_view key, std::uint64_t fp,
                                   const idempotency_options &opts) {
    auto id = record_id(tenant, key);
    auto &sh = shard_for(id);
    auto now = clock::now();
    std::lock_guard lock(sh.m);
    auto it = sh.records.find(id);
    if (it != sh.records.end()) {
      auto &r = it->second;
      bool expired = r.done ? now >= r.expires_at : now >= r.lease_until;
      if (!expired) {
        if (r.fp != fp) {
          return {begin_state::mismatch, {}, {}};
        }
        if (r.done) {
          return {begin_state::completed, {}, r.response};
        }
        return {begin_state::running, {}, {}};
      }
      sh.records.erase(it);
    }
    auto token = std::to_string(next_token_.fetch_add(1, std::memory_order_relaxed));
    record r;
    r.fp = fp;
    r.token = token;
    r.lease_until = now + opts.lease;
    sh.records.emplace(std::move(id), std::move(r));
    return {begin_state::acquired, std::move(token), {}};
  }

  /// Run `fn()` for the owner of `token`, then store its response if the token still owns
  /// the record (executed), else report lease_lost. If fn throws, release the key, rethrow.
  /// Thread-safety: safe. Blocks: while fn runs. @throws whatever fn throws. Allocates: may.
  template <class Fn>
  execute_result execute(std::string_view tenant, std::string_view key, const std::string &token,
                         const idempotency_options &opts, Fn &&fn) {
    stored_response resp;
    try {
      resp = std::invoke(std::forward<Fn>(fn));
    } catch (...) {
      release(tenant, key, token);
      throw;
    }
    bool ok = complete(tenant, key, token, resp, opts);
    return {ok ? idempotency_outcome::executed : idempotency_outcome::lease_lost, std::move(resp)};
  }

  /// Mark the record owned by `token` completed with `resp` (expiring opts.ttl from now).
  /// Returns false, changing nothing, if `token` no longer owns an in-progress record.
  /// Thread-safety: safe. Blocks: on the shard mutex only. Allocates: may.
  bool complete(std::string_view tenant, std::string_view key, const std::string &token,
                const stored_response &resp, const idempotency_options &opts) {
    auto id = record_id(tenant, key);
    auto &sh = shard_for(id);
    std::lock_guard lock(sh.m);
    auto it = sh.records.find(id);
    if (it == sh.records.end() || it->second.done || it->second.token != token) {
      return false;
    }
    it->second.done = true;
    it->second.response = resp;
    it->second.expires_at = clock::now() + opts.ttl;
    return true;
  }

  /// Delete the in-progress record owned by `token` (the operation threw). Returns whether
  /// it did. Thread-safety: safe. Blocks: on the shard mutex only. Allocates: may.
  bool release(std::string_view tenant, std::string_view key, const std::string &token) noexcept {
    try {
      auto id = record_id(tenant, key);
      auto &sh = shard_for(id);
      std::lock_guard lock(sh.m);
      auto it = sh.records.find(id);
      if (it == sh.records.end() || it->second.done || it->second.token != token) {
        return false;
      }
      sh.records.erase(it);
      return true;
    } catch (...) {
      return false; // allocation failure: the lease will expire instead
    }
  }

  /// Drop every record whose TTL or lease has expired; returns how many.
  /// Thread-safety: safe. Blocks: on each shard mutex in turn. Allocates: never.
  std::size_t purge_expired() {
    std::size_t n = 0;
    auto now = clock::now();
    for (auto &sh : shards_) {
      std::lock_guard lock(sh.m);
      n += std::erase_if(sh.records, [now](const auto &kv) {
        return kv.second.done ? now >= kv.second.expires_at : now >= kv.second.lease_until;
      });
    }
    return n;
  }

  /// Records held now, expired or not (approximate while others run).
  /// Thread-safety: safe. Blocks: on each shard mutex in turn. Allocates: never.
  [[nodiscard]] std::size_t size() const {
    std::size_t n = 0;
    for (auto &sh : shards_) {
      std::lock_guard lock(sh.m);
      n += sh.records.size();
    }
    return n;
  }

private:
  struct record {
    std::uint64_t fp = 0;
    std::string token;
    bool done = false;
    clock::time_point lease_until{};
    clock::time_point expires_at{};
    stored_response response;
  };
  struct shard {
    mutable std::mutex m;
    std::unordered_map<std::string, record> records; // guarded by m
  };

  // "<tenant length>:<tenant><key>": unambiguous for any tenant.
  static std::string record_id(std::string_view tenant, std::string_view key) {
    std::string id = std::to_string(tenant.size());
    id += ':';
    id += tenant;
    id += key;
    return id;
  }

  shard &shard_for(const std::string &id) {
    return shards_[std::hash<std::string>{}(id) % shards_.size()];
  }

  static std::size_t checked_shards(std::size_t n) {
    if (n == 0 || n > 65536) {
      throw std::invalid_argument("lakh::memory_idempotency_store: shards (" + std::to_string(n) +
                                  ") must be in 1..65536");
    }
    return n;
  }

  std::vector<shard> shards_;
  std::atomic<std::uint64_t> next_token_{1};
};

} // namespace lakh
