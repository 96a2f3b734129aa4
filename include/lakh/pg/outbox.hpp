#pragma once
// lakh/pg/outbox.hpp: the transactional outbox. Events are inserted in the caller's
// transaction (they exist if and only if the business change committed); a relay publishes
// them to a broker through an outbox_publisher and marks them published.
//
// Which rows the relay may read: an outbox with a bigserial id cannot be read with a
// "published up to id N" watermark, because ids are taken at INSERT and rows become visible
// at COMMIT, in another order: when transaction A takes id 5 and B takes id 6 and B commits
// first, a relay that saw 6 and moved its watermark past it never sees 5 (the gap bug that
// watermill's SQL outbox hit, #311). lakh never uses a watermark: each row has its own
// published_at, so no row is ever skipped. To publish in id order, the relay reads the
// unpublished rows it can see in id order and publishes the longest prefix whose inserting
// transactions have all ended before every transaction still running began:
//     xid < pg_snapshot_xmin(pg_current_snapshot())
// where `xid` is the inserting transaction's id (pg_current_xact_id(), stored by the INSERT).
// A transaction below the snapshot's xmin has ended, and any transaction still running has
// an xid >= xmin. So in the example B's row 6 waits while A is open, then both go out, 5
// first; and a visible row never jumps ahead of a visible lower id that is not yet eligible.
// What this cannot order is two transactions that inserted concurrently and took ids and
// xids in opposite orders: their events may come out in either order. Events whose order
// matters (one key, e.g. one invoice) must be written by transactions that are serialized
// anyway (a row lock on the entity, or lakh::pg's advisory locks on the key); those are
// published in commit order, which is then id order. A long-running transaction delays the
// relay (not only its own events): keep transactions short.
//
// Delivery is at least once: the relay marks rows published only after the publisher
// acknowledged them, so a crash in between republishes them. Brokers dedupe by event id
// (lakh::nats's JetStream publisher sets Nats-Msg-Id); consumers make processing exactly
// once with lakh::pg::inbox.
//
// One relay per outbox at a time: relay::run_once takes a session advisory lock
// (pg_try_advisory_lock) on its connection; a second relay process finds it taken and
// stands by (returns 0) until the first one stops, so order is never broken by two relays.

#include <lakh/backoff.hpp>
#include <lakh/pg/detail/sql.hpp>
#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace lakh::pg {

/// An event as the relay hands it to a publisher.
struct outbox_event {
  std::int64_t id = 0; ///< unique, increasing in insertion order; use as the dedupe id
  std::string topic;   ///< e.g. a NATS subject "invoice.issued"
  std::string key;     ///< ordering key (events of one key are published in id order)
  std::string payload; ///< any text (JSON)
};

/// Where a relay publishes. Implementations: lakh::nats::jetstream_publisher, or your own.
class outbox_publisher {
public:
  virtual ~outbox_publisher() = default;
  /// Publishes `events` (in order) and returns how many, from the front, the broker
  /// acknowledged; the relay marks exactly those published and retries the rest later.
  /// Throwing counts as 0 acknowledged.
  virtual std::size_t publish(std::span<const outbox_event> events) = 0;
};

/// Settings of an outbox.
struct outbox_options {
  std::string table = "lakh_outbox"; ///< lower-case identifier, optionally schema-qualified
};

/// The outbox table: enqueue in the caller's transaction, read and mark for the relay.
class outbox {
public:
  static constexpr std::size_t max_topic = 255;
  static constexpr std::size_t max_key = 255;

  /// Thread-safety: n/a. Blocks: never.
  /// @throws std::invalid_argument if the table name is not a lower-case identifier.
  explicit outbox(pool &p, outbox_options opts = {})
      : pool_(&p), table_(detail::checked_table_name(std::move(opts.table), "lakh::pg::outbox")) {}

