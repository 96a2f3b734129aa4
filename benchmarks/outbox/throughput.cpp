// bench_outbox, section A: throughput. --events events are written to an outbox (untimed),
// then relayed to JetStream until the relay counts all of them published (timed), for each
// relay: the table store's outbox_relay (sequential run_once rounds or run() with overlapped
// rounds, key order strict/pipelined, mark published by UPDATE/DELETE) and the wal store's
// wal_relay (strict/pipelined); and the same messages are published raw
// (jetstream::publish_batch: async, with ids, no database) in the same batches. Every run
// checks that its stream holds exactly --events messages.
#include "common.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace bench_outbox {
namespace {

// Wraps the JetStream publisher to split a relay's time into broker and database parts.
struct timed_publisher : lakh::pg::outbox_publisher {
  lakh::nats::outbox_publisher *inner;
  double seconds = 0;
  explicit timed_publisher(lakh::nats::outbox_publisher &p) : inner(&p) {}
  void publish(std::span<const lakh::pg::outbox_event> events,
               std::span<lakh::pg::publish_outcome> outcomes) override {
    const auto t0 = std::chrono::steady_clock::now();
    inner->publish(events, outcomes);
    seconds += seconds_since(t0);
  }
};

struct run_result {
  double seconds = -1; // negative: the stream did not hold exactly the events
  double broker_seconds = 0;
  double fill_seconds = 0;
};

const char *const subject = "bench.outbox.invoice";

std::string payload(int i) {
  return "{\"invoice\":" + std::to_string(i) + ",\"cents\":4200}";
}

// Waits until `relay` (running on its thread) counted `target` events published.
template <class Relay> void wait_published(const Relay &relay, std::uint64_t target) {
  while (relay.metrics().published.value() < target) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// A relay run's end: the broker's share of its time, the stream's count checked (a lost or
// duplicated event marks the run -1), the outbox dropped.
run_result finished(run_result out, const timed_publisher &timed, lakh::nats::jetstream &js,
                    lakh::pg::pool &pool, lakh::pg::outbox &box, std::uint64_t target) {
  out.broker_seconds = timed.seconds;
  if (js.stream_messages("BENCH_OUTBOX") != target) {
    out.seconds = -1;
  }
  drop_outbox(pool, box);
  return out;
}

run_result table_run(const setup &s, lakh::pg::pool &pool, lakh::nats::jetstream &js,
                     lakh::nats::key_order order, bool delete_published, bool overlap) {
  fresh_stream(js, "BENCH_OUTBOX", "bench.outbox.>");
  auto box = fresh_outbox(pool, "bench_outbox", lakh::pg::outbox_store::table, delete_published);
  run_result out;
  const auto f0 = std::chrono::steady_clock::now();
  {
    auto c = pool.acquire();
    pqxx::work w(*c);
    lakh::pg::detail::exec(w,
                           "INSERT INTO bench_outbox (topic, key, payload) SELECT $3, "
                           "'tenant-' || (i % $2), '{\"invoice\":' || i || ',\"cents\":4200}' "
                           "FROM generate_series(1, $1) AS i",
                           s.events, s.keys, subject);
    w.commit();
    pqxx::nontransaction tx(*c);
    tx.exec("VACUUM ANALYZE bench_outbox");
  }
  out.fill_seconds = seconds_since(f0);
  lakh::nats::outbox_publisher pub(js, {"bench-", order});
  timed_publisher timed(pub);
  const lakh::pg::outbox_relay_options opts{s.batch, std::chrono::milliseconds(1),
                                            std::chrono::milliseconds(10),
                                            std::chrono::milliseconds(1000), overlap};
  const auto target = static_cast<std::uint64_t>(s.events);
  const auto t0 = std::chrono::steady_clock::now();
  if (overlap) { // run(): the overlapped rounds live there
    lakh::pg::outbox_relay_thread relay(box, timed, opts);
    wait_published(relay, target);
    out.seconds = seconds_since(t0);
  } else {
    lakh::pg::outbox_relay relay(box, timed, opts);
    while (relay.metrics().published.value() < target) {
      const auto r = relay.run_once();
      if (r.failed > 0) {
        std::fprintf(stderr, "bench_outbox: %zu events not acknowledged: %s\n", r.failed,
                     pub.last_error().c_str());
      }
    }
    out.seconds = seconds_since(t0);
  }
  return finished(out, timed, js, pool, box, target);
}

// Writes the events with outbox::enqueue, fill_batch per transaction, each committed with the
// producer settings (so their WAL is flushed before the relay starts).
void enqueue_all(const setup &s, lakh::pg::pool &pool, lakh::pg::outbox &box) {
  auto c = pool.acquire();
  for (int i = 1; i <= s.events;) {
    pqxx::work w(*c);
    w.exec(producer_settings);
    for (const int end = std::min(s.events, i + s.fill_batch - 1); i <= end; ++i) {
      (void)box.enqueue(w, subject, "tenant-" + std::to_string(i % s.keys), payload(i));
    }
    w.commit();
  }
}

run_result wal_run(const setup &s, lakh::pg::pool &pool, lakh::nats::jetstream &js,
                   lakh::nats::key_order order) {
  fresh_stream(js, "BENCH_OUTBOX", "bench.outbox.>");
  auto box = fresh_outbox(pool, "bench_outbox_wal", lakh::pg::outbox_store::wal, false);
  run_result out;
  const auto f0 = std::chrono::steady_clock::now();
  enqueue_all(s, pool, box);
  out.fill_seconds = seconds_since(f0);
  lakh::nats::outbox_publisher pub(js, {"bench-", order});
  timed_publisher timed(pub);
  lakh::pg::wal_relay_options opts;
  opts.batch = s.batch;
  const auto target = static_cast<std::uint64_t>(s.events);
  {
    const auto t0 = std::chrono::steady_clock::now();
    lakh::pg::wal_relay_thread relay(box, timed, opts); // the timing includes its start
    wait_published(relay, target);
    out.seconds = seconds_since(t0);
  }
  return finished(out, timed, js, pool, box, target);
}

run_result raw_run(const setup &s, lakh::nats::jetstream &js) {
  fresh_stream(js, "BENCH_RAW", "bench.raw.>");
  std::vector<lakh::nats::message> msgs;
  msgs.reserve(static_cast<std::size_t>(s.events));
  for (int i = 1; i <= s.events; ++i) {
    msgs.push_back({"bench.raw.invoice", payload(i), "raw-" + std::to_string(i)});
  }
  run_result out;
  const auto t0 = std::chrono::steady_clock::now();
  const auto step = static_cast<std::size_t>(s.batch);
  for (std::size_t i = 0; i < msgs.size(); i += step) {
    const auto n = std::min(step, msgs.size() - i);
    const auto r = js.publish_batch(std::span<const lakh::nats::message>(msgs.data() + i, n));
    if (!r.all_acknowledged()) {
      std::fprintf(stderr, "bench_outbox: raw publish failed: %s\n", r.first_error.c_str());
      return out;
    }
  }
  out.seconds = seconds_since(t0);
  if (js.stream_messages("BENCH_RAW") != static_cast<std::uint64_t>(s.events)) {
    out.seconds = -1;
  }
  js.delete_stream("BENCH_RAW");
  return out;
}

} // namespace

bool throughput_section(const setup &s, lakh::pg::pool &pool, lakh::nats::jetstream &js) {
  std::printf("A. throughput: %d events, batch %d, %d keys (PostgreSQL -> JetStream, file "
              "storage); timed from relay start until the relay counted all published; the "
              "wal store's events written beforehand by outbox::enqueue, %d per transaction, "
              "with synchronous_commit=on\n",
              s.events, s.batch, s.keys, s.fill_batch);
  bool ok = true;
  double raw_rate = 0;
  auto report = [&](const char *what, const run_result &r) {
    if (r.seconds < 0) {
      std::printf("  %-36s LOST OR EXTRA EVENTS (the stream does not hold %d)\n", what, s.events);
      ok = false;
      return 0.0;
    }
    const double rate = s.events / r.seconds;
    std::printf("  %-36s %7.2f s %9.0f events/s", what, r.seconds, rate);
    if (r.broker_seconds > 0) {
      std::printf("  %.2fx raw  (publish+acks %.2f s, rest %.2f s)",
                  raw_rate > 0 ? rate / raw_rate : 0.0, r.broker_seconds,
                  r.seconds - r.broker_seconds);
    }
    std::printf("\n");
    std::fflush(stdout);
    return rate;
  };
  using lakh::nats::key_order;
  const bool table = s.relays != "wal";
  const bool wal = s.relays != "table";
  for (int rep = 1; rep <= s.repeat; ++rep) {
    if (s.repeat > 1) {
      std::printf(" run %d of %d\n", rep, s.repeat);
    }
    if (table) {
      raw_rate = report("raw async publish (no database)", raw_run(s, js));
      report("table run_once, strict, UPDATE",
             table_run(s, pool, js, key_order::strict, false, false));
      report("table run(), strict, UPDATE", table_run(s, pool, js, key_order::strict, false, true));
      report("table run(), strict, DELETE", table_run(s, pool, js, key_order::strict, true, true));
      report("table run(), pipelined, DELETE",
             table_run(s, pool, js, key_order::pipelined, true, true));
    }
    if (wal) { // raw again beside them: the machine's load drifts within a run
      raw_rate = report("raw async publish (no database)", raw_run(s, js));
      const auto strict = wal_run(s, pool, js, key_order::strict);
      const double wal_strict = report("wal_relay, strict", strict);
      const auto pipelined = wal_run(s, pool, js, key_order::pipelined);
      const double wal_pipelined = report("wal_relay, pipelined", pipelined);
      std::printf("  wal/raw: %.2fx strict, %.2fx pipelined (goal: >= 100k events/s, or >= 0.9x "
                  "raw); untimed enqueue of the wal events: %.1f s, %.1f s\n",
                  raw_rate > 0 ? wal_strict / raw_rate : 0.0,
                  raw_rate > 0 ? wal_pipelined / raw_rate : 0.0, strict.fill_seconds,
                  pipelined.fill_seconds);
    }
  }
  js.delete_stream("BENCH_OUTBOX");
  return ok;
}

} // namespace bench_outbox
