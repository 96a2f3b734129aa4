#pragma once
// examples/saas/common/auth.hpp: the internal gRPC calls are authenticated. A caller (the
// gateway, billing) signs every call with a service token: metadata "x-saas-caller" (its
// name) and "x-saas-token" = "<expiry unix seconds>.<HMAC-SHA256(SERVICE_TOKEN_SECRET,
// caller + '.' + expiry)>"; every service checks the token before the handler runs
// (UNAUTHENTICATED otherwise), so the tenant_id in a request is trusted only because an
// authenticated service sent it. One shared secret keeps the example small; mutual TLS with a
// per-service certificate is the production form of the same check.

#include "config.hpp"
#include "crypto.hpp"

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace saas {

/// SERVICE_TOKEN_SECRET. @throws config_error when missing or shorter than 32 characters.
inline std::string service_token_secret(const config &cfg) {
  auto s = cfg.require("SERVICE_TOKEN_SECRET");
  if (s.size() < 32) {
    throw config_error("SERVICE_TOKEN_SECRET must be at least 32 characters (e.g. the output "
                       "of `openssl rand -hex 32`), got " +
                       std::to_string(s.size()));
  }
  return s;
}

/// Signs and checks service tokens with one secret.
class service_auth {
public:
  static constexpr std::chrono::seconds validity{300};

  service_auth(std::string caller, std::string secret)
      : caller_(std::move(caller)), secret_(std::move(secret)) {}

  /// Adds this service's token to an outgoing call.
  void sign(grpc::ClientContext &ctx) const {
    const auto expiry = std::to_string(unix_now() + validity.count());
    ctx.AddMetadata("x-saas-caller", caller_);
    ctx.AddMetadata("x-saas-token",
                    expiry + "." + hmac_sha256_hex(secret_, caller_ + "." + expiry));
  }

  /// The authenticated caller of an incoming call, or "" when its token is missing, forged or
  /// expired.
  [[nodiscard]] std::string verify(const grpc::ServerContextBase &ctx) const {
    const auto &md = ctx.client_metadata();
    auto c = md.find("x-saas-caller");
    auto t = md.find("x-saas-token");
    if (c == md.end() || t == md.end()) {
      return "";
    }
    const std::string caller(c->second.data(), c->second.size());
    const std::string_view token(t->second.data(), t->second.size());
    const auto dot = token.find('.');
    if (dot == std::string_view::npos || dot == 0 || dot > 12) {
      return "";
    }
    const std::string expiry(token.substr(0, dot));
    if (expiry.find_first_not_of("0123456789") != std::string::npos) {
      return "";
    }
    const auto e = std::stoll(expiry);
    const auto now = unix_now();
    if (e < now || e > now + 2 * validity.count()) {
      return "";
    }
    const auto want = hmac_sha256_hex(secret_, caller + "." + expiry);
    return equal_constant_time(token.substr(dot + 1), want) ? caller : "";
  }

private:
  static std::int64_t unix_now() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  std::string caller_;
  std::string secret_;
};

} // namespace saas
