#pragma once
// lakh/redis/idempotency_store.hpp: idempotency records in Redis, shared by every process
// that talks to the same server.
//
// Use with lakh::idempotency_guard (lakh/idempotency.hpp, which states the rules). Records:
//   - key: "<prefix><tenant length>:<tenant>:<key>" (the length makes tenant/key boundaries
//     unambiguous), prefix "lakh:idem:" by default;
//   - in progress: "R|<fingerprint hex16>|<token hex32>", set with SET key value NX PX lease.
//     The PX lease IS the lock expiry: when a run crashes, Redis deletes the record when the
//     lease ends, and the next request takes the key with SET NX;
//   - done: "D|<fingerprint hex16>|<status>|<body>" with PX ttl, written by a Lua script
//     (EVAL) that replaces the value only if it is still exactly the caller's in-progress
//     value: a fencing check, so an owner whose lease expired (and whose key someone else
//     took) cannot overwrite the new owner's record; it gets lease_lost instead;
//   - release (the operation threw): a Lua script deletes the record only if it is still the
//     caller's.
// Waiters poll with the guard's backoff (full jitter); nothing blocks inside Redis.
//
// While Redis is down every call throws lakh::redis::redis_error naming host:port and hiredis's
// reason; begin() fails BEFORE the operation runs, so an outage never causes an execution
// that the store does not know about. The window that remains is inherent to any store
// outside the operation's own database: if Redis fails after the operation ran but before
// the completion is written, the guard throws, and the record stays in progress until its
// lease ends (a retry after that runs the operation again); if Redis loses the record itself
// (a restart without persistence, a failover to a replica that had not received it), a retry
// runs again. Use lakh::pg::idempotency_store where that matters: it commits the record with
// the business writes.
//
// Connections: a lakh::redis::connection_pool (one connection per concurrent caller). Every
// command the store sends is safe to repeat, so connection_pool::command resends it once on
// a fresh connection when a pooled one turns out dead (after a Redis restart).

#include <lakh/idempotency.hpp>
#include <lakh/redis/connection.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <string_view>
#include <utility>

namespace lakh::redis {

/// Settings of an idempotency_store.
struct idempotency_store_options {
  /// Prefix of every key the store writes (use one per service, or per test for isolation).
  std::string prefix = "lakh:idem:";
};

/// Idempotency records in Redis. See the header comment.
///
/// Thread-safety: every member may be called concurrently (each leases its own connection).
/// Memory ordering: Redis executes commands one at a time; the completing EVAL
/// happens-before any GET that returns the completed value. Fairness: none among waiters.
class idempotency_store {
public:
  /// A store over `pool` (which must outlive it). Touches no server.
  /// Thread-safety: n/a. Blocks: never. Allocates: may.
  explicit idempotency_store(connection_pool &pool, idempotency_store_options opts = {})
      : pool_(&pool), prefix_(std::move(opts.prefix)) {}

  /// Take (tenant, key) with SET NX PX, or report what holds it (GET). Low-level:
  /// idempotency_guard calls it; tests call it to simulate a crashed run.
  /// Thread-safety: safe. Blocks: for up to a few round trips.
  /// @throws lakh::redis::redis_error if the server cannot be reached or fails. Allocates: may.
  [[nodiscard]] begin_result begin(std::string_view tenant, std::string_view key, std::uint64_t fp,
                                   const idempotency_options &opts) {
    auto k = record_key(tenant, key);
    auto fph = lakh::detail::to_hex16(fp);
    for (int round = 0; round < 3; ++round) {
      auto value = "R|" + fph + "|" + new_token();
      auto set = pool_->command({"SET", k, value, "NX", "PX", std::to_string(opts.lease.count())});
      if (set->type == REDIS_REPLY_STATUS) {
        return {begin_state::acquired, std::move(value), {}};
      }
      auto got = pool_->command({"GET", k});
      if (got->type != REDIS_REPLY_STRING) {
        continue; // expired or released in between: try SET NX again
      }
      std::string_view v(got->str, got->len);
      if (v.size() < 19 || (v[0] != 'R' && v[0] != 'D') || v[1] != '|' || v[18] != '|') {
        throw redis_error("lakh::redis::idempotency_store: key " + k + " on " + pool_->target() +
                          " holds a value this store did not write");
      }
      if (v.substr(2, 16) != fph) {
        return {begin_state::mismatch, {}, {}};
      }
      if (v[0] == 'R') {
        return {begin_state::running, {}, {}};
      }
      return {begin_state::completed, {}, decode_done(v, k)};
    }
    return {begin_state::running, {}, {}};
  }

