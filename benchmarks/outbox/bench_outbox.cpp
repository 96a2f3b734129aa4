// bench_outbox: --events events enqueued in PostgreSQL (untimed), then relayed by
// lakh::pg::outbox_relay to JetStream in batches of --batch until none is pending (timed),
// then the same messages published raw (jetstream::publish_batch, async with ids, no
// database) in the same batches into a second stream (timed). Prints events/s for both.
// DATABASE_URL and NATS_URL name the servers (scripts/bench-outbox starts them).
#include <lakh/nats/outbox_publisher.hpp>

#include <CLI/CLI.hpp>
#include <pqxx/pqxx>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

int main(int argc, char **argv) {
  int events = 200'000;
  int batch = 1000;
  CLI::App app{"bench_outbox: outbox relay to JetStream vs raw async publish"};
  app.add_option("--events", events, "events")->check(CLI::Range(1, 10'000'000));
  app.add_option("--batch", batch, "events per relay round / publish batch")
      ->check(CLI::Range(1, 100'000));
  CLI11_PARSE(app, argc, argv);
  const char *db = std::getenv("DATABASE_URL");
  const char *nats = std::getenv("NATS_URL");
  if (db == nullptr || nats == nullptr) {
    std::fprintf(stderr,
                 "bench_outbox: DATABASE_URL and NATS_URL must be set (scripts/bench-outbox)\n");
    return 2;
  }
  lakh::nats::jetstream js(nats);
  for (const char *s : {"BENCH_OUTBOX", "BENCH_RAW"}) {
    js.delete_stream(s);
  }
  js.ensure_stream("BENCH_OUTBOX", {"bench.outbox.>"});
  js.ensure_stream("BENCH_RAW", {"bench.raw.>"});
  lakh::pg::pool pool(db, 4);
  lakh::pg::outbox box(pool, {"bench_outbox"});
  {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    tx.exec("DROP TABLE IF EXISTS bench_outbox");
  }
  box.create_schema();
  {
    auto c = pool.acquire();
    pqxx::work w(*c);
    w.exec_params("INSERT INTO bench_outbox (topic, key, payload) SELECT 'bench.outbox.invoice', "
                  "'tenant-' || (i % 100), '{\"invoice\":' || i || ',\"cents\":4200}' "
                  "FROM generate_series(1, $1) AS i",
                  events);
    w.commit();
  }
  lakh::nats::outbox_publisher pub(js, "bench-");
  lakh::pg::outbox_relay relay(box, pub, batch);
  auto t0 = std::chrono::steady_clock::now();
  while (relay.published() < static_cast<std::uint64_t>(events)) {
    (void)relay.run_once();
  }
  const double relay_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::vector<lakh::nats::message> msgs;
  for (int i = 1; i <= events; ++i) {
    msgs.push_back({"bench.raw.invoice", "{\"invoice\":" + std::to_string(i) + ",\"cents\":4200}",
                    "raw-" + std::to_string(i)});
  }
  t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < msgs.size(); i += static_cast<std::size_t>(batch)) {
    std::vector<lakh::nats::message> part(
        msgs.begin() + static_cast<std::ptrdiff_t>(i),
        msgs.begin() + static_cast<std::ptrdiff_t>(
                           std::min(msgs.size(), i + static_cast<std::size_t>(batch))));
    if (!js.publish_batch(part)) {
      std::fprintf(stderr, "bench_outbox: raw publish failed\n");
      return 1;
    }
  }
  const double raw_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto stored = js.stream_messages("BENCH_OUTBOX");
  std::printf("events %d, batch %d: relay %.2f s, %.0f events/s (stream holds %llu); raw async "
              "publish %.2f s, %.0f msg/s; relay/raw %.2f\n",
              events, batch, relay_s, events / relay_s, static_cast<unsigned long long>(stored),
              raw_s, events / raw_s, raw_s / relay_s);
  js.delete_stream("BENCH_OUTBOX");
  js.delete_stream("BENCH_RAW");
  return stored == static_cast<std::uint64_t>(events) ? 0 : 1;
}
