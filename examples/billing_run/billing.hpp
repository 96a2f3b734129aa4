#pragma once
// examples/billing_run/billing.hpp: the stages of the billing run (docs/case-study.md), each a
// function over one PostgreSQL database and (for events) one NATS JetStream server:
//
//   load    generator -> lakh::channel -> COPY, one transaction per chunk of rows that also
//           records the chunk and enqueues its job (lakh::pg::job_queue): a chunk and its job
//           exist together or not at all, and a retried chunk is skipped once committed.
//   work    lakh::pg::job_worker over the job queue (SKIP LOCKED claims with a lease and a
//           fencing token, heartbeats, rescue of a dead worker's jobs): per job, in ONE
//           transaction, its rows are read and rated with the spec's arithmetic
//           (lakh::fake::charge_cents), per-tenant advisory locks taken in sorted order, the
//           per-tenant totals upserted, an invoice written for each tenant whose period just
//           became complete (its row count reached the manifest's) with an invoice.issued
//           event through the outbox, and the job's fenced completion with the next claim.
//           A worker whose lease was taken over cannot complete, so its transaction rolls
//           back: nothing counts twice.
//   relay   lakh::pg::outbox_relay -> lakh::nats::outbox_publisher (Nats-Msg-Id = event id);
//           a pull consumer counts each invoice event once through lakh::pg::inbox.
//   verify  the spec's totals recomputed three ways: by the generator, from the per-tenant
//           totals the workers wrote, and from the raw usage rows by SQL (its own copy of the
//           rating rule, on purpose: an independent path), plus invoices == tenants == events.
//
// The period manifest (rows per tenant for January) is written by load before the rows, as
// an ingest ledger would know it; a tenant's invoice is due when its count is reached.

#include <lakh/channel.hpp>
#include <lakh/fake/usage.hpp>
#include <lakh/metrics.hpp>
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/pg/advisory_lock.hpp>
#include <lakh/pg/array.hpp>
#include <lakh/pg/copy.hpp>
#include <lakh/pg/inbox.hpp>
#include <lakh/pg/job_queue.hpp>
#include <lakh/pg/job_worker.hpp>
#include <lakh/pg/outbox.hpp>
#include <lakh/pg/pool.hpp>
#include <lakh/pg/retry.hpp>
#include <lakh/task_group.hpp>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

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
inline lakh::pg::outbox make_outbox(lakh::pg::pool &p) {
  return lakh::pg::outbox(p, {"billing.outbox", true});
}
inline lakh::pg::inbox make_inbox(lakh::pg::pool &p) {
  return lakh::pg::inbox(p, {"billing.inbox"});
}

