// examples/billing_run/commands.cpp: the subcommands that run one stage each (load, work,
// relay, verify); `run`, which drives them all, is run.cpp.
#include "commands.hpp"

#include "billing.hpp"
#include "report.hpp"

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <thread>

namespace billing_run {

using namespace std::chrono_literals;

int cmd_load(const common_opts &c, const load_opts &o) {
  auto p = billing::make_pool(c.database_url, o.loaders + 1, "billing_run load");
  billing::create_schema(p, false, c.store());
  const auto r = billing::load(p, o.seed, o.rows, o.batch, 2, o.loaders);
  std::printf("load: %" PRIu64 " rows in %" PRIu64 " chunks copied (%" PRIu64
              " chunks already there) in %.2f s (%.0f rows/s)\n",
              r.rows_copied, r.chunks_copied, r.chunks_skipped, r.seconds,
              static_cast<double>(r.rows_copied) / r.seconds);
  return 0;
}

int cmd_work(const common_opts &c, const work_opts &o, std::stop_token st) {
  auto p = billing::make_pool(c.database_url, 2, "billing_run work");
  auto w = o.worker();
  w.store = c.store();
  const auto stats = billing::work(p, w, st);
  if (!o.stats_file.empty()) {
    std::ofstream(o.stats_file) << stats.to_json().dump() << "\n";
  } else {
    std::printf("work: %" PRIu64 " jobs done, %" PRIu64 " lost to a takeover, %" PRIu64
                " commits in doubt (left to the lease), %" PRIu64 " failed attempts (retried)\n",
                stats.jobs, stats.lost, stats.in_doubt, stats.errors);
  }
  return 0;
}

int cmd_relay(const common_opts &c, bool until_done, std::stop_token st) {
  auto p = billing::make_pool(c.database_url, 4, "billing_run relay");
  const auto n = billing::names_of(p);
  lakh::nats::jetstream js(c.nats_url);
  // A cluster that is electing a leader (a node just lost, or the stream being made by
  // another relay) times requests out for a few seconds: ask again, up to a minute.
  for (int attempt = 1;; ++attempt) {
    try {
      billing::ensure_stream(js, n, false, c.replicas());
      break;
    } catch (const lakh::nats::nats_error &e) {
      if (attempt == 60 || st.stop_requested()) {
        throw;
      }
      std::fprintf(stderr, "billing_run relay: %s (asking again)\n", e.what());
      std::this_thread::sleep_for(1s);
    }
  }
  billing::relay_threads r(p, js, n, c.store());
  r.start();
  while (!st.stop_requested()) {
    std::this_thread::sleep_for(100ms);
    if (until_done) {
      const auto k = billing::read_counts(p);
      if (k && billing::all_done(p) && k->outbox_rows == 0 && k->events == k->invoices) {
        break;
      }
    }
  }
  r.stop();
  std::printf("relay: %" PRIu64 " invoice events counted, %" PRIu64 " redeliveries skipped\n",
              r.consumer_stats.consumed, r.consumer_stats.redelivered);
  return 0;
}

int cmd_verify(const common_opts &c, bool stream) {
  auto p = billing::make_pool(c.database_url, 1, "billing_run verify");
  auto v = billing::verify(p);
  if (stream) {
    lakh::nats::jetstream js(c.nats_url);
    billing::check_stream(v, js, billing::names_of(p));
  }
  print_checks(v);
  std::printf("verify: %s\n", v.ok() ? "PASS" : "FAIL");
  return v.ok() ? 0 : 1;
}

} // namespace billing_run
