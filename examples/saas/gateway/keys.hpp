#pragma once
// examples/saas/gateway/keys.hpp: API keys. A signup mints "lakh_" + 40 hex digits of
// HMAC-SHA256(GATEWAY_KEY_SECRET, a random salt); the database holds only the key's SHA-256
// (gateway.api_keys), so neither a copy of the database nor the secret alone gives a key away.
// authenticate() answers from a cache: a key found is trusted for API_KEY_CACHE_MS (a key
// deleted from the table stops working within that time), a key not found is refused from
// memory for API_KEY_NEGATIVE_CACHE_MS, so that a client repeating a wrong key costs no query.
#include "../common/config.hpp"
#include "../common/crypto.hpp"

#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace gateway {

/// GATEWAY_KEY_SECRET. @throws saas::config_error when missing or shorter than 32 characters.
inline std::string key_secret(const saas::config &cfg) {
  auto s = cfg.require("GATEWAY_KEY_SECRET");
  if (s.size() < 32) {
    throw saas::config_error("GATEWAY_KEY_SECRET must be at least 32 characters (e.g. the "
                             "output of `openssl rand -hex 32`), got " +
                             std::to_string(s.size()));
  }
  return s;
}

class api_keys {
public:
  api_keys(lakh::pg::pool &db, const saas::config &cfg)
      : db_(&db), secret_(key_secret(cfg)),
        ttl_(cfg.millis("API_KEY_CACHE_MS", std::chrono::milliseconds(60000))),
        negative_ttl_(cfg.millis("API_KEY_NEGATIVE_CACHE_MS", std::chrono::milliseconds(10000))) {}

  /// The API key of `salt`.
  [[nodiscard]] std::string key_for(std::string_view salt) const {
    return "lakh_" + saas::hmac_sha256_hex(secret_, salt).substr(0, 40);
  }

  /// What authenticate() answers when it needs no query (the key is cached, or the header is
  /// not a key at all); nothing when it would query.
  std::optional<std::int64_t> tenant_if_cached(std::string_view header) {
    if (header.substr(0, 7) != "Bearer " || header.size() > 7 + 200) {
      return 0;
    }
    return lookup(saas::sha256_hex(header.substr(7)), std::chrono::steady_clock::now());
  }

  /// The tenant of an "Authorization: Bearer <key>" header value, or 0. Blocks on a query
  /// when the key is not cached. @throws lakh::pg::acquire_error, pqxx errors.
  std::int64_t authenticate(std::string_view header) {
    if (header.substr(0, 7) != "Bearer " || header.size() > 7 + 200) {
      return 0;
    }
    const auto digest = saas::sha256_hex(header.substr(7));
    const auto now = std::chrono::steady_clock::now();
    if (auto t = lookup(digest, now)) {
      return *t;
    }
    const auto tenant = lakh::pg::with_connection(*db_, [&](pqxx::connection &c) -> std::int64_t {
      pqxx::nontransaction n(c);
      auto r =
          n.exec_params("SELECT tenant_id FROM gateway.api_keys WHERE key_sha256 = $1", digest);
      return r.empty() ? 0 : r[0][0].as<std::int64_t>();
    });
    std::unique_lock lk(mu_);
    if (cache_.size() >= max_cached) {
      std::erase_if(cache_, [now](const auto &kv) { return kv.second.expires <= now; });
      if (cache_.size() >= max_cached) {
        cache_.clear(); // an attack with many keys: start over rather than grow
      }
    }
    cache_[digest] = {tenant, now + (tenant != 0 ? ttl_ : negative_ttl_)};
    return tenant;
  }

  /// Forgets the cached keys of `tenant` (its keys were replaced).
  void forget_tenant(std::int64_t tenant) {
    std::unique_lock lk(mu_);
    std::erase_if(cache_, [tenant](const auto &kv) { return kv.second.tenant == tenant; });
  }

private:
  std::optional<std::int64_t> lookup(const std::string &digest,
                                     std::chrono::steady_clock::time_point now) {
    std::shared_lock lk(mu_);
    if (auto it = cache_.find(digest); it != cache_.end() && it->second.expires > now) {
      return it->second.tenant;
    }
    return std::nullopt;
  }

  static constexpr std::size_t max_cached = 100000;
  struct cached {
    std::int64_t tenant; ///< 0: not a key
    std::chrono::steady_clock::time_point expires;
  };
  lakh::pg::pool *db_;
  std::string secret_;
  std::chrono::milliseconds ttl_, negative_ttl_;
  std::shared_mutex mu_;
  std::unordered_map<std::string, cached> cache_; ///< SHA-256 of a key -> its tenant
};

} // namespace gateway