/// Creates the schema `billing` and its tables (idempotent). With `reset`, drops it first.
inline void create_schema(lakh::pg::pool &p, bool reset) {
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
  make_outbox(p).create_schema();
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

// ---------------------------------------------------------------------------------------
// load

struct load_result {
  std::uint64_t rows_copied = 0;    ///< rows written by this call (skipped chunks excluded)
  std::uint64_t chunks_copied = 0;  ///< chunks committed by this call
  std::uint64_t chunks_skipped = 0; ///< chunks found committed already (a resumed load)
  double seconds = 0;
};

namespace detail {

/// A row_source over one batch, for copy_from: yields the batch once.
struct one_batch {
  const lakh::fake::usage_batch *batch;
  bool sent = false;
  std::optional<std::span<const lakh::fake::usage_row>> recv() {
    if (sent) {
      return std::nullopt;
    }
    sent = true;
    return std::span<const lakh::fake::usage_row>(batch->rows);
  }
  void close() noexcept {}
};

} // namespace detail

/// Loads rows [0, rows) of `seed` in chunks of `batch` rows (one job each): `generators`
/// threads stream batches into a bounded channel, `loaders` threads COPY each batch in its own
/// transaction with its chunk record and job. Resumable: committed chunks are skipped, and a
/// second load with other parameters is refused.
/// @throws std::invalid_argument on rows == 0, batch == 0 or > 1,000,000, generators or
/// loaders == 0; std::runtime_error if the database holds a load with other parameters;
/// pqxx errors that outlast the retrier.
inline load_result load(lakh::pg::pool &p, std::uint64_t seed, std::uint64_t rows,
                        std::uint32_t batch, unsigned generators, unsigned loaders,
                        std::atomic<std::uint64_t> *progress = nullptr) {
  if (rows == 0 || batch == 0 || batch > 1'000'000 || generators == 0 || loaders == 0) {
    throw std::invalid_argument("billing_run load: rows (" + std::to_string(rows) +
                                ") and batch (" + std::to_string(batch) +
                                ", at most 1000000) and the thread counts must be positive");
  }
  const auto t0 = clock::now();
  auto retry = patient_retrier();
  // Parameters and the period manifest first (one transaction): a rerun with the same
  // parameters resumes, one with others is refused.
  retry.run(p, [&](pqxx::work &w) {
    w.exec("LOCK TABLE billing.params IN EXCLUSIVE MODE");
    auto r = w.exec("SELECT seed, rows, batch FROM billing.params");
    if (!r.empty()) {
      if (r[0][0].as<std::uint64_t>() != seed || r[0][1].as<std::uint64_t>() != rows ||
          r[0][2].as<std::uint32_t>() != batch) {
        throw std::runtime_error(
            std::string("billing_run load: this database already holds a load of ") +
            r[0][1].c_str() + " rows (seed " + r[0][0].c_str() + ", batch " + r[0][2].c_str() +
            "); use another database or `run` (which starts afresh)");
      }
      return;
    }
    w.exec_params("INSERT INTO billing.params (seed, rows, batch) VALUES ($1, $2, $3)",
                  static_cast<std::int64_t>(seed), static_cast<std::int64_t>(rows),
                  static_cast<std::int64_t>(batch));
    const auto expected = lakh::fake::reference_totals(seed, rows);
    std::string tenants = "{";
    std::string counts = "{";
    for (std::uint32_t t = 0; t < lakh::fake::tenant_count; ++t) {
      const auto n = expected.tenant(t).rows;
      if (n != 0) {
        tenants += (tenants.size() > 1 ? "," : "") + std::to_string(t);
        counts += (counts.size() > 1 ? "," : "") + std::to_string(n);
      }
    }
    w.exec_params("INSERT INTO billing.manifest SELECT * FROM unnest($1::int[], $2::bigint[])",
                  tenants + "}", counts + "}");
  });

  const std::uint64_t chunks = (rows + batch - 1) / batch;
  lakh::channel<lakh::fake::usage_batch> ch(2 * loaders);
  std::atomic<std::uint64_t> next_chunk{0};
  std::atomic<std::uint64_t> copied{0};
  std::atomic<std::uint64_t> copied_chunks{0};
  std::atomic<std::uint64_t> skipped{0};
  auto queue = make_queue(p);
  {
    lakh::task_group producers;
    lakh::task_group consumers;
    for (unsigned g = 0; g < generators; ++g) {
      producers.spawn([&](std::stop_token st) {
        // Chunks are claimed one at a time so that the channel fills in chunk order.
        for (std::uint64_t c; (c = next_chunk.fetch_add(1)) < chunks;) {
          const std::uint64_t first = c * batch;
          const std::uint64_t n = std::min<std::uint64_t>(batch, rows - first);
          if (lakh::fake::stream_usage(ch, seed, first, n, batch, st) != lakh::status::ok) {
            return;
          }
        }
      });
    }
    for (unsigned l = 0; l < loaders; ++l) {
      consumers.spawn([&](std::stop_token st) {
        while (auto b = ch.recv(st)) {
          const std::uint64_t chunk = b->first_index / batch;
          const auto first_id = static_cast<std::int64_t>(b->first_index + 1);
          const auto last_id = static_cast<std::int64_t>(b->first_index + b->rows.size());
          const bool done = retry.run(
              p,
              [&](pqxx::work &w) {
                // Serialize the (rare) race of two loaders on one chunk; skip a committed chunk.
                w.exec_params("SELECT pg_advisory_xact_lock($1, $2)", tenant_lock_ns - 1,
                              static_cast<std::int32_t>(chunk));
                if (!w.exec_params("SELECT 1 FROM billing.chunks WHERE chunk = $1",
                                   static_cast<std::int64_t>(chunk))
                         .empty()) {
                  return false;
                }
                detail::one_batch src{&*b};
                lakh::pg::copy_from(
                    w, "billing.usage", {"id", "tenant_id", "user_id", "metric", "quantity", "ts"},
                    src, [](const lakh::fake::usage_row &r) {
                      return std::make_tuple(static_cast<std::int64_t>(r.id), r.tenant_id,
                                             r.user_id, static_cast<int>(r.kind), r.quantity, r.ts);
                    });
                const auto job = queue.enqueue(
                    w, {queue_name, std::to_string(first_id) + "," + std::to_string(last_id),
                        "chunk-" + std::to_string(chunk), std::chrono::milliseconds(0), 10});
                if (!job) {
                  throw std::logic_error("billing_run load: chunk " + std::to_string(chunk) +
                                         " has a live job but no chunk record");
                }
                w.exec_params("INSERT INTO billing.chunks VALUES ($1, $2, $3, $4)",
                              static_cast<std::int64_t>(chunk), first_id, last_id, *job);
                return true;
              },
              st);
          if (done) {
            copied += b->rows.size();
            ++copied_chunks;
          } else {
            ++skipped;
          }
          if (progress != nullptr) {
            progress->fetch_add(b->rows.size());
          }
        }
      });
    }
    producers.wait();
    ch.close();
    consumers.wait();
  }
  retry.run(p, [&](pqxx::work &w) {
    const auto n = w.exec("SELECT count(*) FROM billing.chunks")[0][0].as<std::uint64_t>();
    if (n != chunks) {
      throw std::runtime_error("billing_run load: " + std::to_string(n) + " of " +
                               std::to_string(chunks) + " chunks committed");
    }
    w.exec("UPDATE billing.params SET loaded_at = coalesce(loaded_at, now())");
  });
  return {copied.load(), copied_chunks.load(), skipped.load(),
          std::chrono::duration<double>(clock::now() - t0).count()};
}

// ---------------------------------------------------------------------------------------
// work

/// How a worker takes its per-tenant locks.
enum class lock_order { sorted, unordered };

struct worker_options {
  std::chrono::milliseconds lease{5000};
  lock_order order = lock_order::sorted;
  bool until_idle = false; ///< exit when the load is complete and no job is left
};

struct worker_stats {
  std::uint64_t jobs = 0;   ///< jobs done
  std::uint64_t lost = 0;   ///< completions refused by the fence (a takeover): rolled back
  std::uint64_t errors = 0; ///< failed attempts recorded on their job (retried with backoff)
  std::vector<std::int64_t> job_ns; ///< per attempt: its transaction until the handler returned
  lakh::pg::retry_stats retries;

  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json by_cause = nlohmann::json::object();
    for (std::size_t c = 0; c < lakh::pg::retry_cause_count; ++c) {
      by_cause[std::string(lakh::pg::to_string(static_cast<lakh::pg::retry_cause>(c)))] =
          retries.retries[c];
    }
    return {{"jobs", jobs},
            {"lost", lost},
            {"errors", errors},
            {"job_ns", job_ns},
            {"retries", by_cause}};
  }
};

