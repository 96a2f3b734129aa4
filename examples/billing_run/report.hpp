#pragma once
// examples/billing_run/report.hpp: what `run` prints at the end (the figures, the checks, the
// faults survived, PASS or FAIL) and writes with --json (scripts/case-study reads the field
// names), and the worker processes' statistics it is built from.

#include "cli.hpp"
#include "load.hpp"
#include "supervisor.hpp"
#include "verify.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace billing_run {

/// The worker processes' statistics files merged (a worker killed with -9 leaves none: its
/// figures are lost).
struct worker_reports {
  std::vector<std::int64_t> job_ns;                  ///< every attempt's duration
  nlohmann::json retries = nlohmann::json::object(); ///< cause -> count
  std::uint64_t lost = 0;
  std::uint64_t in_doubt = 0;
  std::uint64_t errors = 0;
  unsigned reports = 0; ///< files read
};

/// Reads and removes each of `files` (a missing or half-written one is skipped).
worker_reports collect_worker_reports(const std::vector<std::string> &files);

/// Everything the report says about one run.
struct run_figures {
  std::string outbox_store = "table"; ///< --outbox-store
  double setup_s = 0;
  double load_s = 0;
  double work_s = 0;
  double events_s = 0;
  double verify_s = 0;
  double total_s = 0;
  billing::load_result load;
  billing::verify_result verify;
  std::int64_t deadlocks = 0;
  std::uint64_t redelivered = 0; ///< deliveries the inbox skipped
  worker_reports workers;
  fault_log faults;
};

/// Quantile q of nanosecond samples, in milliseconds (0 when there are none).
double quantile_ms(std::vector<std::int64_t> v, double q);

/// One line per check of verify: what, found, ok or MISMATCH (expected ...).
void print_checks(const billing::verify_result &v);

/// Whether the run passed: verify's checks, no deadlock with sorted locks, every event
/// counted, and with --chaos every fault injected.
bool passed(const run_opts &o, const run_figures &f);

/// The report on stdout, ending with "billing_run: PASS" or "billing_run: FAIL".
void print_report(const run_opts &o, const run_figures &f);

/// The figures for --json (scripts/case-study reads these field names).
nlohmann::json to_json(const run_opts &o, const run_figures &f);

} // namespace billing_run
