#pragma once
// examples/saas/gateway/limits.hpp: the gateway's admission limits.
//   - keyed_buckets: one lakh::token_bucket per key (a tenant, a client address): `rate` per
//     second, up to `burst` at once; the map bounded by dropping buckets that are full again
//     (their key has been idle);
//   - tenant_limits: per tenant, a rate (token bucket) and requests in flight
//     (lakh::semaphore, non-blocking: past either, 429).
#include <lakh/semaphore.hpp>
#include <lakh/token_bucket.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>

namespace gateway {

using steady = std::chrono::steady_clock;

/// One token bucket per key, thread-safe. At most `max_keys` buckets: past it, full buckets
/// are dropped (an idle key starts over with a full bucket, which is what it had anyway).
template <class Key> class keyed_buckets {
public:
  keyed_buckets(double rate, double burst, std::size_t max_keys = 100000)
      : rate_(rate), burst_(burst), max_keys_(max_keys) {}

  /// Takes a token of `key`'s bucket if there is one.
  bool take(const Key &key) {
    const auto now = steady::now();
    std::lock_guard lk(mu_);
    if (buckets_.size() >= max_keys_) {
      std::erase_if(buckets_, [now](auto &kv) { return kv.second.full(now); });
    }
    auto it = buckets_.try_emplace(key, burst_, rate_, now).first;
    return it->second.try_take(now);
  }

  /// Whether `key` has a token now (none is taken).
  bool available(const Key &key) {
    const auto now = steady::now();
    std::lock_guard lk(mu_);
    auto it = buckets_.find(key);
    return it == buckets_.end() || it->second.available(now) >= 1.0;
  }

private:
  double rate_, burst_;
  std::size_t max_keys_;
  std::mutex mu_;
  std::unordered_map<Key, lakh::token_bucket> buckets_;
};

/// Per-tenant limits: a rate and a number of requests in flight.
class tenant_limits {
public:
  tenant_limits(double rate, double burst, std::ptrdiff_t concurrency)
      : rate_(rate, burst), concurrency_(concurrency) {}

  /// A permit for one request of `tenant`, or an empty permit and why (rate or concurrency).
  std::pair<lakh::permit, const char *> admit(std::int64_t tenant) {
    if (!rate_.take(tenant)) {
      return {lakh::permit(), "rate limit exceeded"};
    }
    auto p = in_flight(tenant).try_acquire_permit();
    return {std::move(p), p.owns() ? nullptr : "too many requests in flight"};
  }

private:
  lakh::semaphore &in_flight(std::int64_t tenant) {
    {
      std::shared_lock lk(mu_);
      if (auto it = in_flight_.find(tenant); it != in_flight_.end()) {
        return *it->second;
      }
    }
    std::unique_lock lk(mu_);
    auto &s = in_flight_[tenant];
    if (!s) {
      s = std::make_unique<lakh::semaphore>(concurrency_);
    }
    return *s;
  }

  keyed_buckets<std::int64_t> rate_;
  std::ptrdiff_t concurrency_;
  std::shared_mutex mu_;
  std::unordered_map<std::int64_t, std::unique_ptr<lakh::semaphore>> in_flight_;
};

} // namespace gateway