struct tenant_sum {
  std::int32_t tenant;
  std::int64_t rows;
  std::int64_t cents;
};

/// Reads a job's rows and rates them: per-tenant sums in the order tenants first appear.
inline std::vector<tenant_sum> rate_job(pqxx::transaction_base &t, std::int64_t first_id,
                                        std::int64_t last_id) {
  auto r = t.exec_params("SELECT tenant_id, metric, quantity FROM billing.usage WHERE id "
                         "BETWEEN $1 AND $2",
                         first_id, last_id);
  if (static_cast<std::int64_t>(r.size()) != last_id - first_id + 1) {
    throw std::runtime_error("billing_run work: rows " + std::to_string(first_id) + ".." +
                             std::to_string(last_id) + " hold " + std::to_string(r.size()) +
                             " rows, not " + std::to_string(last_id - first_id + 1));
  }
  std::vector<std::int32_t> slot(lakh::fake::tenant_count, -1);
  std::vector<tenant_sum> sums;
  for (const auto &row : r) {
    const auto tenant = row[0].as<std::int32_t>();
    const auto m = row[1].as<int>();
    const auto q = row[2].as<std::uint64_t>();
    if (tenant < 0 || tenant >= static_cast<std::int32_t>(lakh::fake::tenant_count) || m < 0 ||
        m >= static_cast<int>(lakh::fake::metric_count)) {
      throw std::runtime_error("billing_run work: a usage row outside the spec (tenant " +
                               std::to_string(tenant) + ", metric " + std::to_string(m) + ")");
    }
    auto &s = slot[static_cast<std::size_t>(tenant)];
    if (s < 0) {
      s = static_cast<std::int32_t>(sums.size());
      sums.push_back({tenant, 0, 0});
    }
    auto &sum = sums[static_cast<std::size_t>(s)];
    ++sum.rows;
    sum.cents +=
        static_cast<std::int64_t>(lakh::fake::charge_cents(static_cast<lakh::fake::metric>(m), q));
  }
  return sums;
}

