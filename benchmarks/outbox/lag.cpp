// bench_outbox, section B: publish lag under a long transaction. One transaction takes an xid
// and stays open for --long-seconds while a producer commits --rate events per second
// (--group per transaction); each event's lag is the moment the relay's publish() returned
// its broker acknowledgement minus the moment its producer's commit returned. The same run
// for the wal store's wal_relay and the table store's outbox_relay (run(), library defaults
// but delete on publish); the stream must hold exactly the events produced.
#include "common.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace bench_outbox {
namespace {

using clock = std::chrono::steady_clock;

// Stamps when each event was acknowledged, by the sequence number in its payload
// ({"seq":N}): when publish() returned (a batch's acknowledgements arrive before it returns,
// so the stamp is never earlier than the broker's).
struct stamping_publisher : lakh::pg::outbox_publisher {
  lakh::nats::outbox_publisher *inner;
  std::vector<clock::time_point> acked; // by sequence; read after the relay stopped
  std::atomic<std::size_t> count{0};    // events acknowledged (each counted once)
  stamping_publisher(lakh::nats::outbox_publisher &p, std::size_t capacity)
      : inner(&p), acked(capacity) {}
  void publish(std::span<const lakh::pg::outbox_event> events,
               std::span<lakh::pg::publish_outcome> outcomes) override {
    inner->publish(events, outcomes);
    const auto now = clock::now();
    std::size_t fresh = 0;
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (outcomes[i] != lakh::pg::publish_outcome::acked &&
          outcomes[i] != lakh::pg::publish_outcome::duplicate) {
        continue;
      }
      const auto seq = std::strtoull(events[i].payload.c_str() + 7, nullptr, 10);
      if (seq < acked.size() && acked[seq] == clock::time_point{}) {
        acked[seq] = now;
        ++fresh;
      }
    }
    count.fetch_add(fresh, std::memory_order_relaxed);
  }
};

struct produced {
  std::vector<clock::time_point> committed; // by sequence: when its commit returned
  std::size_t count = 0;
  double seconds = 0;
};

