#pragma once
// lakh/redis/idempotency_store.hpp: lakh::redis::idempotency_store, idempotency records in
// Redis for lakh::idempotency_guard (lakh/idempotency.hpp), shared by every process that talks
// to the same server. A key is taken with SET NX PX (the PX lease is the lock expiry, so a
// crashed run's record vanishes by itself); completion and release are Lua scripts fenced by
// the owner's token. Not atomic with the business writes: docs/idempotency.md ("Redis
// outages") states the window, and the record layout.

#include <lakh/idempotency.hpp>
#include <lakh/redis/connection.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace lakh::redis {

/// Settings of an idempotency_store.
struct idempotency_store_options {
  std::string prefix = "lakh:idem:"; ///< of every key it writes: one per service, or per test
};

/// Idempotency records in Redis; satisfies lakh::idempotency_store.
///
/// Every member is thread-safe (each leases its own connection from the pool), and every
/// member that talks to Redis may throw lakh::redis::redis_error (naming host:port and
/// hiredis's reason) and allocates. While Redis is down, begin() fails BEFORE the operation
/// runs. Every command the store sends is safe to repeat, so connection_pool::command resends
/// it once on a fresh connection when a pooled one turns out dead.
/// Memory ordering: Redis executes commands one at a time; the completing EVAL happens-before
/// any GET that returns the completed value. Fairness: none among waiters.
class idempotency_store {
public:
  /// A store over `pool` (which must outlive it). Touches no server.
  explicit idempotency_store(connection_pool &pool, idempotency_store_options opts = {})
      : pool_(&pool), prefix_(std::move(opts.prefix)) {}

  /// Take (tenant, key) with SET NX PX, or report what holds it (GET). Low-level:
  /// idempotency_guard calls it; tests call it to simulate a crashed run.
  /// Blocks: for up to a few round trips.
  [[nodiscard]] begin_result begin(std::string_view tenant, std::string_view key, std::uint64_t fp,
                                   const idempotency_options &opts) {
    return begin(tenant, key, fp, opts, lakh::detail::random_token());
  }

  /// begin() with the caller's `nonce` (unique per attempt) in the token it writes. Calling
  /// it again with the same nonce after it threw (its reply was lost) acquires the record
  /// the first call wrote, instead of reporting it running.
  [[nodiscard]] begin_result begin(std::string_view tenant, std::string_view key, std::uint64_t fp,
                                   const idempotency_options &opts, std::string_view nonce) {
    auto k = record_key(tenant, key);
    auto fph = lakh::detail::to_hex16(fp);
    auto value = "R|" + fph + "|" + std::string(nonce);
    for (int round = 0; round < 3; ++round) {
      auto set = pool_->command({"SET", k, value, "NX", "PX", std::to_string(opts.lease.count())});
      if (set->type == REDIS_REPLY_STATUS) {
        return {begin_state::acquired, std::move(value), {}};
      }
      auto got = pool_->command({"GET", k});
      if (got->type != REDIS_REPLY_STRING) {
        continue; // expired or released in between: try SET NX again
      }
      std::string_view v(got->str, got->len);
      if (v == value) {
        // Our own SET NX took it and only its reply was lost (the pool resent it, or the
        // caller called again with the same nonce).
        return {begin_state::acquired, std::move(value), {}};
      }
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
  /// Blocks: while fn runs, and for one round trip.
  /// @throws whatever fn throws; lakh::redis::redis_error if the completion cannot be written
  ///         (fn HAS run; the record stays in progress until its lease ends).
  template <class Fn>
  execute_result execute(std::string_view tenant, std::string_view key, const std::string &token,
                         const idempotency_options &opts, Fn &&fn) {
    return lakh::detail::execute_then_complete(*this, tenant, key, token, opts,
                                               std::forward<Fn>(fn));
  }

  /// Replace the in-progress record `token` with the completed `resp` (PX opts.ttl),
  /// atomically and only if `token` still owns it. Returns whether it did.
  /// Blocks: for one round trip.
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
  /// Blocks: for one round trip. Never throws.
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

  /// The key prefix.
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

  connection_pool *pool_;
  std::string prefix_;
};

static_assert(lakh::idempotency_store<idempotency_store>);

} // namespace lakh::redis