  /// Creates the table and its index if missing (advisory-locked: safe from many processes).
  /// Thread-safety: safe. Blocks: a round trip. @throws pqxx errors, acquire_error.
  void create_schema() {
    detail::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      w.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", "lakh_outbox_schema:" + table_);
      w.exec("CREATE TABLE IF NOT EXISTS " + table_ +
             " (id bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL, "
             "payload text NOT NULL, xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
             "created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz)");
      w.exec("CREATE INDEX IF NOT EXISTS " + detail::index_base(table_) + "_unpublished ON " +
             table_ + " (id) WHERE published_at IS NULL");
      w.commit();
    });
  }

  /// Adds an event in the caller's transaction `w`; returns its id.
  /// Thread-safety: safe. Blocks: a round trip.
  /// @throws std::invalid_argument if topic is empty or topic/key exceed 255 bytes, or the
  /// payload contains a NUL byte (nothing written); pqxx errors. Allocates: may.
  std::int64_t enqueue(pqxx::work &w, std::string_view topic, std::string_view key,
                       std::string_view payload) {
    if (topic.empty() || topic.size() > max_topic) {
      throw std::invalid_argument("lakh::pg::outbox::enqueue: topic (" +
                                  std::to_string(topic.size()) + " bytes) must be 1..255 bytes");
    }
    if (key.size() > max_key) {
      throw std::invalid_argument("lakh::pg::outbox::enqueue: key (" + std::to_string(key.size()) +
                                  " bytes) must be at most 255 bytes");
    }
    if (payload.find('\0') != std::string_view::npos) {
      throw std::invalid_argument("lakh::pg::outbox::enqueue: payload contains a NUL byte");
    }
    auto r = w.exec_params("INSERT INTO " + table_ +
                               " (topic, key, payload) VALUES ($1, $2, $3) RETURNING id",
                           std::string(topic), std::string(key), std::string(payload));
    return r[0][0].as<std::int64_t>();
  }

  /// Unpublished events that are safe to publish now (see the header comment): the visible
  /// unpublished rows in id order, up to the first one whose transaction may still precede a
  /// running one, at most `limit`. Thread-safety: safe. Blocks: a round trip.
  /// @throws std::invalid_argument if limit < 1; pqxx errors.
  std::vector<outbox_event> ready(pqxx::work &w, int limit) {
    if (limit < 1) {
      throw std::invalid_argument("lakh::pg::outbox::ready: limit (" + std::to_string(limit) +
                                  ") must be at least 1");
    }
    // The snapshot's xmin once per statement (a volatile call per row costs 10x here).
    auto r = w.exec_params("WITH s AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) "
                           "AS xmin) SELECT id, topic, key, payload, xid < s.xmin FROM " +
                               table_ + ", s WHERE published_at IS NULL ORDER BY id LIMIT $1",
                           limit);
    std::vector<outbox_event> out;
    out.reserve(r.size());
    for (const auto &row : r) {
      if (!row[4].as<bool>()) {
        break; // later ids wait for this one
      }
      out.push_back({row[0].as<std::int64_t>(), row[1].as<std::string>(), row[2].as<std::string>(),
                     row[3].as<std::string>()});
    }
    return out;
  }

  /// Marks events published. Thread-safety: safe. Blocks: a round trip. @throws pqxx errors.
  void mark_published(pqxx::work &w, std::span<const outbox_event> events) {
    if (events.empty()) {
      return;
    }
    const auto ids = detail::bigint_array(events, [](const outbox_event &e) { return e.id; });
    w.exec_params("UPDATE " + table_ + " SET published_at = now() WHERE id = ANY($1::bigint[])",
                  ids);
  }

  /// Events not yet published (committed ones). Thread-safety: safe. Blocks: a round trip.
  std::int64_t pending() {
    return detail::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::nontransaction tx(c);
      return tx.exec("SELECT count(*) FROM " + table_ + " WHERE published_at IS NULL")[0][0]
          .as<std::int64_t>();
    });
  }

  /// The table name. Thread-safety: safe. Blocks: never.
  [[nodiscard]] const std::string &table() const noexcept { return table_; }

  /// The pool. Thread-safety: safe. Blocks: never.
  [[nodiscard]] pool &connections() const noexcept { return *pool_; }

private:
  pool *pool_;
  std::string table_;
};

