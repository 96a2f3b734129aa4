#pragma once
// examples/billing_run/work.hpp: the work stage. lakh::pg::job_worker over the job queue
// (SKIP LOCKED claims with a lease and a fencing token, heartbeats, rescue of a dead worker's
// jobs): per job, in ONE transaction, its rows are read and rated with the spec's arithmetic
// (lakh::fake::charge_cents), per-tenant advisory locks taken in sorted order, the per-tenant
// totals upserted, an invoice written for each tenant whose period just became complete (its
// row count reached the manifest's) with an invoice.issued event through the outbox, and the
// job's fenced completion with the next claim. A worker whose lease was taken over cannot
// complete, so its transaction rolls back: nothing counts twice.

#include "database.hpp"

#include <lakh/fake/usage.hpp>
#include <lakh/pg/advisory_lock.hpp>
#include <lakh/pg/array.hpp>
#include <lakh/pg/job_worker.hpp>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace billing {

/// How a worker takes its per-tenant locks.
enum class lock_order { sorted, unordered };

struct worker_options {
  std::chrono::milliseconds lease{5000};
  lock_order order = lock_order::sorted;
  bool until_idle = false; ///< exit when the load is complete and no job is left
  /// Where the invoice events go: the same store as the schema's and the relay's (with wal,
  /// an event enqueued before the slot exists is never relayed).
  lakh::pg::outbox_store store = lakh::pg::outbox_store::table;
};

struct worker_stats {
  std::uint64_t jobs = 0;     ///< jobs done
  std::uint64_t lost = 0;     ///< completions refused by the fence (a takeover): rolled back
  std::uint64_t in_doubt = 0; ///< commits of unknown outcome: their jobs left to the lease
  std::uint64_t errors = 0;   ///< failed attempts recorded on their job (retried with backoff)
  std::vector<std::int64_t> job_ns; ///< per attempt: its transaction until the handler returned
  lakh::pg::retry_stats retries;

  [[nodiscard]] nlohmann::json to_json() const {
    nlohmann::json by_cause = nlohmann::json::object();
    for (std::size_t c = 0; c < lakh::pg::retry_cause_count; ++c) {
      by_cause[std::string(lakh::pg::to_string(static_cast<lakh::pg::retry_cause>(c)))] =
          retries.retries[c];
    }
    return {{"jobs", jobs},     {"lost", lost},     {"in_doubt", in_doubt},
            {"errors", errors}, {"job_ns", job_ns}, {"retries", by_cause}};
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
  auto r = lakh::pg::detail::exec(t,
                                  "SELECT tenant_id, metric, quantity FROM billing.usage WHERE id "
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
  auto invoices = lakh::pg::detail::exec(
      w,
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
  return lakh::pg::detail::row_count(invoices);
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
  auto box = make_outbox(p, opts.store);
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
  stats.in_doubt = worker.in_doubt();
  stats.errors = worker.failed();
  stats.job_ns = std::move(job_ns);
  stats.retries = retry.stats();
  return stats;
}

} // namespace billing
