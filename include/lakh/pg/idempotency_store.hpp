#pragma once
// lakh/pg/idempotency_store.hpp: lakh::pg::idempotency_store, idempotency records in a
// PostgreSQL table, for lakh::idempotency_guard (lakh/idempotency.hpp). Unlike the memory and
// Redis stores, the response is recorded in the SAME transaction as the business writes the
// operation makes (the guard hands it the pqxx::work), so after a crash either both are
// there (a retry replays) or neither is (a retry runs again); run_in() does the same in the
// caller's own transaction, for a service that receives the key across a hop.
// How a key is taken, the schema, and why it holds: docs/idempotency.md.

#include <lakh/idempotency.hpp>
#include <lakh/pg/batched_transaction.hpp>
#include <lakh/pg/detail/sql.hpp>
#include <lakh/pg/pool.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace lakh::pg {

/// Settings of an idempotency_store.
struct idempotency_store_options {
  /// Table name: a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes), optionally
  /// schema-qualified ("billing.idempotency_keys").
  std::string table = "lakh_idempotency_keys";
};

/// Idempotency records in a PostgreSQL table; satisfies lakh::idempotency_store.
///
/// Every member is thread-safe (each takes its own connection from the pool), and every
/// member that touches the database may throw pqxx errors and lakh::pg::acquire_error, and
/// allocates. Times come from the database clock (clock_timestamp()), so processes on
/// machines with skewed clocks agree about leases and expiry.
/// Memory ordering: a record's completion is committed in the operation's transaction; a
/// begin() that reads the completed record happens after that commit (READ COMMITTED), so it
/// replays exactly the committed response. Fairness: none among waiters.
class idempotency_store {
public:
  /// A store over `p` (which must outlive it) using `opts.table`. Touches no database.
  /// @throws std::invalid_argument if the table name is not a plain lower-case identifier.
  explicit idempotency_store(pool &p, idempotency_store_options opts = {})
      : pool_(&p),
        table_(detail::checked_table_name(std::move(opts.table), "lakh::pg::idempotency_store")) {}

  /// Create the table (and its expiry index) if it does not exist. Safe to call from many
  /// processes at once (serialised by an advisory transaction lock).
  /// Blocks: for a round trip (and while another creator holds the lock).
  void create_schema() {
    with_connection([&](pqxx::connection &c) {
      pqxx::work w(c);
      detail::exec(w, "SELECT pg_advisory_xact_lock(hashtext($1))", "lakh_idempotency:" + table_);
      w.exec("CREATE TABLE IF NOT EXISTS " + table_ +
             " ("
             "tenant text NOT NULL, "
             "key text NOT NULL, "
             "fingerprint bigint NOT NULL, "
             "token text NOT NULL, "
             "state text NOT NULL CHECK (state IN ('running', 'done')), "
             "locked_until timestamptz, "
             "expires_at timestamptz, "
             "status integer, "
             "body bytea, "
             "created_at timestamptz NOT NULL DEFAULT clock_timestamp(), "
             "PRIMARY KEY (tenant, key))");
      w.exec("CREATE INDEX IF NOT EXISTS " + index_name() + " ON " + table_ + " (expires_at)");
      w.commit();
    });
  }

