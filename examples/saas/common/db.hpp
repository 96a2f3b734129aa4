#pragma once
// examples/saas/common/db.hpp: tenant-scoped transactions. Services connect through a pool
// whose connections `SET ROLE saas_app` (a role that is neither superuser nor table owner),
// and every transaction sets `app.tenant_id` transaction-locally before its first statement,
// so the row-level security policies of each schema apply to every query a service makes.

#include <lakh/pg/pool.hpp>
#include <lakh/pg/retry.hpp>

#include <pqxx/pqxx>

#include <cstdint>
#include <string>
#include <utility>

namespace saas {

inline constexpr const char *app_role = "saas_app";

/// The role services act as, created if missing (idempotent; serialized by an advisory lock).
inline void ensure_app_role(lakh::pg::pool &admin) {
  lakh::pg::with_connection(admin, [](pqxx::connection &c) {
    pqxx::work w(c);
    w.exec("SELECT pg_advisory_xact_lock(hashtext('saas app role'))");
    if (w.exec("SELECT 1 FROM pg_roles WHERE rolname = 'saas_app'").empty()) {
      w.exec("CREATE ROLE saas_app NOLOGIN NOSUPERUSER NOBYPASSRLS");
    }
    w.commit();
  });
}

/// Pool options for a service: every connection acts as saas_app.
inline lakh::pg::pool_options service_pool(std::string url, std::size_t size) {
  lakh::pg::pool_options o;
  o.url = std::move(url);
  o.max_size = size;
  o.on_connect = [](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    n.exec("SET ROLE saas_app");
  };
  return o;
}

/// Runs fn(tx) in a transaction scoped to `tenant` (RLS), with lakh's retry of deadlocks,
/// serialization failures and lost connections.
template <class Fn>
auto in_tenant(lakh::pg::retrier &retry, lakh::pg::pool &p, std::int64_t tenant, Fn &&fn) {
  return retry.run(p, [&](pqxx::work &w) {
    w.exec_params("SELECT set_config('app.tenant_id', $1, true)", std::to_string(tenant));
    return fn(w);
  });
}

/// One read-only statement scoped to `tenant` in ONE round trip (in_tenant takes four: BEGIN,
/// set_config, the query, COMMIT). PostgreSQL runs the statements of one simple-query message
/// in a single implicit transaction, so "SELECT set_config(.., true); <select>" sets the tenant
/// for that transaction only and returns the select's rows. `select` is sent as text: build it
/// only from integers and pqxx quote()d values. Lost connections are not retried here (the
/// caller answers UNAVAILABLE).
inline pqxx::result tenant_read(lakh::pg::pool &p, std::int64_t tenant, const std::string &select) {
  return lakh::pg::with_connection(p, [&](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    return n.exec("SELECT set_config('app.tenant_id', '" + std::to_string(tenant) + "', true); " +
                  select);
  });
}

/// Enables and forces row-level security on `table` with the tenant policy (idempotent).
inline void tenant_policy(pqxx::work &w, const std::string &table) {
  w.exec("ALTER TABLE " + table + " ENABLE ROW LEVEL SECURITY");
  w.exec("ALTER TABLE " + table + " FORCE ROW LEVEL SECURITY");
  const auto dot = table.find('.');
  const std::string policy = table.substr(dot + 1) + "_tenant";
  if (w.exec_params("SELECT 1 FROM pg_policies WHERE schemaname || '.' || tablename = $1 AND "
                    "policyname = $2",
                    table, policy)
          .empty()) {
    w.exec("CREATE POLICY " + policy + " ON " + table +
           " USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint) "
           "WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)");
  }
  w.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON " + table + " TO saas_app");
}

} // namespace saas
