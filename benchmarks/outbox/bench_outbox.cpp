// bench_outbox: --events events are enqueued in PostgreSQL (untimed), then relayed by
// lakh::pg::outbox_relay to JetStream until none is pending (timed), for each relay setting
// (sequential run_once rounds or run() with overlapped rounds, key order strict/pipelined,
// mark published by UPDATE/DELETE); and the same messages are
// published raw (jetstream::publish_batch: async, with ids, no database) in the same batches
// (timed). One invocation, same servers, same stream settings. Prints events/s for each.
// DATABASE_URL and NATS_URL name the servers (scripts/bench-outbox starts them).
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/pg/outbox_relay.hpp>

#include <CLI/CLI.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace {

struct setup {
  int events = 200'000;
  int batch = 1000;
  int keys = 1000;
};

// Wraps the JetStream publisher to split a relay's time into broker and database parts.
struct timed_publisher : lakh::pg::outbox_publisher {
  lakh::nats::outbox_publisher *inner;
  double seconds = 0;
  explicit timed_publisher(lakh::nats::outbox_publisher &p) : inner(&p) {}
  void publish(std::span<const lakh::pg::outbox_event> events,
               std::span<lakh::pg::publish_outcome> outcomes) override {
    const auto t0 = std::chrono::steady_clock::now();
    inner->publish(events, outcomes);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Relays `s.events` fresh events; returns the seconds taken, or a negative value on a loss.
double broker_seconds = 0; // of the last relay_run: time inside the publisher

double relay_run(const setup &s, lakh::pg::pool &pool, lakh::nats::jetstream &js,
                 lakh::nats::key_order order, bool delete_published, bool overlap) {
  js.delete_stream("BENCH_OUTBOX");
  js.ensure_stream({"BENCH_OUTBOX", {"bench.outbox.>"}});
  {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    tx.exec("DROP TABLE IF EXISTS bench_outbox");
  }
  lakh::pg::outbox box(pool, {"bench_outbox", delete_published});
  box.create_schema();
  {
    auto c = pool.acquire();
    pqxx::work w(*c);
    w.exec_params("INSERT INTO bench_outbox (topic, key, payload) SELECT 'bench.outbox.invoice', "
                  "'tenant-' || (i % $2), '{\"invoice\":' || i || ',\"cents\":4200}' "
                  "FROM generate_series(1, $1) AS i",
                  s.events, s.keys);
    w.commit();
    pqxx::nontransaction tx(*c);
    tx.exec("VACUUM ANALYZE bench_outbox");
  }
  lakh::nats::outbox_publisher pub(js, {"bench-", order});
  timed_publisher timed(pub);
  const lakh::pg::outbox_relay_options opts{s.batch, std::chrono::milliseconds(1),
                                            std::chrono::milliseconds(10),
                                            std::chrono::milliseconds(1000), overlap};
  const auto target = static_cast<std::uint64_t>(s.events);
  const auto t0 = std::chrono::steady_clock::now();
  if (overlap) { // run(): the overlapped rounds live there
    lakh::pg::outbox_relay_thread relay(box, timed, opts);
    while (relay.metrics().published.value() < target) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  } else {
    lakh::pg::outbox_relay relay(box, timed, opts);
    while (relay.metrics().published.value() < target) {
      const auto r = relay.run_once();
      if (r.failed > 0) {
        std::fprintf(stderr, "bench_outbox: %zu events not acknowledged: %s\n", r.failed,
                     pub.last_error().c_str());
      }
    }
  }
  const double secs = seconds_since(t0);
  broker_seconds = timed.seconds;
  const auto stored = js.stream_messages("BENCH_OUTBOX");
  return stored == static_cast<std::uint64_t>(s.events) ? secs : -1.0;
}

double raw_run(const setup &s, lakh::nats::jetstream &js) {
  js.delete_stream("BENCH_RAW");
  js.ensure_stream({"BENCH_RAW", {"bench.raw.>"}});
  std::vector<lakh::nats::message> msgs;
  msgs.reserve(static_cast<std::size_t>(s.events));
  for (int i = 1; i <= s.events; ++i) {
    msgs.push_back({"bench.raw.invoice", "{\"invoice\":" + std::to_string(i) + ",\"cents\":4200}",
                    "raw-" + std::to_string(i)});
  }
  const auto t0 = std::chrono::steady_clock::now();
  const std::size_t step = static_cast<std::size_t>(s.batch);
  for (std::size_t i = 0; i < msgs.size(); i += step) {
    const auto n = std::min(step, msgs.size() - i);
    const auto r = js.publish_batch(std::span<const lakh::nats::message>(msgs.data() + i, n));
    if (!r.all_acknowledged()) {
      std::fprintf(stderr, "bench_outbox: raw publish failed: %s\n", r.first_error.c_str());
      return -1.0;
    }
  }
  const double secs = seconds_since(t0);
  return js.stream_messages("BENCH_RAW") == static_cast<std::uint64_t>(s.events) ? secs : -1.0;
}

} // namespace

int main(int argc, char **argv) {
  setup s;
  int repeat = 1;
  CLI::App app{"bench_outbox: outbox relay to JetStream vs raw async publish"};
  app.add_option("--events", s.events, "events per run")->check(CLI::Range(1, 10'000'000));
  app.add_option("--batch", s.batch, "events per relay round / publish batch")
      ->check(CLI::Range(1, 100'000));
  app.add_option("--keys", s.keys, "distinct ordering keys")->check(CLI::Range(1, 10'000'000));
  app.add_option("--repeat", repeat, "runs of each variant")->check(CLI::Range(1, 20));
  CLI11_PARSE(app, argc, argv);
  const char *db = std::getenv("DATABASE_URL");
  const char *nats = std::getenv("NATS_URL");
  if (db == nullptr || nats == nullptr) {
    std::fprintf(stderr,
                 "bench_outbox: DATABASE_URL and NATS_URL must be set (scripts/bench-outbox)\n");
    return 2;
  }
  lakh::nats::jetstream js(nats);
  lakh::pg::pool pool(db, 3);
  std::printf("events %d, batch %d, keys %d (PostgreSQL -> JetStream, file storage)\n", s.events,
              s.batch, s.keys);
  bool ok = true;
  auto report = [&](const char *what, double secs) {
    if (secs < 0) {
      std::printf("  %-40s LOST EVENTS\n", what);
      ok = false;
      return;
    }
    std::printf("  %-36s %7.2f s %9.0f events/s", what, secs, s.events / secs);
    if (broker_seconds > 0) {
      std::printf("  (publish+acks %.2f s, database %.2f s)", broker_seconds,
                  secs - broker_seconds);
    }
    std::printf("\n");
    broker_seconds = 0;
    std::fflush(stdout);
  };
  for (int r = 0; r < repeat; ++r) {
    report("raw async publish (no database)", raw_run(s, js));
    using lakh::nats::key_order;
    report("relay run_once, strict, UPDATE",
           relay_run(s, pool, js, key_order::strict, false, false));
    report("relay run(), strict, UPDATE", relay_run(s, pool, js, key_order::strict, false, true));
    report("relay run(), strict, DELETE", relay_run(s, pool, js, key_order::strict, true, true));
    report("relay run(), pipelined, DELETE",
           relay_run(s, pool, js, key_order::pipelined, true, true));
  }
  js.delete_stream("BENCH_OUTBOX");
  js.delete_stream("BENCH_RAW");
  {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    tx.exec("DROP TABLE IF EXISTS bench_outbox");
  }
  return ok ? 0 : 1;
}