  /// Take (tenant, key) for a request with fingerprint `fp`, or report what holds it: INSERT
  /// ... ON CONFLICT DO NOTHING takes a new key; a plain SELECT (never blocks) reads an
  /// existing one; an expired record is taken over with FOR UPDATE SKIP LOCKED + UPDATE.
  /// Low-level: idempotency_guard calls it; tests call it to simulate a crashed run.
  /// Blocks: for up to three round trips.
  [[nodiscard]] begin_result begin(std::string_view tenant, std::string_view key, std::uint64_t fp,
                                   const idempotency_options &opts) {
    const std::string t(tenant);
    const std::string k(key);
    const auto fpv = static_cast<std::int64_t>(fp);
    const auto lease_ms = static_cast<long long>(opts.lease.count());
    return with_connection([&](pqxx::connection &c) -> begin_result {
      for (int round = 0; round < 3; ++round) {
        auto token = lakh::detail::random_token();
        {
          pqxx::work w(c);
          auto r = detail::exec(w,
                                "INSERT INTO " + table_ +
                                    " (tenant, key, fingerprint, token, state, locked_until) "
                                    "VALUES ($1, $2, $3, $4, 'running', clock_timestamp() + "
                                    "$5 * interval '1 millisecond') "
                                    "ON CONFLICT (tenant, key) DO NOTHING RETURNING 1",
                                t, k, fpv, token, lease_ms);
          w.commit();
          if (!r.empty()) {
            return {begin_state::acquired, std::move(token), {}};
          }
        }
        pqxx::result found;
        {
          pqxx::work w(c);
          found = detail::exec(w,
                               "SELECT fingerprint, state, status, body, " + expired_sql() +
                                   " FROM " + table_ + " WHERE tenant = $1 AND key = $2",
                               t, k);
          w.commit();
          if (found.empty()) {
            continue; // released or purged in between: insert again
          }
        }
        const auto row = found[0];
        if (!row[4].as<bool>()) {
          if (row[0].as<std::int64_t>() != fpv) {
            return {begin_state::mismatch, {}, {}};
          }
          if (row[1].as<std::string>() == "done") {
            return {begin_state::completed, {}, {row[2].as<int>(), detail::bytea_string(row[3])}};
          }
          return {begin_state::running, {}, {}};
        }
        // Expired: take it over unless its owner's transaction still holds it.
        pqxx::work w(c);
        auto r = detail::exec(
            w,
            "WITH c AS (SELECT tenant, key FROM " + table_ +
                " WHERE tenant = $1 AND key = $2 AND " + expired_sql() +
                " FOR UPDATE SKIP LOCKED) "
                "UPDATE " +
                table_ +
                " AS t SET fingerprint = $3, token = $4, state = 'running', "
                "locked_until = clock_timestamp() + $5 * interval '1 millisecond', "
                "expires_at = NULL, status = NULL, body = NULL, created_at = clock_timestamp() "
                "FROM c WHERE t.tenant = c.tenant AND t.key = c.key RETURNING 1",
            t, k, fpv, token, lease_ms);
        w.commit();
        if (!r.empty()) {
          return {begin_state::acquired, std::move(token), {}};
        }
        return {begin_state::running, {}, {}};
      }
      return {begin_state::running, {}, {}};
    });
  }

  /// Run `fn(pqxx::work&)` (which returns a lakh::stored_response and must not commit) for
  /// the owner of `token`, record the response in the same transaction and commit. If the
  /// token no longer owns the record, fn does not run and in_progress is returned. If fn (or
  /// the commit) throws, the transaction is rolled back, the key is released (fn threw) and
  /// the exception rethrown. The transaction locks the record (SELECT ... FOR UPDATE) before
  /// fn runs, so no one can take the key over mid-run: lease_lost cannot happen here.
  /// Blocks: while fn runs and for the round trips.
  /// @throws whatever fn throws; pqxx errors (a broken connection during COMMIT leaves the
  /// outcome unknown: the record then is either done, or running until its lease expires).
  template <class Fn>
  execute_result execute(std::string_view tenant, std::string_view key, const std::string &token,
                         const idempotency_options &opts, Fn &&fn) {
    const std::string t(tenant);
    const std::string k(key);
    bool fn_threw = false;
    try {
      return with_connection([&](pqxx::connection &c) -> execute_result {
        pqxx::work w(c);
        auto own = detail::exec(w,
                                "SELECT token FROM " + table_ +
                                    " WHERE tenant = $1 AND key = $2 AND state = 'running' "
                                    "FOR UPDATE",
                                t, k);
        if (own.empty() || own[0][0].as<std::string>() != token) {
          w.abort();
          return {idempotency_outcome::in_progress, {}};
        }
        stored_response resp;
        try {
          resp = std::invoke(fn, w);
        } catch (...) {
          fn_threw = true;
          throw;
        }
        auto done =
            detail::exec(w,
                         "UPDATE " + table_ +
                             " SET state = 'done', status = $3, body = $4, locked_until = NULL, "
                             "expires_at = clock_timestamp() + $5 * interval '1 millisecond' "
                             "WHERE tenant = $1 AND key = $2 AND token = $6 AND state = 'running'",
                         t, k, resp.status, detail::bytea_param(resp.body),
                         static_cast<long long>(opts.ttl.count()), token);
        if (done.affected_rows() != 1) {
          throw std::logic_error("lakh::pg::idempotency_store::execute: record vanished while "
                                 "locked"); // cannot happen: we hold its row lock
        }
        w.commit();
        return {idempotency_outcome::executed, std::move(resp)};
      });
    } catch (...) {
      if (fn_threw) {
        (void)release(tenant, key, token);
      }
      throw;
    }
  }