  /// Run `fn()` for the owner of `token`, then store its response with the fenced Lua
  /// completion: executed, or lease_lost if the token no longer owns the record. If fn
  /// throws, release the key (best effort) and rethrow.
  /// Thread-safety: safe. Blocks: while fn runs, and for one round trip.
  /// @throws whatever fn throws; lakh::redis::redis_error if the completion cannot be written
  ///         (fn HAS run; the record stays in progress until its lease ends).
  /// Allocates: may.
  template <class Fn>
  execute_result execute(std::string_view tenant, std::string_view key, const std::string &token,
                         const idempotency_options &opts, Fn &&fn) {
    stored_response resp;
    try {
      resp = std::invoke(std::forward<Fn>(fn));
    } catch (...) {
      (void)release(tenant, key, token);
      throw;
    }
    bool ok = complete(tenant, key, token, resp, opts);
    return {ok ? idempotency_outcome::executed : idempotency_outcome::lease_lost, std::move(resp)};
  }

  /// Replace the in-progress record `token` with the completed `resp` (PX opts.ttl),
  /// atomically and only if `token` still owns it. Returns whether it did.
  /// Thread-safety: safe. Blocks: for one round trip.
  /// @throws lakh::redis::redis_error if the server cannot be reached or fails. Allocates: may.
  bool complete(std::string_view tenant, std::string_view key, const std::string &token,
                const stored_response &resp, const idempotency_options &opts) {
    static const std::string script =
        "local v = redis.call('GET', KEYS[1]) "
        "if v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end "
        "if v == ARGV[2] then return 1 end return 0"; // v == done: a resend after a lost reply
    std::string done = "D|" + token.substr(2, 16) + "|" + std::to_string(resp.status) + "|";
    done += resp.body;
    auto r = pool_->command({"EVAL", script, "1", record_key(tenant, key), token, done,
                             std::to_string(opts.ttl.count())});
    return r->type == REDIS_REPLY_INTEGER && r->integer == 1;
  }

  /// Delete the in-progress record `token` if it still owns it; returns whether it did
  /// (false also when Redis cannot be reached: the lease then ends instead).
  /// Thread-safety: safe. Blocks: for one round trip. Allocates: may.
  bool release(std::string_view tenant, std::string_view key, const std::string &token) noexcept {
    static const std::string script = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                      "return redis.call('DEL', KEYS[1]) end return 0";
    try {
      auto r = pool_->command({"EVAL", script, "1", record_key(tenant, key), token});
      return r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    } catch (...) {
      return false;
    }
  }

  /// The key prefix. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] const std::string &prefix() const noexcept { return prefix_; }

private:
  std::string record_key(std::string_view tenant, std::string_view key) const {
    std::string k = prefix_;
    k += std::to_string(tenant.size());
    k += ':';
    k += tenant;
    k += ':';
    k += key;
    return k;
  }

  stored_response decode_done(std::string_view v, const std::string &k) const {
    // "D|" fp16 "|" status "|" body
    auto bar = v.find('|', 19);
    if (bar == std::string_view::npos || bar == 19 || bar - 19 > 11) {
      throw redis_error("lakh::redis::idempotency_store: key " + k + " on " + pool_->target() +
                        " holds a malformed completed record");
    }
    auto st = v.substr(19, bar - 19);
    bool neg = st[0] == '-';
    long long n = 0;
    for (char c : st.substr(neg ? 1 : 0)) {
      if (c < '0' || c > '9') {
        throw redis_error("lakh::redis::idempotency_store: key " + k + " on " + pool_->target() +
                          " holds a malformed status");
      }
      n = n * 10 + (c - '0');
    }
    return {static_cast<int>(neg ? -n : n), std::string(v.substr(bar + 1))};
  }

  static std::string new_token() {
    thread_local std::mt19937_64 rng{[] {
      std::random_device rd;
      return (static_cast<std::uint64_t>(rd()) << 32U) ^ rd();
    }()};
    static std::atomic<std::uint64_t> counter{0};
    return lakh::detail::to_hex16(rng()) +
           lakh::detail::to_hex16(counter.fetch_add(1, std::memory_order_relaxed));
  }

  connection_pool *pool_;
  std::string prefix_;
};

} // namespace lakh::redis
