// examples/billing_run/report.cpp: the end-of-run report and its JSON (report.hpp).
#include "report.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <fstream>

namespace billing_run {

worker_reports collect_worker_reports(const std::vector<std::string> &files) {
  worker_reports w;
  for (const auto &f : files) {
    std::ifstream in(f);
    if (!in) {
      continue; // killed before it could write
    }
    const auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded()) {
      continue; // killed while writing
    }
    ++w.reports;
    for (auto x : j["job_ns"]) {
      w.job_ns.push_back(x.get<std::int64_t>());
    }
    for (auto &[cause, count] : j["retries"].items()) {
      w.retries[cause] = w.retries.value(cause, std::uint64_t{0}) + count.get<std::uint64_t>();
    }
    w.lost += j["lost"].get<std::uint64_t>();
    w.in_doubt += j["in_doubt"].get<std::uint64_t>();
    w.errors += j["errors"].get<std::uint64_t>();
    std::remove(f.c_str());
  }
  return w;
}

double quantile_ms(std::vector<std::int64_t> v, double q) {
  if (v.empty()) {
    return 0;
  }
  const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]) / 1e6;
}

void print_checks(const billing::verify_result &v) {
  for (const auto &k : v.checks) {
    std::printf("  %-48s %-22s %s\n", k.what.c_str(), k.found.c_str(),
                k.ok() ? "ok" : ("MISMATCH (expected " + k.expected + ")").c_str());
  }
}

namespace {

bool chaos_ok(const run_opts &o, const fault_log &f) {
  return !o.chaos || (f.kills > 0 && f.pg_restarted && f.nats_restarted);
}

void print_timings(const run_opts &o, const run_figures &f) {
  const double rows_d = static_cast<double>(o.rows);
  std::printf("billing_run: %" PRIu64 " rows, %u workers, batch %u, locks %s, outbox %s%s\n",
              o.rows, o.workers, o.batch, o.order.c_str(), f.outbox_store.c_str(),
              o.chaos ? ", chaos" : "");
  std::printf("  setup (database, schema, stream)  %7.2f s (not counted)\n", f.setup_s);
  std::printf("  load  (generate, COPY, enqueue)   %7.2f s  %10.0f rows/s\n", f.load_s,
              rows_d / f.load_s);
  std::printf("  work  (all jobs done)             %7.2f s  %10.0f rows/s\n", f.work_s,
              rows_d / f.work_s);
  std::printf("  events (all counted)              %7.2f s\n", f.events_s);
  std::printf("  verify                            %7.2f s\n", f.verify_s);
  std::printf("  end to end                        %7.2f s  %10.0f rows/s\n", f.total_s,
              rows_d / f.total_s);
}

} // namespace

bool passed(const run_opts &o, const run_figures &f) {
  const bool sorted = o.order == "sorted";
  return f.verify.ok() && (!sorted || f.deadlocks == 0) && chaos_ok(o, f.faults) &&
         f.verify.events == f.verify.invoices;
}

void print_report(const run_opts &o, const run_figures &f) {
  const auto &w = f.workers;
  const auto &v = f.verify;
  print_timings(o, f);
  std::printf("  job p50 %.1f ms, p99 %.1f ms (%zu attempts, %u worker reports)\n",
              quantile_ms(w.job_ns, 0.5), quantile_ms(w.job_ns, 0.99), w.job_ns.size(), w.reports);
  std::printf("  retries by cause %s; jobs lost to a takeover %" PRIu64
              "; commits in doubt (left to the lease) %" PRIu64 "; errors %" PRIu64 "\n",
              w.retries.dump().c_str(), w.lost, w.in_doubt, w.errors);
  std::printf("  deadlocks (pg_stat_database) %" PRId64 "\n", f.deadlocks);
  std::printf("  invoices %" PRIu64 ", invoice events counted %" PRIu64 " (%" PRIu64
              " redeliveries skipped by the inbox)\n",
              v.invoices, v.events, f.redelivered);
  std::printf("  total_cents %" PRIu64 " checksum %" PRIu64 "\n", v.total_cents, v.checksum);
  print_checks(v);
  for (const auto &s : f.faults.survived) {
    std::printf("  survived: %s\n", s.c_str());
  }
  if (!chaos_ok(o, f.faults)) {
    std::printf("  chaos: not every fault was injected (kills %u, PostgreSQL %s, NATS %s)\n",
                f.faults.kills, f.faults.pg_restarted ? "restarted" : "not restarted",
                f.faults.nats_restarted ? "restarted" : "not restarted");
  }
  std::printf("billing_run: %s\n", passed(o, f) ? "PASS" : "FAIL");
}

nlohmann::json to_json(const run_opts &o, const run_figures &f) {
  return {{"rows", o.rows},
          {"workers", o.workers},
          {"batch", o.batch},
          {"lock_order", o.order},
          {"outbox_store", f.outbox_store},
          {"chaos", o.chaos},
          {"setup_s", f.setup_s},
          {"load_s", f.load_s},
          {"work_s", f.work_s},
          {"events_s", f.events_s},
          {"verify_s", f.verify_s},
          {"total_s", f.total_s},
          {"rows_per_s", static_cast<double>(o.rows) / f.total_s},
          {"rows_copied", f.load.rows_copied},
          {"job_p50_ms", quantile_ms(f.workers.job_ns, 0.5)},
          {"job_p99_ms", quantile_ms(f.workers.job_ns, 0.99)},
          {"retries", f.workers.retries},
          {"lost", f.workers.lost},
          {"in_doubt", f.workers.in_doubt},
          {"deadlocks", f.deadlocks},
          {"invoices", f.verify.invoices},
          {"events", f.verify.events},
          {"total_cents", f.verify.total_cents},
          {"checksum", f.verify.checksum},
          {"kills", f.faults.kills},
          {"survived", f.faults.survived},
          {"pass", passed(o, f)}};
}

} // namespace billing_run
