#pragma once
// lakh/idempotency.hpp: run an operation at most once per idempotency key (Stripe's
// Idempotency-Key) and replay its stored response to every retry: idempotency_guard<Store>,
// the idempotency_store concept every store satisfies, the in-process
// memory_idempotency_store, fingerprint() and the key rules. Unlike std::once_flag (one
// process, one flag, forever), a key is data: shared by processes through the store, bound
// to one request, and it expires. The PostgreSQL and Redis stores are
// lakh/pg/idempotency_store.hpp and lakh/redis/idempotency_store.hpp.
// Guide, with the nine rules every store follows: docs/idempotency.md.
//
// One header over ~500 lines because the guard, the store concept, the types they exchange
// and the reference store (memory) are one contract; each other store has its own header.

#include <lakh/backoff.hpp>
#include <lakh/status.hpp>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lakh {

// The free functions here are pure: thread-safe, never block, allocate only for exceptions.

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

/// The enumerator's name, e.g. "replayed".
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
/// @throws std::invalid_argument naming the problem ("... key is empty", "... key is 300
///         bytes (at most 255)", "... key has a forbidden byte 0x20 at position 3 ...").
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
/// @throws std::invalid_argument naming the problem.
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

namespace detail {

/// An operation of any signature that returns a stored_response: what the concept hands
/// execute() to check its shape (each store decides what its operation receives).
struct any_idempotent_operation {
  template <class... Args> stored_response operator()(Args &&...) const { return {}; }
};

/// A store's execute() when the operation takes no argument and completion is a separate
/// fenced step, `bool complete(tenant, key, token, response, opts)` (the memory and Redis
/// stores): runs fn; if it throws, releases the key and rethrows; else completes: executed,
/// or lease_lost when the token no longer owns the record.
template <class Store, class Fn>
execute_result execute_then_complete(Store &store, std::string_view tenant, std::string_view key,
                                     const std::string &token, const idempotency_options &opts,
                                     Fn &&fn) {
  stored_response resp;
  try {
    resp = std::invoke(std::forward<Fn>(fn));
  } catch (...) {
    (void)store.release(tenant, key, token);
    throw;
  }
  const bool ok = store.complete(tenant, key, token, resp, opts);
  return {ok ? idempotency_outcome::executed : idempotency_outcome::lease_lost, std::move(resp)};
}

/// A fencing token no other process will draw: 32 hex digits, 64 random bits (seeded per
/// thread from std::random_device) then a process-wide counter.
inline std::string random_token() {
  thread_local std::mt19937_64 rng{[] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32U) ^ rd();
  }()};
  static std::atomic<std::uint64_t> counter{0};
  return to_hex16(rng()) + to_hex16(counter.fetch_add(1, std::memory_order_relaxed));
}

} // namespace detail

/// What idempotency_guard needs of a store of idempotency records (memory_idempotency_store,
/// lakh::pg::idempotency_store, lakh::redis::idempotency_store, or your own). The syntax is
/// checked here; the semantics, which every store's tests check through one shared suite,
/// are:
///
///  - begin(tenant, key, fp, opts): take the record of (tenant, key) or report what holds it.
///    acquired (with a fencing token) when the record was absent or expired (a running
///    record past opts.lease, a completed one past opts.ttl): the caller now owns a new
///    in-progress record; completed (with the response) for a live completed record of
///    fingerprint fp; running for a live in-progress one of fp; mismatch for a live record
///    of another fingerprint.
///  - execute(tenant, key, token, opts, fn): for the owner of `token`, run fn (with what the
///    store hands it: nothing for memory and Redis, the pqxx::work for PostgreSQL) and record
///    its response, fenced by the token, to expire opts.ttl after completion. Returns
///    executed with the response; lease_lost when the token lost the record while fn ran
///    (the response is not recorded); or in_progress, fn not run, when the token lost it
///    before fn started. If fn throws, release the key, then rethrow.
///  - release(tenant, key, token) noexcept: delete the in-progress record if `token` still
///    owns it; returns whether it did (false also when the store cannot be reached: the
///    lease then ends instead).
///
/// Every member may be called concurrently, from any process sharing the store; the
/// completion of a record happens-before any begin() that observes it.
template <class S>
concept idempotency_store = requires(S &s, std::string_view tenant, std::string_view key,
                                     std::uint64_t fp, const std::string &token,
                                     const idempotency_options &opts,
                                     detail::any_idempotent_operation &fn) {
  { s.begin(tenant, key, fp, opts) } -> std::same_as<begin_result>;
  { s.execute(tenant, key, token, opts, fn) } -> std::same_as<execute_result>;
  { s.release(tenant, key, token) }
  noexcept->std::same_as<bool>;
};