// Commits events on a schedule (s.rate per second, s.group per transaction, catching up
// without pause when late) for s.long_seconds, on a session with the producer settings.
produced produce(const setup &s, lakh::pg::outbox &box, std::size_t capacity) {
  pqxx::connection c(s.database_url);
  {
    pqxx::nontransaction tx(c);
    tx.exec(producer_settings);
  }
  produced out;
  out.committed.resize(capacity);
  const auto group = static_cast<std::size_t>(s.group);
  const auto period = std::chrono::nanoseconds(1'000'000'000LL * s.group / s.rate);
  const auto t0 = clock::now();
  const auto end = t0 + std::chrono::seconds(s.long_seconds);
  for (std::int64_t k = 0;; ++k) {
    const auto due = t0 + k * period;
    if (due >= end || out.count + group > capacity) {
      break;
    }
    std::this_thread::sleep_until(due);
    pqxx::work w(c);
    for (std::size_t g = 0; g < group; ++g) {
      const auto seq = out.count + g;
      (void)box.enqueue(w, "bench.lag.invoice",
                        "tenant-" + std::to_string(seq % static_cast<std::size_t>(s.keys)),
                        "{\"seq\":" + std::to_string(seq) + "}");
    }
    w.commit();
    const auto now = clock::now();
    for (std::size_t g = 0; g < group; ++g) {
      out.committed[out.count + g] = now;
    }
    out.count += group;
  }
  out.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return out;
}

struct lag_result {
  std::vector<double> lag_ms; // sorted
  std::size_t produced = 0;
  std::size_t unpublished_at_end = 0; // when the long transaction ended
  double rate = 0;                    // achieved by the producer
  double drain_seconds = 0;           // from the long transaction's end until all published
  bool complete = false;              // all acknowledged, and the stream holds exactly them
};

template <class RelayThread>
lag_result lag_run(const setup &s, lakh::pg::pool &pool, lakh::nats::jetstream &js,
                   lakh::pg::outbox_store store, const std::string &table) {
  fresh_stream(js, "BENCH_LAG", "bench.lag.>");
  auto box = fresh_outbox(pool, table, store, true);
  lakh::nats::outbox_publisher pub(js, {"lag-"});
  const auto capacity =
      static_cast<std::size_t>(s.rate) * static_cast<std::size_t>(s.long_seconds) +
      static_cast<std::size_t>(s.group);
  stamping_publisher stamps(pub, capacity);
  lag_result r;
  produced p;
  {
    RelayThread relay(box, stamps);
    pqxx::connection lc(s.database_url);
    pqxx::work long_tx(lc);
    long_tx.exec("SELECT pg_current_xact_id()");
    p = produce(s, box, capacity);
    r.unpublished_at_end = p.count - stamps.count.load(std::memory_order_relaxed);
    long_tx.commit();
    const auto d0 = clock::now();
    while (stamps.count.load(std::memory_order_relaxed) < p.count &&
           clock::now() - d0 < std::chrono::seconds(120)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    r.drain_seconds = std::chrono::duration<double>(clock::now() - d0).count();
    relay.stop();
  } // the relay thread joined: its stamps happen-before what follows
  r.produced = p.count;
  r.rate = static_cast<double>(p.count) / p.seconds;
  for (std::size_t i = 0; i < p.count; ++i) {
    if (stamps.acked[i] != clock::time_point{}) {
      r.lag_ms.push_back(
          std::chrono::duration<double, std::milli>(stamps.acked[i] - p.committed[i]).count());
    }
  }
  std::sort(r.lag_ms.begin(), r.lag_ms.end());
  r.complete = r.lag_ms.size() == p.count && js.stream_messages("BENCH_LAG") == p.count;
  js.delete_stream("BENCH_LAG");
  drop_outbox(pool, box);
  return r;
}

double percentile(const std::vector<double> &sorted, double q) {
  if (sorted.empty()) {
    return 0;
  }
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

void print_row(const char *what, const lag_result &r) {
  std::printf("  %-32s %7zu %8.1f %11zu %9.1f %9.1f %9.1f %8.1f %8.2f s%s\n", what, r.produced,
              r.rate, r.unpublished_at_end, percentile(r.lag_ms, 0.5), percentile(r.lag_ms, 0.99),
              r.lag_ms.empty() ? 0.0 : r.lag_ms.back(), r.lag_ms.empty() ? 0.0 : r.lag_ms.front(),
              r.drain_seconds, r.complete ? "" : "  LOST OR EXTRA EVENTS");
  std::fflush(stdout);
}

} // namespace

bool lag_section(const setup &s, lakh::pg::pool &pool, lakh::nats::jetstream &js) {
  std::printf("B. long transaction: one transaction holds an xid for %d s while a producer "
              "commits %d events/s (%d per transaction, synchronous_commit=on for both relays); "
              "lag = the relay's publish() returned the broker's ack - the producer's commit "
              "returned; relays with library defaults (batch 1000; the table relay: run(), "
              "50 ms idle poll, delete on publish)\n",
              s.long_seconds, s.rate, s.group);
  std::printf("  %-32s %7s %8s %11s %9s %9s %9s %8s %10s\n", "relay", "events", "per s",
              "unpub@end", "p50 ms", "p99 ms", "max ms", "min ms", "drain");
  bool ok = true;
  for (int rep = 1; rep <= s.repeat; ++rep) {
    const auto wal = lag_run<lakh::pg::wal_relay_thread>(s, pool, js, lakh::pg::outbox_store::wal,
                                                         "bench_lag_wal");
    print_row("wal_relay", wal);
    const auto table = lag_run<lakh::pg::outbox_relay_thread>(
        s, pool, js, lakh::pg::outbox_store::table, "bench_lag_table");
    print_row("outbox_relay (table store)", table);
    const double p99 = percentile(wal.lag_ms, 0.99);
    std::printf("  wal_relay p99 %.1f ms: goal < 50 ms %s\n", p99, p99 < 50 ? "met" : "MISSED");
    ok = ok && wal.complete && table.complete;
  }
  return ok;
}

} // namespace bench_outbox
