#pragma once
// examples/billing_run/database.hpp: the billing run's tables (schema `billing`) and what every
// stage shares: the names derived from the database, the parameters of the load, a patient
// retrier, and the counts the run watches.

#include <lakh/backoff.hpp>
#include <lakh/fake/usage.hpp>
#include <lakh/pg/inbox.hpp>
#include <lakh/pg/job_queue.hpp>
#include <lakh/pg/outbox.hpp>
#include <lakh/pg/pool.hpp>
#include <lakh/pg/retry.hpp>

#include <pqxx/pqxx>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace billing {

using clock = std::chrono::steady_clock;

inline constexpr const char *queue_name = "usage";
inline constexpr const char *period = "2026-01";
inline constexpr std::int32_t tenant_lock_ns = 0x42494c4c; // "BILL": advisory lock namespace
inline constexpr const char *consumer_name = "invoice-counter";

/// Names derived from the database, so that two runs in two databases never share a stream.
struct names {
  std::string database;
  [[nodiscard]] std::string stream() const { return "BILLING_" + database; }
  [[nodiscard]] std::string subject() const { return database + ".invoice.issued"; }
  [[nodiscard]] std::string subjects() const { return database + ".invoice.>"; }
  [[nodiscard]] std::string durable() const { return "billing_counter_" + database; }
};

/// The current database's name (the stream and subject names derive from it).
inline names names_of(pqxx::transaction_base &t) {
  return names{t.exec("SELECT current_database()")[0][0].as<std::string>()};
}
inline names names_of(lakh::pg::pool &p) {
  return lakh::pg::with_connection(p, [](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    return names_of(n);
  });
}

inline lakh::pg::job_queue make_queue(lakh::pg::pool &p) {
  return lakh::pg::job_queue(p, {"billing.jobs"});
}
/// The invoice events' outbox: rows deleted once published (outbox_store::table), or logical
/// messages in the WAL with only parked events as rows (outbox_store::wal).
inline lakh::pg::outbox make_outbox(lakh::pg::pool &p, lakh::pg::outbox_store store) {
  return lakh::pg::outbox(p, {"billing.outbox", true, std::size_t{1} << 20, store});
}
inline lakh::pg::inbox make_inbox(lakh::pg::pool &p) {
  return lakh::pg::inbox(p, {"billing.inbox"});
}

/// Creates the schema `billing` and its tables (idempotent), and with the wal store the
/// outbox's publication and replication slot. With `reset`, drops the schema first.
inline void create_schema(lakh::pg::pool &p, bool reset, lakh::pg::outbox_store store) {
  lakh::pg::with_connection(p, [&](pqxx::connection &c) {
    pqxx::work w(c);
    w.exec("SELECT pg_advisory_xact_lock(hashtext('lakh billing_run schema'))");
    if (reset) {
      w.exec("DROP SCHEMA IF EXISTS billing CASCADE");
    }
    w.exec("CREATE SCHEMA IF NOT EXISTS billing");
    w.exec("CREATE TABLE IF NOT EXISTS billing.params (one bool PRIMARY KEY DEFAULT true "
           "CHECK (one), seed bigint NOT NULL, rows bigint NOT NULL, batch int NOT NULL, "
           "loaded_at timestamptz)");
    w.exec("CREATE TABLE IF NOT EXISTS billing.usage (id bigint PRIMARY KEY, tenant_id int NOT "
           "NULL, user_id int NOT NULL, metric smallint NOT NULL, quantity int NOT NULL, "
           "ts bigint NOT NULL)");
    w.exec("CREATE TABLE IF NOT EXISTS billing.chunks (chunk bigint PRIMARY KEY, first_id "
           "bigint NOT NULL, last_id bigint NOT NULL, job_id bigint NOT NULL)");
    w.exec("CREATE TABLE IF NOT EXISTS billing.manifest (tenant_id int PRIMARY KEY, "
           "expected_rows bigint NOT NULL)");
    w.exec("CREATE TABLE IF NOT EXISTS billing.tenant_totals (tenant_id int PRIMARY KEY, "
           "rows bigint NOT NULL, cents bigint NOT NULL)");
    w.exec("CREATE TABLE IF NOT EXISTS billing.invoices (tenant_id int PRIMARY KEY, period text "
           "NOT NULL, rows bigint NOT NULL, cents bigint NOT NULL, issued_at timestamptz NOT "
           "NULL DEFAULT now())");
    w.exec("CREATE TABLE IF NOT EXISTS billing.notified (tenant_id int PRIMARY KEY, cents bigint "
           "NOT NULL, deliveries int NOT NULL DEFAULT 1)");
    w.commit();
  });
  make_queue(p).create_schema();
  make_outbox(p, store).create_schema();
  make_inbox(p).create_schema();
}