/// Applies one job's sums in the caller's transaction: locks, upsert, invoices + events.
/// Returns the invoices written.
inline std::size_t apply_job(pqxx::transaction_base &w, lakh::pg::outbox &box, const names &n,
                             std::vector<tenant_sum> sums, lock_order order) {
  if (order == lock_order::sorted) {
    std::vector<lakh::pg::advisory_key> keys;
    keys.reserve(sums.size());
    for (const auto &s : sums) {
      keys.emplace_back(tenant_lock_ns, s.tenant);
    }
    lakh::pg::lock_all_advisory(w, std::move(keys)); // sorted: no cycle among workers
    std::sort(sums.begin(), sums.end(),
              [](const tenant_sum &a, const tenant_sum &b) { return a.tenant < b.tenant; });
  } else {
    // The mistake this example exists to show: locks in the order the rows happen to name
    // the tenants. Two workers with overlapping tenants wait for each other: PostgreSQL
    // detects the cycle after deadlock_timeout and aborts one (40P01), which retries.
    w.exec("SELECT count(pg_advisory_xact_lock(" + std::to_string(tenant_lock_ns) +
           ", t)) FROM unnest('" + lakh::pg::int_array(sums, &tenant_sum::tenant) +
           "'::int[]) AS t");
  }
  auto invoices = w.exec_params(
      "WITH up AS (INSERT INTO billing.tenant_totals AS t (tenant_id, rows, cents) "
      "SELECT * FROM unnest($1::int[], $2::bigint[], $3::bigint[]) "
      "ON CONFLICT (tenant_id) DO UPDATE SET rows = t.rows + excluded.rows, "
      "cents = t.cents + excluded.cents RETURNING t.tenant_id, t.rows, t.cents) "
      "INSERT INTO billing.invoices (tenant_id, period, rows, cents) "
      "SELECT up.tenant_id, $4, up.rows, up.cents FROM up JOIN billing.manifest m "
      "USING (tenant_id) WHERE up.rows = m.expected_rows "
      "RETURNING tenant_id, rows, cents",
      lakh::pg::int_array(sums, &tenant_sum::tenant), lakh::pg::int_array(sums, &tenant_sum::rows),
      lakh::pg::int_array(sums, &tenant_sum::cents), std::string(period));
  for (const auto &inv : invoices) {
    const nlohmann::json event = {{"tenant_id", inv[0].as<std::int64_t>()},
                                  {"period", period},
                                  {"rows", inv[1].as<std::int64_t>()},
                                  {"total_cents", inv[2].as<std::int64_t>()}};
    (void)box.enqueue(w, n.subject(), "tenant-" + std::string(inv[0].c_str()), event.dump());
  }
  return invoices.size();
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

/// A worker process's loop: a lakh::pg::job_worker with one thread over the queue until `st`
/// is stopped (or, with until_idle, until the load is complete and no job is left). Each job
/// is one transaction (rate_job, apply_job, the fenced completion and the next claim), run
/// again as a whole by patient_retrier() after a deadlock, a serialization failure or a lost
/// connection (a database restart); another error is recorded on the job and retried after
/// a backoff; a worker killed mid-job leaves it to the rescue after its lease.
/// @throws std::runtime_error for a server out of resources (SQLSTATE class 53), which no
/// retry can fix.
inline worker_stats work(lakh::pg::pool &p, const worker_options &opts, std::stop_token st) {
  auto queue = make_queue(p);
  auto box = make_outbox(p);
  auto retry = patient_retrier();
  const auto n = retry.run(
      p, [](pqxx::work &w) { return names_of(w); }, st);
  std::mutex m;
  std::vector<std::int64_t> job_ns;
  std::string fatal;
  std::stop_source stop;
  lakh::pg::job_worker_options o;
  o.queue = queue_name;
  o.workers = 1;
  o.lease = opts.lease;
  o.poll = std::chrono::milliseconds(100); // LISTEN/NOTIFY wakes it sooner
  o.backoff = std::chrono::milliseconds(200);
  o.maintenance = std::min<std::chrono::milliseconds>(opts.lease, std::chrono::seconds(1));
  o.retry = &retry;
  lakh::pg::job_worker worker(
      p, queue, o,
      lakh::pg::job_handler_tx(
          [&](const lakh::pg::claimed_job &job, pqxx::transaction_base &w, std::stop_token) {
            const auto t0 = clock::now();
            const auto comma = job.payload.find(',');
            const std::int64_t first_id = std::stoll(job.payload.substr(0, comma));
            const std::int64_t last_id = std::stoll(job.payload.substr(comma + 1));
            try {
              (void)apply_job(w, box, n, rate_job(w, first_id, last_id), opts.order);
            } catch (const pqxx::insufficient_resources &e) {
              // 53xxx (e.g. the lock table is full: one advisory lock per tenant of a job):
              // retrying cannot help. The job is failed with the text; the worker stops.
              std::lock_guard l(m);
              fatal = std::string(e.what()) +
                      " (each job holds one advisory lock per tenant it touches: raise "
                      "max_locks_per_transaction or bill smaller batches)";
              stop.request_stop();
              throw;
            }
            std::lock_guard l(m);
            job_ns.push_back(std::chrono::nanoseconds(clock::now() - t0).count());
          }));
  worker.start(stop.get_token());
  while (!st.stop_requested() && !stop.stop_requested()) {
    try {
      if (opts.until_idle && all_done(p)) {
        break;
      }
    } catch (const std::exception &) { // the database restarts: ask again
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  worker.stop();
  if (!fatal.empty()) {
    throw std::runtime_error(fatal);
  }
  worker_stats stats;
  stats.jobs = worker.done();
  stats.lost = worker.fenced();
  stats.errors = worker.failed();
  stats.job_ns = std::move(job_ns);
  stats.retries = retry.stats();
  return stats;
}

// ---------------------------------------------------------------------------------------
// relay and the counting consumer

struct relay_stats {
  std::uint64_t consumed = 0;    ///< first deliveries counted
  std::uint64_t redelivered = 0; ///< deliveries the inbox recognised (skipped)
  std::uint64_t errors = 0;
};

/// Creates the run's JetStream stream (deleting a previous one with `reset`).
inline void ensure_stream(lakh::nats::jetstream &js, const names &n, bool reset) {
  if (reset) {
    js.delete_stream(n.stream());
  }
  js.ensure_stream(
      {n.stream(), {n.subjects()}, lakh::nats::storage::file, std::chrono::minutes(10)});
}

/// The consumer: fetches invoice events and records each once (inbox + notified row in one
/// transaction), acking after the commit. Runs until `st` is stopped; survives broker and
/// database restarts (a failed batch is not acked, so it is redelivered and deduplicated).
inline void count_events(lakh::pg::pool &p, lakh::nats::jetstream &js, const names &n,
                         relay_stats &stats, std::stop_token st) {
  auto inbox = make_inbox(p);
  auto retry = patient_retrier();
  std::optional<lakh::nats::pull_consumer> consumer;
  while (!st.stop_requested()) {
    try {
      if (!consumer) {
        consumer.emplace(js, n.stream(), n.subject(), n.durable(), std::chrono::seconds(5));
      }
      auto batch = consumer->fetch(500, std::chrono::milliseconds(100));
      if (batch.empty()) {
        continue;
      }
      std::vector<std::string> ids;
      ids.reserve(batch.size());
      for (const auto &d : batch) {
        ids.push_back(d.id());
      }
      const auto [first, again] = retry.run(
          p,
          [&](pqxx::work &w) {
            // One statement records the batch's ids; one more applies the new ones' effects.
            const auto fresh = inbox.first_deliveries(w, consumer_name, ids);
            std::string tenants = "{";
            std::string cents = "{";
            std::uint64_t f = 0;
            for (std::size_t i = 0; i < batch.size(); ++i) {
              if (fresh[i]) {
                const auto e = nlohmann::json::parse(batch[i].payload());
                const char *sep = f == 0 ? "" : ",";
                tenants += sep + std::to_string(e.at("tenant_id").get<std::int64_t>());
                cents += sep + std::to_string(e.at("total_cents").get<std::int64_t>());
                ++f;
              }
            }
            if (f != 0) {
              // Were a tenant's event counted twice, verify would see deliveries > 1.
              w.exec_params("INSERT INTO billing.notified AS n (tenant_id, cents) "
                            "SELECT * FROM unnest($1::int[], $2::bigint[]) "
                            "ON CONFLICT (tenant_id) DO UPDATE SET deliveries = n.deliveries + 1",
                            tenants + "}", cents + "}");
            }
            return std::pair<std::uint64_t, std::uint64_t>{f, batch.size() - f};
          },
          st);
      for (auto &d : batch) {
        d.ack();
      }
      stats.consumed += first;
      stats.redelivered += again;
    } catch (const std::exception &e) {
      if (st.stop_requested()) {
        break;
      }
      ++stats.errors;
      std::fprintf(stderr, "billing_run consumer: %s (retrying)\n", e.what());
      consumer.reset();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
}

// ---------------------------------------------------------------------------------------
// verify

struct check {
  std::string what;
  std::string expected;
  std::string found;
  [[nodiscard]] bool ok() const { return expected == found; }
};

struct verify_result {
  std::vector<check> checks;
  std::uint64_t total_cents = 0;
  std::uint64_t checksum = 0;
  std::uint64_t invoices = 0;
  std::uint64_t events = 0;
  [[nodiscard]] bool ok() const {
    return std::all_of(checks.begin(), checks.end(), [](const check &c) { return c.ok(); });
  }
};

/// Row count, sums and checksum of (tenant, rows, cents) rows, the spec's way.
struct folded {
  std::uint64_t tenants = 0;
  std::uint64_t rows = 0;
  std::uint64_t cents = 0;
  std::uint64_t checksum = 0;
};

inline folded fold(const pqxx::result &r) {
  folded f;
  f.tenants = r.size();
  for (const auto &row : r) {
    const auto c = row[2].as<std::uint64_t>();
    f.rows += row[1].as<std::uint64_t>();
    f.cents += c;
    f.checksum += (row[0].as<std::uint64_t>() + 1) * c;
  }
  return f;
}

/// Recomputes the spec's figures from the database and compares them with the generator's.
/// @throws std::runtime_error if nothing was loaded; pqxx errors.
inline verify_result verify(lakh::pg::pool &p) {
  return lakh::pg::with_connection(p, [](pqxx::connection &c) {
    pqxx::read_transaction t(c); // one snapshot for every figure
    const auto prm = read_params(t);
    const auto expected = lakh::fake::reference_totals(prm.seed, prm.rows);
    verify_result v;
    auto add = [&](std::string what, auto want, auto got) {
      v.checks.push_back({std::move(what), std::to_string(want), std::to_string(got)});
    };
    const auto totals = fold(t.exec("SELECT tenant_id, rows, cents FROM billing.tenant_totals"));
    add("tenants billed", expected.tenants(), totals.tenants);
    add("rows billed (tenant totals)", expected.rows(), totals.rows);
    add("total_cents (tenant totals)", expected.total_cents(), totals.cents);
    add("checksum (tenant totals)", expected.checksum(), totals.checksum);
    // The raw rows, rated by SQL: an independent recomputation of the spec's rule.
    const auto raw = fold(
        t.exec("SELECT tenant_id, count(*), sum(CASE WHEN quantity <= 1000 THEN quantity * p "
               "ELSE 1000 * p + ((quantity - 1000) * p * 9) / 10 END) FROM billing.usage "
               "JOIN (VALUES (0, 1), (1, 3), (2, 2), (3, 50)) AS price(metric, p) USING (metric) "
               "GROUP BY tenant_id"));
    add("usage rows in the table", expected.rows(), raw.rows);
    add("checksum (usage rows rated by SQL)", expected.checksum(), raw.checksum);
    const auto invoices = fold(t.exec("SELECT tenant_id, rows, cents FROM billing.invoices"));
    add("invoices", expected.tenants(), invoices.tenants);
    add("checksum (invoices)", expected.checksum(), invoices.checksum);
    // rows = deliveries here: each tenant's event must have reached the business table once.
    const auto events = fold(t.exec("SELECT tenant_id, deliveries, cents FROM billing.notified"));
    add("invoice events counted (once each)", invoices.tenants, events.tenants);
    add("deliveries counted (duplicates would show here)", events.tenants, events.rows);
    add("checksum (invoice events)", invoices.checksum, events.checksum);
    auto jobs = t.exec("SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE "
                       "state <> 'done') FROM billing.jobs");
    add("jobs done", (prm.rows + prm.batch - 1) / prm.batch, jobs[0][0].as<std::uint64_t>());
    add("jobs not done", 0, jobs[0][1].as<std::uint64_t>());
    add("outbox events unpublished", 0,
        t.exec("SELECT count(*) FROM billing.outbox")[0][0].as<std::uint64_t>());
    v.total_cents = totals.cents;
    v.checksum = totals.checksum;
    v.invoices = invoices.tenants;
    v.events = events.tenants;
    return v;
  });
}

} // namespace billing
