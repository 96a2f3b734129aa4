// bench_outbox: the outbox relays to JetStream, in one invocation on the same servers.
// A (throughput.cpp): events/s of the table store's outbox_relay variants and the wal store's
// wal_relay against raw async publish of the same messages. B (lag.cpp): per-event publish
// lag of both relays while a long transaction stays open. DATABASE_URL and NATS_URL name the
// servers (scripts/bench-outbox starts them).
#include "common.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char **argv) {
  bench_outbox::setup s;
  std::string section = "all";
  CLI::App app{"bench_outbox: the outbox relays to JetStream vs raw async publish"};
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast); // --quick, then
  app.add_option("--section", section, "all, throughput (A) or lag (B)")
      ->check(CLI::IsMember({"all", "throughput", "lag"}));
  app.add_option("--relays", s.relays, "A: all, table or wal (raw publish runs beside either)")
      ->check(CLI::IsMember({"all", "table", "wal"}));
  app.add_option("--events", s.events, "A: events per run")->check(CLI::Range(1, 10'000'000));
  app.add_option("--batch", s.batch, "A: events per relay round / publish batch")
      ->check(CLI::Range(1, 100'000));
  app.add_option("--keys", s.keys, "A: distinct ordering keys")->check(CLI::Range(1, 10'000'000));
  app.add_option("--fill-batch", s.fill_batch, "A: events per enqueuing transaction (wal store)")
      ->check(CLI::Range(1, 100'000));
  app.add_option("--long-seconds", s.long_seconds, "B: how long the long transaction stays open")
      ->check(CLI::Range(1, 3600));
  app.add_option("--rate", s.rate, "B: events committed per second")->check(CLI::Range(1, 100'000));
  app.add_option("--group", s.group, "B: events per producer transaction")
      ->check(CLI::Range(1, 1000));
  app.add_option("--repeat", s.repeat, "runs of each variant")->check(CLI::Range(1, 20));
  CLI11_PARSE(app, argc, argv);
  const char *db = std::getenv("DATABASE_URL");
  const char *nats = std::getenv("NATS_URL");
  if (db == nullptr || nats == nullptr) {
    std::fprintf(stderr,
                 "bench_outbox: DATABASE_URL and NATS_URL must be set (scripts/bench-outbox)\n");
    return 2;
  }
  s.database_url = db;
  lakh::nats::jetstream js(nats);
  lakh::pg::pool pool(db, 4);
  bool ok = true;
  if (section != "lag") {
    ok = bench_outbox::throughput_section(s, pool, js) && ok;
  }
  if (section != "throughput") {
    ok = bench_outbox::lag_section(s, pool, js) && ok;
  }
  return ok ? 0 : 1;
}
