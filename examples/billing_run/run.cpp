// examples/billing_run/run.cpp: `run`, the whole billing run against the local servers, in
// steps: a fresh database, the worker processes and the relay, the load, the waits for the
// jobs and the events, verify, and the report.
#include "billing.hpp"
#include "commands.hpp"
#include "report.hpp"
#include "supervisor.hpp"

#include <lakh/pg/connection.hpp>
#include <lakh/pg/conninfo.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>

namespace billing_run {

namespace {

using namespace std::chrono_literals;

/// Creates the database `name` afresh (so that the run's deadlock count in
/// pg_stat_database is its own) and returns `url` pointed at it.
std::string create_database(const std::string &url, const std::string &name) {
  {
    auto admin = lakh::pg::connect(url);
    pqxx::nontransaction n(*admin);
    n.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
    n.exec("CREATE DATABASE " + name);
  }
  return lakh::pg::with_database(url, name);
}

std::string make_stats_dir() {
  char tmpl[] = "/tmp/lakh-billing-run.XXXXXX";
  return ::mkdtemp(tmpl) != nullptr ? tmpl : "/tmp";
}

supervisor_options supervisor_options_of(const run_opts &o, std::string url, std::string stats_dir,
                                         std::string outbox_store) {
  supervisor_options s;
  s.database_url = std::move(url);
  s.outbox_store = std::move(outbox_store);
  s.workers = o.workers;
  s.lease_ms = o.lease_ms;
  s.order = o.order;
  s.stats_dir = std::move(stats_dir);
  s.chaos = o.chaos;
  s.chaos_interval_ms = o.chaos_interval_ms;
  s.services_script = o.services_script;
  s.quiet = o.quiet;
  s.rows = o.rows;
  s.chunks = (o.rows + o.batch - 1) / o.batch;
  return s;
}

/// The counts as text, for a failure message.
std::string counts_text(lakh::pg::pool &p) {
  const auto k = billing::read_counts(p);
  return k ? "jobs done " + std::to_string(k->jobs_done) + ", invoices " +
                 std::to_string(k->invoices) + ", events counted " + std::to_string(k->events) +
                 ", outbox rows " + std::to_string(k->outbox_rows)
           : std::string("counts unreadable");
}

/// Polls `done` every 20 ms until it holds. @throws std::runtime_error naming `what` and the
/// run's state when a worker failed, an event was parked (it would never be counted), the
/// deadline passed or the run was interrupted.
void wait_for(const std::function<bool()> &done, const char *what, const supervisor &sup,
              lakh::pg::pool &p, billing::relay_threads &relay, clock::time_point deadline,
              std::stop_token st) {
  while (!done()) {
    if (const auto failed = sup.failure(); !failed.empty()) {
      throw std::runtime_error("billing_run run: " + failed);
    }
    const auto *m = relay.metrics();
    const bool parked = m != nullptr && m->parked.value() != 0;
    if (parked || clock::now() > deadline || st.stop_requested()) {
      relay.stop(); // its threads joined: their counters and last error are read safely
      throw std::runtime_error(std::string("billing_run run: ") +
                               (parked                ? "events were parked"
                                : st.stop_requested() ? "interrupted"
                                                      : "timed out") +
                               " while waiting for " + what + " (" + counts_text(p) + "; " +
                               relay.describe() + ")");
    }
    std::this_thread::sleep_for(20ms);
  }
}

/// Worker backends flush their statistics when they exit: waits (up to 5 s) until they are
/// gone, so that pg_stat_database counts their deadlocks.
void wait_for_worker_sessions(lakh::pg::pool &p) {
  for (int i = 0; i < 100; ++i) {
    const auto left = lakh::pg::with_connection(p, [](pqxx::connection &cn) {
      pqxx::nontransaction t(cn);
      return t
          .exec("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'billing_run work'")[0][0]
          .as<int>();
    });
    if (left == 0) {
      return;
    }
    std::this_thread::sleep_for(50ms);
  }
}

/// The run from the load on, with the workers and the relay running: fills `f`.
void load_work_verify(const run_opts &o, lakh::pg::pool &p, supervisor &sup,
                      billing::relay_threads &relay, clock::time_point t0,
                      std::atomic<std::uint64_t> &loaded, run_figures &f, std::stop_token st) {
  const auto deadline = t0 + std::chrono::seconds(o.timeout_s);
  f.load = billing::load(p, o.seed, o.rows, o.batch, 2, o.loaders, &loaded);
  f.load_s = seconds_since(t0);
  auto jobs_done = [&p] {
    try {
      return billing::all_done(p);
    } catch (const std::exception &) {
      return false; // the server is restarting: ask again
    }
  };
  wait_for(jobs_done, "the workers", sup, p, relay, deadline, st);
  f.work_s = seconds_since(t0);
  sup.stop_workers();
  auto events_counted = [&p] {
    const auto k = billing::read_counts(p);
    return k && k->outbox_rows == 0 && k->events == k->invoices;
  };
  wait_for(events_counted, "the invoice events", sup, p, relay, deadline, st);
  f.events_s = seconds_since(t0);
  sup.stop_monitor();
  relay.stop();
  const auto v0 = clock::now();
  f.verify = billing::verify(p);
  billing::check_stream(f.verify, relay.js, relay.names);
  f.verify_s = seconds_since(v0);
  f.total_s = seconds_since(t0);
}

/// The run is over: its wal slot goes, since a slot no relay reads keeps every WAL segment
/// from its position on (the database stays, for verify).
void drop_wal_slot(lakh::pg::outbox &box) noexcept {
  if (box.store() == lakh::pg::outbox_store::wal) {
    try {
      (void)box.drop_wal_slot();
    } catch (const std::exception &e) {
      std::fprintf(stderr, "billing_run: the wal slot was not dropped: %s\n", e.what());
    }
  }
}

} // namespace

int cmd_run(const common_opts &c, const run_opts &o, std::stop_token st) {
  const auto setup0 = clock::now();
  const std::string url = create_database(c.database_url, o.database);
  auto p = billing::make_pool(url, o.loaders + 4, "billing_run run");
  billing::create_schema(p, true, c.store());
  const auto n = billing::names_of(p);
  lakh::nats::jetstream js(c.nats_url);
  billing::ensure_stream(js, n, true, c.replicas());
  const auto deadlocks0 = billing::read_deadlocks(p);
  const std::string stats_dir = make_stats_dir();
  run_figures f;
  f.setup_s = seconds_since(setup0);

  const auto t0 = clock::now();
  std::atomic<std::uint64_t> loaded{0};
  supervisor sup(p, supervisor_options_of(o, url, stats_dir, c.outbox_store), t0, loaded);
  billing::relay_threads relay(p, js, n, c.store());
  f.outbox_store = c.outbox_store;
  nlohmann::json report;
  try {
    sup.start_workers();
    relay.start();
    sup.start_monitor();
    load_work_verify(o, p, sup, relay, t0, loaded, f, st);
    wait_for_worker_sessions(p);
    f.deadlocks = billing::read_deadlocks(p) - deadlocks0;
    f.workers = collect_worker_reports(sup.stats_files());
    ::rmdir(stats_dir.c_str());
    f.redelivered = relay.consumer_stats.redelivered;
    f.faults = sup.faults();
    if (o.json != "-") { // --json alone: the JSON on stdout, instead of the text
      print_report(o, f);
    }
    report = to_json(o, f);
  } catch (...) {
    sup.stop_monitor();
    relay.stop();
    sup.kill_workers();
    drop_wal_slot(relay.box);
    throw;
  }
  drop_wal_slot(relay.box);
  if (o.json == "-") {
    std::printf("%s\n", report.dump(2).c_str());
  } else if (!o.json.empty()) {
    std::ofstream(o.json) << report.dump(2) << "\n";
  }
  return passed(o, f) ? 0 : 1;
}

} // namespace billing_run