/// Runs operations under idempotency keys kept in a Store, by the rules of
/// docs/idempotency.md. The guard holds a reference to the store and its options; it keeps
/// no state of its own, so one guard may serve every thread, and several guards (in several
/// processes) may share one store's records. Every member is thread-safe and never blocks or
/// allocates, except run().
///
/// Memory ordering: the completion of a record (store-internal lock, Redis, or PostgreSQL
/// commit) happens-before any begin() that observes it, so a replaying caller sees the
/// stored response the executing caller produced. Fairness: none among waiters; each polls
/// with jittered backoff, and any one of them may take over an expired lease.
template <idempotency_store Store> class idempotency_guard {
public:
  /// A guard over `store` (which must outlive it) with `opts`.
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
  /// Blocks: while fn runs, and up to options.wait on a duplicate that is in progress (a
  /// stop request ends the wait). Allocates: may.
  /// @throws std::invalid_argument if the key or tenant is invalid (before anything runs);
  /// @throws whatever fn throws (the key is released first, so a retry runs again);
  /// @throws the store's errors (e.g. lakh::redis::redis_error): fn has then not run, or ran and
  ///         its result could not be recorded (the record stays in progress until its lease
  ///         expires).
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

  /// The settings.
  [[nodiscard]] const idempotency_options &options() const noexcept { return opts_; }

  /// The store.
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
/// Every member is thread-safe, blocks only on the key's shard mutex (each shard in turn for
/// purge_expired() and size()), and may allocate, unless its comment says otherwise.
/// Memory ordering: every member locks the key's shard mutex, so complete() happens-before
/// any begin() that sees the completed record. Fairness: std::mutex (none).
class memory_idempotency_store {
  using clock = std::chrono::steady_clock;

public:
  /// An empty store.
  /// @throws std::invalid_argument if opts.shards is 0 or above 65536.
  explicit memory_idempotency_store(memory_store_options opts = {})
      : shards_(checked_shards(opts.shards)) {}

  /// Take (tenant, key) for a request with fingerprint `fp`, or report what holds it. A
  /// record whose lease or TTL has expired is replaced. Low-level: idempotency_guard calls
  /// it; tests call it to simulate a run that crashed.
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
  /// Blocks: while fn runs. @throws whatever fn throws.
  template <class Fn>
  execute_result execute(std::string_view tenant, std::string_view key, const std::string &token,
                         const idempotency_options &opts, Fn &&fn) {
    return detail::execute_then_complete(*this, tenant, key, token, opts, std::forward<Fn>(fn));
  }

  /// Mark the record owned by `token` completed with `resp` (expiring opts.ttl from now).
  /// Returns false, changing nothing, if `token` no longer owns an in-progress record.
  bool complete(std::string_view tenant, std::string_view key, const std::string &token,
                const stored_response &resp, const idempotency_options &opts) {
    return with_owned(tenant, key, token, [&](shard &, auto it) {
      it->second.done = true;
      it->second.response = resp;
      it->second.expires_at = clock::now() + opts.ttl;
    });
  }

  /// Delete the in-progress record owned by `token` (the operation threw). Returns whether
  /// it did.
  bool release(std::string_view tenant, std::string_view key, const std::string &token) noexcept {
    try {
      return with_owned(tenant, key, token, [](shard &sh, auto it) { sh.records.erase(it); });
    } catch (...) {
      return false; // allocation failure: the lease will expire instead
    }
  }

  /// Drop every record whose TTL or lease has expired; returns how many.
  /// Allocates: never.
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
  /// Allocates: never.
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

  /// Under the key's shard mutex, calls f(shard, iterator) when `token` owns the in-progress
  /// record of (tenant, key); returns whether it did.
  template <class F>
  bool with_owned(std::string_view tenant, std::string_view key, const std::string &token, F &&f) {
    auto id = record_id(tenant, key);
    auto &sh = shard_for(id);
    const std::lock_guard lock(sh.m);
    auto it = sh.records.find(id);
    if (it == sh.records.end() || it->second.done || it->second.token != token) {
      return false;
    }
    f(sh, it);
    return true;
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

static_assert(idempotency_store<memory_idempotency_store>);

} // namespace lakh