/// Publishes an outbox's events through a publisher, in id order, one relay at a time.
class outbox_relay {
public:
  /// A relay of `box` to `pub` (both must outlive it), `batch` events per round.
  /// Thread-safety: n/a. @throws std::invalid_argument if batch < 1.
  outbox_relay(outbox &box, outbox_publisher &pub, int batch = 1000)
      : box_(&box), pub_(&pub), batch_(batch) {
    if (batch < 1) {
      throw std::invalid_argument("lakh::pg::outbox_relay: batch (" + std::to_string(batch) +
                                  ") must be at least 1");
    }
  }

  /// One round: if this relay holds (or can take) the outbox's relay lock, reads up to
  /// `batch` ready events, publishes them and marks the acknowledged prefix published.
  /// Returns how many were marked (0: nothing ready, another relay active, or the publisher
  /// acknowledged none). Thread-safety: one thread per relay. Blocks: round trips and the
  /// publisher. @throws pqxx errors, acquire_error; a throwing publisher counts as 0.
  std::size_t run_once() {
    if (!lock_ && !take_lock()) {
      return 0;
    }
    pqxx::work w(*lock_);
    auto events = box_->ready(w, batch_);
    if (events.empty()) {
      w.commit();
      return 0;
    }
    std::size_t acked = 0;
    try {
      acked = std::min(pub_->publish(events), events.size());
    } catch (...) {
      acked = 0;
    }
    box_->mark_published(w, std::span<const outbox_event>(events.data(), acked));
    w.commit();
    published_ += acked;
    return acked;
  }

  /// Runs rounds until stop is requested: immediately again after a full batch, after
  /// `idle` when nothing was ready, with backoff after a failed publish or a lost connection.
  /// Thread-safety: one thread per relay. Blocks: until stop.
  /// @throws nothing from the rounds (errors are retried with backoff); std::bad_alloc.
  void run(std::stop_token st, std::chrono::milliseconds idle = std::chrono::milliseconds(50)) {
    lakh::backoff retry(std::chrono::milliseconds(10), std::chrono::seconds(2));
    unsigned failures = 0;
    while (!st.stop_requested()) {
      std::chrono::milliseconds pause{0};
      try {
        const auto n = run_once();
        failures = 0;
        pause = n == static_cast<std::size_t>(batch_) ? std::chrono::milliseconds(0) : idle;
      } catch (...) {
        drop_lock(); // a lost connection: take the lock again on a fresh one
        pause = std::chrono::duration_cast<std::chrono::milliseconds>(retry.delay(failures++));
      }
      if (pause.count() > 0) {
        std::mutex m;
        std::condition_variable_any cv;
        std::unique_lock lk(m);
        (void)cv.wait_for(lk, st, pause, [] { return false; });
      }
    }
  }

  outbox_relay(const outbox_relay &) = delete;
  outbox_relay &operator=(const outbox_relay &) = delete;

  /// Gives up the relay lock (its connection is closed, which releases the session lock).
  ~outbox_relay() { drop_lock(); }

  /// Events this relay marked published so far. Thread-safety: the relay's thread.
  [[nodiscard]] std::uint64_t published() const noexcept { return published_; }

private:
  void drop_lock() noexcept {
    if (lock_) {
      lock_.mark_broken(); // closed, not pooled: a pooled connection would keep the lock
    }
    lock_ = pooled_connection();
  }

  bool take_lock() {
    auto lease = box_->connections().acquire();
    if (!lease) {
      throw acquire_error(lease.status(), box_->connections().target());
    }
    pqxx::nontransaction tx(*lease);
    const bool got = tx.exec_params("SELECT pg_try_advisory_lock(hashtext($1))",
                                    "lakh_outbox_relay:" + box_->table())[0][0]
                         .as<bool>();
    if (!got) {
      return false; // stand by; the connection goes back to the pool
    }
    lock_ = std::move(lease); // the session lock lives as long as this connection
    return true;
  }

  outbox *box_;
  outbox_publisher *pub_;
  int batch_;
  pooled_connection lock_;
  std::uint64_t published_ = 0;
};

} // namespace lakh::pg
