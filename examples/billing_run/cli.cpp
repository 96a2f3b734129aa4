// examples/billing_run/cli.cpp: the flags of lakh_billing_run's subcommands (cli.hpp).
#include "cli.hpp"

#include <servers.hpp>

#include <lakh/version.hpp>

#include <cctype>
#include <chrono>
#include <cstdlib>

namespace billing_run {

namespace {

std::string env_or(const char *name, const std::string &fallback) {
  const char *v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

void add_common(CLI::App *s, common_opts &c) {
  s->add_option("--database-url", c.database_url, "PostgreSQL URL (default: $DATABASE_URL)");
  s->add_option("--nats-url", c.nats_url, "NATS URL (default: $NATS_URL)");
}

void add_store(CLI::App *s, common_opts &c) {
  s->add_option("--outbox-store", c.outbox_store,
                "table: events as outbox rows; wal: as logical messages read from a "
                "replication slot (wal_level=logical, a role with REPLICATION). The same for "
                "load, work and relay")
      ->check(CLI::IsMember({"table", "wal"}))
      ->capture_default_str();
}

void add_replicas(CLI::App *s, common_opts &c) {
  s->add_option("--stream-replicas", c.stream_replicas,
                "copies of each event on a JetStream cluster's servers (3 survives the loss "
                "of one; default: the server's, or the stream's own)")
      ->check(CLI::Range(1, 5));
}

CLI::App *add_load(CLI::App &app, common_opts &c, load_opts &o) {
  auto *s = app.add_subcommand("load", "generate rows and COPY them in, one job per chunk");
  add_common(s, c);
  add_store(s, c);
  s->add_option("--rows", o.rows, "rows to load")->check(CLI::Range(1ULL, 100'000'000ULL));
  s->add_option("--seed", o.seed, "generator seed");
  s->add_option("--batch", o.batch, "rows per chunk (one job each)")
      ->check(CLI::Range(1U, 1'000'000U));
  s->add_option("--loaders", o.loaders, "COPY connections")->check(CLI::Range(1U, 64U));
  return s;
}

CLI::App *add_work(CLI::App &app, common_opts &c, work_opts &o) {
  auto *s = app.add_subcommand("work", "a worker process: claim jobs and bill them (start "
                                       "it N times, on any machine)");
  add_common(s, c);
  add_store(s, c);
  s->add_option("--lease-ms", o.lease_ms, "job lease")->check(CLI::Range(100U, 3'600'000U));
  s->add_option("--lock-order", o.order, "sorted (safe) or unordered (to see deadlocks)")
      ->check(CLI::IsMember({"sorted", "unordered"}));
  s->add_flag("--until-idle", o.until_idle, "exit once the load is done and no job is left");
  s->add_option("--stats-file", o.stats_file, "write statistics (JSON) here at exit");
  return s;
}

CLI::App *add_relay(CLI::App &app, common_opts &c, bool &until_done) {
  auto *s = app.add_subcommand("relay", "outbox -> JetStream, and count invoice events "
                                        "once through the inbox");
  add_common(s, c);
  add_store(s, c);
  add_replicas(s, c);
  s->add_flag("--until-done", until_done,
              "exit once every job is done and every invoice event counted");
  return s;
}

CLI::App *add_run(CLI::App &app, common_opts &c, run_opts &o) {
  auto *s = app.add_subcommand("run", "everything against the local servers: a fresh "
                                      "database, load, N workers, relay, verify");
  add_common(s, c);
  add_store(s, c);
  add_replicas(s, c);
  s->add_option("--rows", o.rows, "rows to bill")->check(CLI::Range(1ULL, 100'000'000ULL));
  s->add_option("--seed", o.seed, "generator seed");
  s->add_option("--batch", o.batch, "rows per job")->check(CLI::Range(1U, 1'000'000U));
  s->add_option("--workers", o.workers, "worker processes (default: cores)")
      ->check(CLI::Range(1U, 64U));
  s->add_option("--database", o.database, "database to create afresh on the server");
  s->add_option("--lock-order", o.order, "sorted (safe) or unordered (to see deadlocks)")
      ->check(CLI::IsMember({"sorted", "unordered"}));
  s->add_flag("--chaos", o.chaos, "kill -9 workers, restart PostgreSQL and NATS mid-run");
  s->add_option("--chaos-interval-ms", o.chaos_interval_ms,
                "time between worker kills (the first at the first job done; each waits for a "
                "job done since the last)")
      ->check(CLI::Range(50U, 600'000U));
  s->add_option("--services-script", o.services_script,
                "with --chaos: the script that restarts the servers (`<script> restart pg|nats`; "
                "default: scripts/services of the source tree this was built from)")
      ->capture_default_str();
  s->add_option("--lease-ms", o.lease_ms, "job lease")->check(CLI::Range(100U, 3'600'000U));
  s->add_option("--timeout", o.timeout_s, "give up after this many seconds")
      ->check(CLI::Range(1U, 86'400U));
  s->add_flag("--json{-}", o.json,
              "print the figures as JSON on stdout instead of the text; --json=FILE: the "
              "text, and the JSON written to FILE");
  s->add_flag("--quiet", o.quiet, "no progress lines");
  return s;
}

} // namespace

command_line::command_line()
    : app("lakh_billing_run: usage rows billed through PostgreSQL by worker processes "
          "(SKIP LOCKED jobs with leases, sorted per-tenant advisory locks, invoices "
          "through the outbox to NATS JetStream), verified against the spec",
          "lakh_billing_run") {
  common.database_url = env_or("DATABASE_URL", "");
  common.nats_url = env_or("NATS_URL", "nats://127.0.0.1:4222");
  run.services_script = lakh_examples::services_script;
  app.require_subcommand(1);
  app.set_version_flag("--version", lakh::version_string);
  app.set_help_all_flag("--help-all", "print the flags of every subcommand and exit");
  app.footer("`lakh_billing_run <subcommand> --help` lists a subcommand's flags.");
  load_cmd = add_load(app, common, load);
  work_cmd = add_work(app, common, work);
  relay_cmd = add_relay(app, common, relay_until_done);
  verify_cmd = app.add_subcommand("verify", "recompute the spec's figures from the database");
  add_common(verify_cmd, common);
  verify_cmd->add_flag("--stream", verify_stream,
                       "also check that the stream holds each invoice's event once");
  run_cmd = add_run(app, common, run);
}

lakh::pg::outbox_store common_opts::store() const {
  return outbox_store == "wal" ? lakh::pg::outbox_store::wal : lakh::pg::outbox_store::table;
}

billing::worker_options work_opts::worker() const {
  billing::worker_options o;
  o.lease = std::chrono::milliseconds(lease_ms);
  o.order = order == "unordered" ? billing::lock_order::unordered : billing::lock_order::sorted;
  o.until_idle = until_idle;
  return o;
}

void validate(const command_line &cl) {
  if (cl.common.database_url.empty()) {
    throw CLI::ValidationError("--database-url",
                               "no database: set DATABASE_URL or pass --database-url");
  }
  if (!*cl.run_cmd) {
    return;
  }
  const auto &db = cl.run.database;
  if (db.empty() || db.size() > 40 ||
      db.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos ||
      std::isdigit(static_cast<unsigned char>(db[0])) != 0) {
    throw CLI::ValidationError("--database", "'" + db +
                                                 "' must be 1..40 characters of a-z, 0-9 "
                                                 "and _, not starting with a digit");
  }
  if (cl.run.chaos && env_or("LAKH_SERVICES_DIR", "").empty()) {
    throw CLI::ValidationError("--chaos", "needs the servers of scripts/services (it restarts "
                                          "them): run under `scripts/services run`, which sets "
                                          "LAKH_SERVICES_DIR");
  }
}

} // namespace billing_run
