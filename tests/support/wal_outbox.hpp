#pragma once
// Test support for the wal store of lakh::pg::outbox: an outbox with outbox_store::wal in a
// database of its own, its publication and slot made, and the slot dropped when done (a slot
// left behind retains WAL on the shared server and keeps its database from being dropped).
#include <lakh/pg/outbox.hpp>

#include <support/scratch_database.hpp>

#include <pqxx/pqxx>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

namespace lakh::test {

/// Drops `box`'s slot and publication, waiting (up to 10 s) while a relay's walsender that is
/// ending still holds the slot (it ends a moment after the relay closed its stream or was
/// killed). Never throws: a destructor's call.
inline void drop_slot(lakh::pg::outbox &box) noexcept {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (true) {
    try {
      (void)box.drop_wal_slot();
      return;
    } catch (...) {
      if (std::chrono::steady_clock::now() > deadline) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

/// A wal-store outbox "app.outbox" in a scratch database (prefix `prefix`).
struct wal_outbox {
  lakh::test::pg::scratch_database db;
  lakh::pg::pool pool;
  lakh::pg::outbox box;

  explicit wal_outbox(const std::string &prefix, std::size_t pool_size = 8)
      : db(prefix), pool(db.url(), pool_size),
        box(pool, {"app.outbox", false, std::size_t{1} << 20, lakh::pg::outbox_store::wal}) {
    box.create_schema();
  }
  ~wal_outbox() { drop_slot(box); }
  wal_outbox(const wal_outbox &) = delete;
  wal_outbox &operator=(const wal_outbox &) = delete;

  /// Enqueues one event in a transaction of its own, committed with synchronous_commit on
  /// (scripts/services runs with it off, and logical decoding sends only flushed WAL); returns
  /// its id (its WAL position).
  std::int64_t add(const std::string &topic, const std::string &key, const std::string &payload,
                   bool commit = true) {
    auto c = pool.acquire();
    pqxx::work w(*c);
    w.exec("SET LOCAL synchronous_commit = on");
    const auto id = box.enqueue(w, topic, key, payload, {{{"traceparent", "00-ab-cd-01"}}});
    if (commit) {
      w.commit();
    }
    return id;
  }
};

} // namespace lakh::test
