#pragma once
// examples/saas/common/housekeeping.hpp: what keeps a service's tables from growing forever.
// Every table the services write for their guarantees (idempotency records, inbox ids, the
// gateway's signups) has a retention. The purge is a periodic job of lakh::pg::job_worker in
// the service's own queue table, <schema>.jobs: one job per PURGE_INTERVAL_MS slot (whole
// seconds, 60 s by default) across every replica of the service, run by one of them; a purge
// that fails is kept in the job's last_error and retried with backoff.
// Outboxes need nothing here: their relays delete what they published.

#include "log.hpp"

#include <lakh/pg/job_worker.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <string>
#include <utility>

namespace saas {

/// As the database owner: <schema>.jobs, and what the service's `role` needs of it (the
/// grants of docs/job_queue.md).
inline void create_jobs_table(lakh::pg::pool &owner, const std::string &schema,
                              const std::string &role) {
  const std::string table = schema + ".jobs";
  lakh::pg::job_queue(owner, {table, false}).create_schema();
  lakh::pg::with_connection(owner, [&](pqxx::connection &c) {
    pqxx::work w(c);
    w.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON " + table + " TO " + role);
    w.exec("GRANT USAGE, SELECT ON SEQUENCE " + table + "_id_seq, " + table + "_token_seq TO " +
           role);
    w.commit();
  });
}

/// Runs `purge` as the periodic job "purge" of queue "housekeeping" in <schema>.jobs, every
/// `interval` (rounded down to whole seconds, at least 1 s), from construction until
/// destruction; `purge` answers what it deleted ({"table": rows}, empty when nothing), which
/// is logged.
class housekeeping {
public:
  housekeeping(std::string service, lakh::pg::pool &db, const std::string &schema,
               std::chrono::milliseconds interval, std::function<json()> purge)
      : queue_(db, {schema + ".jobs", false}),
        worker_(db, queue_, options(interval),
                lakh::pg::job_handler([service = std::move(service), purge = std::move(purge)](
                                          const lakh::pg::claimed_job &, std::stop_token) {
                  try {
                    if (auto purged = purge(); !purged.empty()) {
                      log(service, "info", "purged", std::move(purged));
                    }
                  } catch (const std::exception &e) {
                    log(service, "warn", "purge failed; the job is retried", {{"error", e.what()}});
                    throw;
                  }
                })) {
    worker_.start();
  }

private:
  static lakh::pg::job_worker_options options(std::chrono::milliseconds interval) {
    using namespace std::chrono;
    const auto every = std::max(seconds(1), duration_cast<seconds>(interval));
    lakh::pg::job_worker_options o;
    o.queue = "housekeeping";
    o.workers = 1;
    o.listen = false; // the only jobs are periodic: polling finds them
    o.poll = std::min<milliseconds>(every, seconds(1));
    o.maintenance = std::min<milliseconds>(every, seconds(5));
    o.keep_done = std::max<milliseconds>(hours(24), 2 * every);
    o.periodic = {{"purge", every, "", 3}};
    return o;
  }

  lakh::pg::job_queue queue_;
  lakh::pg::job_worker worker_; // after queue_: stops first
};

} // namespace saas