/// What the run was asked to bill (written by load, read by the other stages).
struct params {
  std::uint64_t seed = lakh::fake::default_seed;
  std::uint64_t rows = 0;
  std::uint32_t batch = 0;
  bool loaded = false;
};

inline params read_params(pqxx::transaction_base &t) {
  auto r = t.exec("SELECT seed, rows, batch, loaded_at IS NOT NULL FROM billing.params");
  if (r.empty()) {
    throw std::runtime_error("billing_run: nothing loaded in this database (run `load` first)");
  }
  return {r[0][0].as<std::uint64_t>(), r[0][1].as<std::uint64_t>(), r[0][2].as<std::uint32_t>(),
          r[0][3].as<bool>()};
}

inline params read_params(lakh::pg::pool &p) {
  return lakh::pg::with_connection(p, [](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    return read_params(n);
  });
}

/// A retrier for transactions that must survive a server restart (connection_lost is retried
/// with backoff for up to ~30 s) and deadlocks (when locks are taken out of order).
inline lakh::pg::retrier patient_retrier() {
  lakh::pg::retry_options o;
  o.max_attempts = 60;
  o.backoff = lakh::backoff(std::chrono::milliseconds(20), std::chrono::milliseconds(1000));
  return lakh::pg::retrier(o);
}

/// A pool of `size` connections to `url`, each with application_name `app` (the run waits
/// for the workers' sessions by that name).
inline lakh::pg::pool make_pool(const std::string &url, std::size_t size, const std::string &app) {
  lakh::pg::pool_options o;
  o.url = url;
  o.max_size = size;
  o.on_connect = [app](pqxx::connection &c) {
    pqxx::nontransaction n(c);
    n.exec("SET application_name = " + n.quote(app));
  };
  return lakh::pg::pool(std::move(o));
}

/// Whether the load finished and every job is done (nothing pending or running).
inline bool all_done(lakh::pg::pool &p) {
  return lakh::pg::with_connection(p, [](pqxx::connection &c) {
    pqxx::nontransaction t(c);
    auto r = t.exec("SELECT (SELECT loaded_at IS NOT NULL FROM billing.params), "
                    "NOT EXISTS (SELECT 1 FROM billing.jobs WHERE state IN ('pending', "
                    "'running'))");
    return !r.empty() && !r[0][0].is_null() && r[0][0].as<bool>() && r[0][1].as<bool>();
  });
}

/// What the run watches: jobs done, invoices written, events counted, outbox rows left.
struct counts {
  std::int64_t jobs_done = -1;
  std::int64_t invoices = -1;
  std::int64_t events = -1;
  /// Unpublished or parked events; the wal store's rows are its parked events only (the rest
  /// are in the WAL: events == invoices says they were all published).
  std::int64_t outbox_rows = -1;
};

/// The counts now, or nothing while the server is unreachable (a restart: ask again later).
inline std::optional<counts> read_counts(lakh::pg::pool &p) {
  try {
    return lakh::pg::with_connection(p, [](pqxx::connection &c) {
      pqxx::nontransaction t(c);
      auto r = t.exec("SELECT (SELECT count(*) FROM billing.jobs WHERE state = 'done'), "
                      "(SELECT count(*) FROM billing.invoices), "
                      "(SELECT count(*) FROM billing.notified), "
                      "(SELECT count(*) FROM billing.outbox)");
      return counts{r[0][0].as<std::int64_t>(), r[0][1].as<std::int64_t>(),
                    r[0][2].as<std::int64_t>(), r[0][3].as<std::int64_t>()};
    });
  } catch (const std::exception &) {
    return std::nullopt;
  }
}

/// pg_stat_database.deadlocks of the current database.
inline std::int64_t read_deadlocks(lakh::pg::pool &p) {
  return lakh::pg::with_connection(p, [](pqxx::connection &c) {
    pqxx::nontransaction t(c);
    return t.exec("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")[0][0]
        .as<std::int64_t>();
  });
}

} // namespace billing
