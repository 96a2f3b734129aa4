#pragma once
// examples/saas/gateway/signup.hpp: POST /v1/signup across two services, in Stripe's phases,
// never holding a transaction across the call:
//   1. start: gateway.signups gets ('started', a random salt) for the Idempotency-Key, or
//      already has it: another request body is 422, a delivered signup is replayed WITHOUT
//      the key (200, Idempotent-Replayed: true), a started one is driven again;
//   2. UserService.CreateTenant with the key (the user service records it with the tenant:
//      a repeat answers the same tenant). A "no" that certainly had no effect (the name is
//      taken, a bad name) deletes the started row, so the key may be used again; an outcome
//      the gateway cannot know (deadline, unavailable) keeps it, and a retry drives step 2
//      again with the same key;
//   3. deliver: in one transaction, the key's hash goes into gateway.api_keys and the signup
//      becomes 'delivered' with its salt erased (this request's token in delivered_by). The
//      answer of the request that delivered is the only one that carries the key (201). A
//      commit whose outcome is unknown is settled by reading delivered_by back.
// A gateway that dies between step 3's commit and writing its answer leaves a client that
// never saw its key and gets replays without it: such a client asks an operator for a new key
// (POST /v1/admin/tenants/{id}/api-keys), as does one that lost its key.
#include "../common/rpc.hpp"
#include "http.hpp"
#include "keys.hpp"

#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <chrono>
#include <cstdint>
#include <string>
#include <variant>

namespace gateway {

class signups {
public:
  signups(lakh::pg::pool &db, api_keys &keys, v1::UserService::Stub &users,
          const saas::service_auth &auth, std::chrono::milliseconds deadline)
      : db_(&db), keys_(&keys), users_(&users), auth_(&auth), deadline_(deadline) {}

  /// Signs `name` up under `key` (validated) bound to the request fingerprint `fp`.
  /// @throws lakh::pg::acquire_error, pqxx errors (answered 503 by the caller).
  reply run(const std::string &name, const saas::idempotency_ref &key,
            const saas::trace_context &trace) {
    auto started = start(key);
    if (started.index() == 1) {
      return std::get<reply>(std::move(started));
    }
    const auto salt = std::get<std::string>(started);
    v1::CreateTenantRequest in;
    in.set_name(name);
    v1::CreateTenantResponse out;
    grpc::ClientContext ctx;
    saas::prepare_call(ctx, *auth_, trace, deadline_, &key);
    const auto s = users_->CreateTenant(&ctx, in, &out);
    if (!s.ok()) {
      const auto code = s.error_code();
      if (code == grpc::StatusCode::ALREADY_EXISTS || code == grpc::StatusCode::INVALID_ARGUMENT) {
        release(key.key); // certainly no tenant for this key: the key is free again
      }
      return from_grpc(ctx, s, trace.trace_id);
    }
    return deliver(key.key, salt, out.tenant().id());
  }

private:
  /// Step 1: the salt of a started signup, or the answer when there is nothing to drive.
  std::variant<std::string, reply> start(const saas::idempotency_ref &key) {
    const auto fp = static_cast<std::int64_t>(key.fingerprint);
    return lakh::pg::with_connection(
        *db_, [&](pqxx::connection &c) -> std::variant<std::string, reply> {
          pqxx::nontransaction n(c);
          const auto salt = saas::random_hex(16);
          auto r = n.exec_params("INSERT INTO gateway.signups (idempotency_key, fingerprint, salt, "
                                 "state) VALUES ($1, $2, $3, 'started') ON CONFLICT DO NOTHING "
                                 "RETURNING salt",
                                 key.key, fp, salt);
          if (!r.empty()) {
            return salt;
          }
          r = n.exec_params("SELECT fingerprint, state, coalesce(salt, ''), coalesce(tenant_id, 0) "
                            "FROM gateway.signups WHERE idempotency_key = $1",
                            key.key);
          if (r.empty()) { // released in between: the client may simply retry
            return fail(409, "a request with this Idempotency-Key is in progress; retry");
          }
          if (r[0][0].as<std::int64_t>() != fp) {
            return fail(422, "Idempotency-Key reused with a different request");
          }
          if (r[0][1].as<std::string>() == "delivered") {
            return replay(r[0][3].as<std::int64_t>());
          }
          return r[0][2].as<std::string>();
        });
  }

  /// Step 3.
  reply deliver(const std::string &key, const std::string &salt, std::int64_t tenant) {
    const auto api_key = keys_->key_for(salt);
    const auto token = saas::random_hex(8);
    bool delivered = false;
    try {
      delivered = lakh::pg::with_connection(*db_, [&](pqxx::connection &c) {
        pqxx::work w(c);
        w.exec_params("INSERT INTO gateway.api_keys (key_sha256, tenant_id) VALUES ($1, $2) ON "
                      "CONFLICT DO NOTHING",
                      saas::sha256_hex(api_key), tenant);
        auto r = w.exec_params("UPDATE gateway.signups SET state = 'delivered', tenant_id = $2, "
                               "salt = NULL, delivered_at = now(), delivered_by = $3 WHERE "
                               "idempotency_key = $1 AND state = 'started' RETURNING 1",
                               key, tenant, token);
        w.commit();
        return !r.empty();
      });
    } catch (const pqxx::in_doubt_error &) {
      delivered = delivered_by(key) == token; // did our commit happen?
    }
    if (!delivered) { // a concurrent request with the key delivered it
      return replay(tenant);
    }
    reply r{201, {{"tenant_id", tenant}, {"api_key", api_key}}};
    r.replayed = "false";
    return r;
  }

  std::string delivered_by(const std::string &key) {
    return lakh::pg::with_connection(*db_, [&](pqxx::connection &c) {
      pqxx::nontransaction n(c);
      auto r = n.exec_params("SELECT coalesce(delivered_by, '') FROM gateway.signups WHERE "
                             "idempotency_key = $1",
                             key);
      return r.empty() ? std::string() : r[0][0].as<std::string>();
    });
  }

  void release(const std::string &key) {
    lakh::pg::with_connection(*db_, [&](pqxx::connection &c) {
      pqxx::nontransaction n(c);
      n.exec_params("DELETE FROM gateway.signups WHERE idempotency_key = $1 AND state = 'started'",
                    key);
    });
  }

  static reply replay(std::int64_t tenant) {
    reply r{200,
            {{"tenant_id", tenant},
             {"api_key", nullptr},
             {"note", "the API key was in the first answer to this Idempotency-Key and is "
                      "never shown again; a client that lost it asks an operator for a new one"}}};
    r.replayed = "true";
    return r;
  }

  lakh::pg::pool *db_;
  api_keys *keys_;
  v1::UserService::Stub *users_;
  const saas::service_auth *auth_;
  std::chrono::milliseconds deadline_;
};

} // namespace gateway