  /// Run `fn(tx)` once per (tenant, key) in the CALLER's transaction `tx`, and record its
  /// response in `tx` (docs/idempotency.md, "Across a service hop"): the effect and its
  /// record commit together when the caller commits. Returns executed (fn ran; its response
  /// is recorded in tx), replayed (a committed record with the same fingerprint: fn did not
  /// run), mismatch (another fingerprint), or in_progress (a live two-step record of
  /// idempotency_guard holds the key). A concurrent duplicate in another transaction waits
  /// for this one to end (bound it with lock_timeout). Roll `tx` back to forget the key:
  /// e.g. when fn decided to refuse the request, throw from fn. The record expires opts.ttl
  /// after the key was taken (a transaction is short next to a TTL).
  /// Blocks: a round trip or two, while fn runs, and while a concurrent transaction holds
  /// the key.
  /// @throws std::invalid_argument if the key or tenant is invalid (nothing ran); pqxx
  /// errors; whatever fn throws (the caller's transaction must then roll back).
  ///
  /// `tx` is a pqxx transaction, or a lakh::pg::batched_transaction: then taking the key
  /// travels with what the caller queued before (BEGIN, a set_config) and recording the
  /// response waits for the commit, so the whole request costs round trips only for the key
  /// and fn's own statements.
  template <class Tx, class Fn>
  idempotency_result run_in(Tx &tx, std::string_view tenant, std::string_view key, std::uint64_t fp,
                            Fn &&fn, const idempotency_options &opts = {}) {
    validate_idempotency_key(key, "lakh::pg::idempotency_store::run_in");
    validate_idempotency_tenant(tenant, "lakh::pg::idempotency_store::run_in");
    const std::string t(tenant);
    const std::string k(key);
    const auto fpv = static_cast<std::int64_t>(fp);
    constexpr bool batched = std::is_base_of_v<batched_transaction, Tx>;
    // locked_until = now: should the caller commit without the response (fn threw and it
    // committed anyway), the record is expired at once instead of holding the key. expires_at
    // is set here, for when the response is recorded in this same transaction, so that the
    // record's UPDATE changes no indexed column (a HOT update: no new index entries).
    const std::string take =
        "INSERT INTO " + table_ +
        " AS r (tenant, key, fingerprint, token, state, locked_until, expires_at) VALUES ($1, "
        "$2, $3, 'in-transaction', 'running', clock_timestamp(), clock_timestamp() + $4 * "
        "interval '1 millisecond') ON CONFLICT (tenant, key) DO UPDATE "
        "SET fingerprint = excluded.fingerprint, token = excluded.token, state = 'running', "
        "locked_until = excluded.locked_until, expires_at = excluded.expires_at, "
        "status = NULL, body = NULL, created_at = clock_timestamp() WHERE " +
        expired_sql("r.") + " RETURNING 1";
    const std::string read = "SELECT fingerprint, state, status, body FROM " + table_ +
                             " WHERE tenant = $1 AND key = $2";
    const std::string record = "UPDATE " + table_ +
                               " SET state = 'done', status = $3, body = $4 "
                               "WHERE tenant = $1 AND key = $2";
    const auto ttl = static_cast<long long>(opts.ttl.count());
    pqxx::result taken;
    if constexpr (batched) {
      taken = tx.exec(detail::bind(take, {tx.quote(t), tx.quote(k), tx.quote(fpv), tx.quote(ttl)}));
    } else {
      taken = detail::exec(tx, take, t, k, fpv, ttl);
    }
    if (taken.empty()) { // a live record, now locked by this transaction
      pqxx::result r;
      if constexpr (batched) {
        r = tx.exec(detail::bind(read, {tx.quote(t), tx.quote(k)}));
      } else {
        r = detail::exec(tx, read, t, k);
      }
      const auto &row = r.at(0);
      if (row[0].as<std::int64_t>() != fpv) {
        return {idempotency_outcome::mismatch, {}};
      }
      if (row[1].as<std::string>() != "done") {
        return {idempotency_outcome::in_progress, {}};
      }
      return {idempotency_outcome::replayed, {row[2].as<int>(), detail::bytea_string(row[3])}};
    }
    stored_response resp = std::invoke(fn, tx);
    if constexpr (batched) {
      tx.defer(detail::bind(record, {tx.quote(t), tx.quote(k), tx.quote(resp.status),
                                     batched_transaction::quote_bytes(resp.body)}));
    } else {
      detail::exec(tx, record, t, k, resp.status, detail::bytea_param(resp.body));
    }
    return {idempotency_outcome::executed, std::move(resp)};
  }

