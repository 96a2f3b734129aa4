#pragma once
// benchmarks/outbox/common.hpp: what the two sections of bench_outbox share (throughput.cpp,
// lag.cpp): the settings, fresh outboxes and streams, and producer sessions.
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/pg/wal_relay.hpp>

#include <pqxx/pqxx>

#include <chrono>
#include <string>
#include <thread>

namespace bench_outbox {

struct setup {
  // A. throughput
  int events = 200'000;
  int batch = 1000;
  int keys = 1000;
  int fill_batch = 1000; // events per enqueuing transaction (wal store)
  int repeat = 1;
  std::string relays = "all"; // or "table", "wal" (raw publish runs beside either)
  // B. long transaction
  int long_seconds = 60;
  int rate = 1000; // events per second committed by the producer
  int group = 1;   // events per producer transaction
  std::string database_url;
};

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// An empty stream `name` over `subjects` (file storage, as the relay's users would have).
inline void fresh_stream(lakh::nats::jetstream &js, const std::string &name,
                         const std::string &subjects) {
  js.delete_stream(name);
  js.ensure_stream({name, {subjects}});
}

// Drops a wal store's slot. The walsender of a stopped relay ends a moment after the relay
// closed its stream, and an active slot cannot be dropped: wait for it (bounded).
inline void drop_slot(lakh::pg::outbox &box) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (auto st = box.wal_slot_status(); st.exists; st = box.wal_slot_status()) {
    if (!st.active || std::chrono::steady_clock::now() > until) {
      (void)box.drop_wal_slot();
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// An outbox over a fresh table `table`; with the wal store, a fresh slot of the same name
// (one left behind by an interrupted run is dropped first: it would retain WAL).
inline lakh::pg::outbox fresh_outbox(lakh::pg::pool &pool, const std::string &table,
                                     lakh::pg::outbox_store store, bool delete_published) {
  lakh::pg::outbox box(pool, {table, delete_published, std::size_t{1} << 20, store, table});
  if (store == lakh::pg::outbox_store::wal) {
    drop_slot(box);
  }
  {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    tx.exec("DROP TABLE IF EXISTS " + table);
  }
  box.create_schema();
  return box;
}

// Drops what fresh_outbox made (the slot first: an idle slot retains WAL).
inline void drop_outbox(lakh::pg::pool &pool, lakh::pg::outbox &box) {
  if (box.store() == lakh::pg::outbox_store::wal) {
    drop_slot(box);
  }
  auto c = pool.acquire();
  pqxx::nontransaction tx(*c);
  tx.exec("DROP TABLE IF EXISTS " + box.table());
}

// The producer's session settings, the same for both stores: scripts/services runs the server
// with synchronous_commit=off, under which a commit reaches the WAL relay only once the WAL
// writer flushes (wal_writer_delay); producers get PostgreSQL's default back.
inline constexpr const char *producer_settings = "SET synchronous_commit = on";

// The sections; each prints its table and returns false if an event was lost.
bool throughput_section(const setup &s, lakh::pg::pool &pool, lakh::nats::jetstream &js);
bool lag_section(const setup &s, lakh::pg::pool &pool, lakh::nats::jetstream &js);

} // namespace bench_outbox
