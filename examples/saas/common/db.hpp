#pragma once
// examples/saas/common/db.hpp: a service's database access with least privilege.
//   - Each service logs in as its own role, saas_<service>: LOGIN, NOSUPERUSER, NOBYPASSRLS,
//     owning nothing, so every row-level security policy applies to it and there is no
//     superuser session to RESET ROLE back to. migrate() creates the role if missing, sets its
//     timeouts in this database (idle in transaction, lock wait, statement), and applies the
//     service's schema.sql, as the database owner (DATABASE_OWNER_URL), once at startup.
//   - check_least_privilege() refuses to start a service whose login role could bypass RLS
//     (superuser, BYPASSRLS, or REPLICATION, which streams every table's changes).
//   - in_tenant() scopes a transaction to a tenant: app.tenant_id is set transaction-locally
//     before the first statement, and the policies of schema.sql compare it with tenant_id.

#include <lakh/pg/pool.hpp>
#include <lakh/pg/retry.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace saas {

/// The login role of a service: "saas_<service>".
inline std::string role_of(std::string_view service) {
  return "saas_" + std::string(service);
}

/// Timeouts of every service role in this database: a transaction left idle (a bug, a
/// paused process) is ended by the server; no statement or lock wait runs unbounded.
inline constexpr const char *role_timeouts[][2] = {
    {"idle_in_transaction_session_timeout", "10s"},
    {"lock_timeout", "5s"},
    {"statement_timeout", "30s"},
};

/// As the owner (`owner` pool): creates `role` if missing (LOGIN NOSUPERUSER NOBYPASSRLS
/// NOCREATEDB NOCREATEROLE), sets its timeouts in the current database, runs `sql` (the
/// service's schema.sql: idempotent DDL with its own GRANTs) and then `more(w)`, all in one
/// transaction serialized by an advisory lock named after the schema.
inline void migrate(lakh::pg::pool &owner, const std::string &role, const std::string &schema,
                    std::string_view sql, const std::function<void(pqxx::work &)> &more = {}) {
  lakh::pg::with_connection(owner, [&](pqxx::connection &c) {
    pqxx::work w(c);
    w.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", "saas migrate " + schema);
    // Roles are cluster-wide: two databases (two test platforms) may create one at once.
    w.exec("DO $$ BEGIN CREATE ROLE " + w.quote_name(role) +
           " LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; EXCEPTION WHEN "
           "duplicate_object OR unique_violation THEN NULL; END $$");
    const auto db = w.exec("SELECT current_database()")[0][0].as<std::string>();
    for (const auto &[name, value] : role_timeouts) {
      w.exec("ALTER ROLE " + w.quote_name(role) + " IN DATABASE " + w.quote_name(db) + " SET " +
             name + " = " + w.quote(value));
    }
    w.exec("GRANT CONNECT ON DATABASE " + w.quote_name(db) + " TO " + w.quote_name(role));
    w.exec(std::string(sql));
    if (more) {
      more(w);
    }
    w.commit();
  });
}

/// @throws std::runtime_error when the pool's login role is a superuser, bypasses row-level
/// security, may replicate (a replication connection reads past RLS), or is not `role` (a
/// misconfigured DATABASE_URL would silently disable RLS).
inline void check_least_privilege(lakh::pg::pool &p, const std::string &role) {
  lakh::pg::with_connection(p, [&](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    auto r = n.exec("SELECT current_user, rolsuper, rolbypassrls, rolreplication FROM pg_roles "
                    "WHERE rolname = current_user");
    const auto user = r.at(0)[0].as<std::string>();
    if (user != role || r[0][1].as<bool>() || r[0][2].as<bool>() || r[0][3].as<bool>()) {
      throw std::runtime_error("DATABASE_URL logs in as \"" + user +
                               "\"; the service must log in as " + role +
                               " (NOSUPERUSER, NOBYPASSRLS, NOREPLICATION): row-level security "
                               "depends on it");
    }
  });
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

/// in_tenant with the transaction batched (lakh::pg::batched_transaction): BEGIN and the
/// tenant's set_config travel with fn's first statement that returns rows, so a transaction
/// of one read and one write costs two round trips, not four.
template <class Fn>
auto in_tenant_batched(lakh::pg::retrier &retry, lakh::pg::pool &p, std::int64_t tenant, Fn &&fn) {
  return retry.run_batched(p, [&](lakh::pg::batched_transaction &tx) {
    tx.defer("SELECT set_config('app.tenant_id', '" + std::to_string(tenant) + "', true)");
    return fn(tx);
  });
}

/// One read-only statement scoped to `tenant` in ONE round trip (in_tenant takes four: BEGIN,
/// set_config, the query, COMMIT). PostgreSQL runs the statements of one simple-query message
/// in a single implicit transaction, so "SELECT set_config(.., true); <select>" sets the tenant
/// for that transaction only and returns the select's rows. `select` is sent as text: build it
/// only from integers and pqxx quote()d values. Lost connections are not retried here (the
/// caller answers UNAVAILABLE).
///
/// With a `deadline` (the call's: grpc::ServerContextBase::deadline()), the wait for a
/// connection ends at the deadline or at the pool's acquire_timeout, whichever comes first
/// (acquire_error, status timeout), and the statement at the deadline:
/// its statement_timeout is set, transaction-locally in the same message, to the time left
/// (pqxx::sql_error, SQLSTATE 57014). A thread that runs it is never held past its caller's
/// deadline, as pgx cancels a query with its context.
inline pqxx::result tenant_read(
    lakh::pg::pool &p, std::int64_t tenant, const std::string &select,
    std::chrono::system_clock::time_point deadline = std::chrono::system_clock::time_point::max()) {
  using clock = std::chrono::system_clock;
  const bool bounded = deadline != clock::time_point::max();
  auto read = [&](pqxx::connection &c) {
    std::string sql = "SELECT set_config('app.tenant_id', '" + std::to_string(tenant) + "', true)";
    if (bounded) {
      // At least 1 ms: 0 would mean no timeout at all.
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
      sql += ", set_config('statement_timeout', '" +
             std::to_string(std::max<std::int64_t>(left.count(), 1)) + "', true)";
    }
    pqxx::nontransaction n(c);
    return n.exec(sql + "; " + select);
  };
  return lakh::pg::run_on_lease(p, p.acquire_default_until(deadline), read);
}

/// A statement a service prepares on each of its connections (service_spec::prepared), so
/// that PostgreSQL parses and analyses it once per connection, not per call, and plans it
/// once it keeps a generic plan. Run it as "EXECUTE name(args)", e.g. in tenant_read.
struct prepared_statement {
  std::string name; ///< an SQL identifier, unique in the service
  std::string sql;  ///< the statement, with $1.. for the arguments
};

/// Prepares `statements` on `c` in one message (a pool's on_connect).
inline void prepare_all(pqxx::connection &c, const std::vector<prepared_statement> &statements) {
  std::string sql;
  for (const auto &s : statements) {
    sql += "PREPARE " + s.name + " AS " + s.sql + ";\n";
  }
  if (!sql.empty()) {
    pqxx::nontransaction n(c);
    n.exec(sql);
  }
}

} // namespace saas