  /// Delete the in-progress record owned by `token`; returns whether it did (false also when
  /// the database could not be reached: the lease then expires instead).
  /// Blocks: for a round trip. Never throws.
  bool release(std::string_view tenant, std::string_view key, const std::string &token) noexcept {
    try {
      return with_connection([&](pqxx::connection &c) {
        pqxx::work w(c);
        auto r = detail::exec(w,
                              "DELETE FROM " + table_ +
                                  " WHERE tenant = $1 AND key = $2 AND token = $3 AND "
                                  "state = 'running'",
                              std::string(tenant), std::string(key), token);
        w.commit();
        return r.affected_rows() == 1;
      });
    } catch (...) {
      return false;
    }
  }

  /// Delete every record whose TTL or lease has expired (idle or not locked); returns how
  /// many. Run it periodically (e.g. hourly) to bound the table.
  /// Blocks: for the DELETE.
  std::size_t purge_expired() {
    return with_connection([&](pqxx::connection &c) {
      pqxx::work w(c);
      auto r = w.exec("DELETE FROM " + table_ + " WHERE ctid IN (SELECT ctid FROM " + table_ +
                      " WHERE " + expired_sql() + " FOR UPDATE SKIP LOCKED)");
      w.commit();
      return static_cast<std::size_t>(r.affected_rows());
    });
  }

  /// The table name.
  [[nodiscard]] const std::string &table() const noexcept { return table_; }

private:
  std::string index_name() const {
    std::string base =
        table_.substr(table_.find('.') == std::string::npos ? 0 : table_.find('.') + 1);
    return base.substr(0, 50) + "_expires_idx";
  }

  static std::string expired_sql(const std::string &alias = "") {
    return "((" + alias + "state = 'running' AND " + alias +
           "locked_until <= clock_timestamp()) OR (" + alias + "state = 'done' AND " + alias +
           "expires_at <= clock_timestamp()))";
  }

  template <class F> auto with_connection(F &&f) -> std::invoke_result_t<F &, pqxx::connection &> {
    return lakh::pg::with_connection(*pool_, std::forward<F>(f));
  }

  pool *pool_;
  std::string table_;
};

static_assert(lakh::idempotency_store<idempotency_store>);

} // namespace lakh::pg
