#pragma once
// lakh/pg/outbox.hpp: the transactional outbox. outbox::enqueue writes an event in the
// caller's transaction, so the event exists if and only if the business change committed
// (unlike Go's usual "db.Commit(); nc.Publish()", which loses events on a crash in between).
// outbox_publisher is the broker interface a relay publishes through; the relay itself is
// lakh/pg/outbox_relay.hpp (included at the end). Needs PostgreSQL 13 or later (xid8). With
// outbox_store::wal an event is a transactional logical message instead of a row, relayed by
// lakh::pg::wal_relay (lakh/pg/wal_relay.hpp).
// Docs: docs/outbox.md (the visibility rule that makes the relay skip nothing, per-key order,
// the two stores compared).
//
// Over ~500 lines because one class writes and administers both stores (the table's parked
// rows, the wal store's slot): a store is a setting, so that enqueue's call sites never change.

#include <lakh/pg/array.hpp>
#include <lakh/pg/detail/sql.hpp>
#include <lakh/pg/detail/wal_event.hpp>
#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace lakh::pg {

/// One header of an event (e.g. a W3C traceparent), passed to the broker with the payload.
struct outbox_header {
  std::string name;  ///< 1..255 bytes of printable ASCII without ':' or spaces
  std::string value; ///< at most 4096 bytes, no CR, LF or NUL
  friend bool operator==(const outbox_header &, const outbox_header &) = default;
};

/// An event as the relay hands it to a publisher.
struct outbox_event {
  std::int64_t id = 0;                ///< increasing in insertion order: the relay's order
  std::string topic;                  ///< e.g. a NATS subject "invoice.issued"
  std::string key;                    ///< ordering key (docs/outbox.md, per-key order)
  std::string payload;                ///< text (JSON, or base64 for binary)
  std::vector<outbox_header> headers; ///< in the order given to enqueue
  /// The event's identity, a random UUID fixed at enqueue ("8c0d...-..."): the dedupe id
  /// (a restored or recreated table hands out `id`s again, never identities).
  std::string uuid;
};

/// What a broker said about one event.
enum class publish_outcome : std::uint8_t {
  failed,    ///< sent, not acknowledged (error or timeout): retried later
  not_sent,  ///< withheld (an earlier event of its key failed): retried later
  acked,     ///< stored by the broker
  duplicate, ///< the broker had this id already (a republish): counts as acknowledged
  /// refused for good (e.g. no stream for the subject, payload over the broker's limit): the
  /// relay retries it, and parks it after outbox_relay_options::park_after refusals
  rejected,
};

/// A parked event: refused by the broker for good, kept out of the relay (with the later
/// events of its key) until outbox::retry_parked or outbox::drop_parked.
struct parked_event {
  outbox_event event;
  int attempts = 0;                                ///< failed publishes, refusals included
  std::chrono::system_clock::time_point failed_at; ///< the last failure
  std::string last_error;                          ///< the publisher's text for it
};

/// Where a relay publishes: lakh::nats::outbox_publisher (JetStream), or your own.
///
/// The contract is "publish each, then flush": publish() hands every event of the span to the
/// broker (asynchronously if it can), waits for the acknowledgements, and reports one outcome
/// per event. Per-key order: an implementation must not hand the broker an event of key k
/// before every earlier event of k in the span was acknowledged, unless its broker applies
/// them in order whatever happens; withheld events are reported not_sent. The relay marks
/// acked and duplicate events published (per key, only the prefix before the first other
/// outcome) and retries the rest later with backoff; it parks an event refused for good
/// (rejected) after a few refusals.
class outbox_publisher {
public:
  virtual ~outbox_publisher() = default;
  /// Publishes `events` and fills `outcomes` (same size, preset to failed).
  /// Thread-safety: called by one relay thread at a time. Blocks: until acknowledged or a
  /// timeout of the implementation's. @throws anything: the relay counts every event failed.
  virtual void publish(std::span<const outbox_event> events,
                       std::span<publish_outcome> outcomes) = 0;
  /// Why event `i` of the last publish() failed (kept in the outbox's last_error column);
  /// empty if unknown, the default. Thread-safety: the relay thread, after publish().
  [[nodiscard]] virtual std::string error(std::size_t i) const {
    (void)i;
    return {};
  }
};

/// Where enqueue writes an event.
enum class outbox_store : std::uint8_t {
  /// A row of the outbox table, relayed by outbox_relay (marked or deleted once published).
  table,
  /// A transactional logical message in the write-ahead log (pg_logical_emit_message): no
  /// row, one write; relayed by wal_relay from a logical replication slot in commit order,
  /// never held back by unrelated long transactions. Needs wal_level=logical and a slot that
  /// exists before the first enqueue (create_schema makes it). The server decodes a commit
  /// once its WAL is flushed: with synchronous_commit=off an event waits up to a few
  /// wal_writer_delay (200 ms by default). The table keeps only parked events.
  /// Docs: docs/outbox.md, "The wal store".
  wal,
};

/// The setup a wal store needs is missing or wrong (wal_level, the slot, the publication, a
/// role that may replicate); what() says what and how to fix it.
class wal_setup_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// A wal store's replication slot as PostgreSQL reports it (pg_replication_slots).
struct wal_slot_state {
  bool exists = false;             ///< false: nothing below is set
  bool active = false;             ///< a relay streams from it now
  std::int64_t retained_bytes = 0; ///< WAL kept for the slot (current position - restart_lsn)
  /// WAL written since the last position a relay confirmed (events not yet relayed are in it)
  std::int64_t unconfirmed_bytes = 0;
  std::string wal_status; ///< "reserved", "extended", "unreserved" or "lost"
};

/// Settings of an outbox.
struct outbox_options {
  /// Lower-case identifier, optionally schema-qualified ("billing.outbox"); a schema that
  /// does not exist is created by create_schema().
  std::string table = "lakh_outbox";
  /// true: published rows are deleted; false: kept with published_at set (an audit trail;
  /// remove them with purge_published()).
  bool delete_published = false;
  /// enqueue refuses larger payloads (bytes): NATS's default max_payload, 1 MiB.
  std::size_t max_payload = std::size_t{1} << 20;
  /// Rows (the table relay) or logical messages (the wal relay).
  outbox_store store = outbox_store::table;
  /// wal store: the replication slot and publication ([a-z0-9_], at most 63 bytes); empty:
  /// "lakh_<database>_<table>" (detail::wal_slot_name; slots are per cluster).
  std::string slot{};
};

/// The outbox table: enqueue in the caller's transaction; read and mark for the relay.
///
/// Memory ordering: the database's. An event is visible to the relay only after the enqueuing
/// transaction committed. Thread-safety: the object is immutable after construction and may
/// be shared; each call uses the caller's transaction or a pooled connection. Members may
/// allocate; each says what it blocks on.
class outbox {
public:
  static constexpr std::size_t max_topic = 255;
  static constexpr std::size_t max_key = 255;
  static constexpr std::size_t max_headers = 64;
  static constexpr std::size_t max_header_name = 255;
  static constexpr std::size_t max_header_value = 4096;

  /// An outbox over table `opts.table` reached through `p` (which must outlive it).
  /// Blocks: never. @throws std::invalid_argument if the table name is not a lower-case identifier.
  explicit outbox(pool &p, outbox_options opts = {})
      : pool_(&p), table_(detail::checked_table_name(std::move(opts.table), "lakh::pg::outbox")),
        delete_published_(opts.delete_published), max_payload_(opts.max_payload),
        store_(opts.store), slot_(std::move(opts.slot)),
        prefix_(detail::wal_message_prefix(table_)) {
    const bool slot_ok =
        slot_.size() <= 63 &&
        slot_.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos;
    if (!slot_ok) {
      throw std::invalid_argument("lakh::pg::outbox: slot \"" + slot_ +
                                  "\" must be at most 63 of [a-z0-9_]");
    }
  }

  /// Creates the schema (if qualified), the table and its partial index if missing; adds
  /// columns a table from an older lakh lacks (existing rows get a fresh uuid each). Safe to run
  /// from many processes at once (an advisory lock serializes them). With the wal store it
  /// also creates the replication slot and its publication if missing (the slot waits for the
  /// transactions running then to end; events enqueued before it exists are never relayed).
  /// Blocks: a few round trips. @throws wal_setup_error (wal store: wal_level is not logical,
  /// the role may not create a slot, or the slot was lost: its publication exists without
  /// it); pqxx errors; acquire_error if no connection could be leased.
  void create_schema() {
    create_table();
    if (store_ == outbox_store::wal) {
      create_slot();
    }
  }

  /// The store this outbox writes to.
  [[nodiscard]] outbox_store store() const noexcept { return store_; }

  /// The wal store's slot name (asks the server for the database name when the options named
  /// no slot). Blocks: a round trip the first time. @throws pqxx errors, acquire_error.
  std::string wal_slot() {
    if (!slot_.empty()) {
      return slot_;
    }
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) { return wal_slot(c); });
  }

  /// The wal store's slot now (exists: false if it does not). Call it from a monitor: a slot
  /// no relay reads keeps every WAL segment from its restart_lsn on (see docs/outbox.md for
  /// max_slot_wal_keep_size). Blocks: a round trip. @throws pqxx errors, acquire_error.
  wal_slot_state wal_slot_status() {
    const auto slot = wal_slot();
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::nontransaction tx(c);
      const auto r =
          detail::exec(tx,
                       "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
                       "pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
                       "coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1",
                       slot);
      wal_slot_state s;
      if (!r.empty()) {
        s = {true, r[0][0].as<bool>(), r[0][1].as<std::int64_t>(0), r[0][2].as<std::int64_t>(0),
             r[0][3].as<std::string>()};
      }
      return s;
    });
  }

  /// Drops the wal store's slot and publication (an abandoned slot retains WAL without
  /// bound): events not yet relayed are lost, and enqueue goes on writing messages nobody
  /// reads until create_schema makes a new slot. Returns whether a slot was dropped.
  /// Blocks: a round trip; up to 5 s while the slot is active (a relay that just stopped
  /// leaves it when its server process has ended). @throws pqxx errors (object_in_use if a
  /// relay still streams from it after 5 s), acquire_error.
  bool drop_wal_slot() {
    const auto slot = wal_slot();
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::nontransaction tx(c);
      // The mark first (stopped after it, this is not a "lost slot"), then the slot, then the
      // publication (stopped before it, create_schema makes a slot after it, as it must be).
      tx.exec(
          "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = " + tx.quote(slot) +
          ") THEN COMMENT ON PUBLICATION " + slot + " IS NULL; END IF; END $$");
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      bool dropped = false;
      while (true) {
        try {
          dropped = !detail::exec(tx,
                                  "SELECT pg_drop_replication_slot(slot_name) FROM "
                                  "pg_replication_slots WHERE slot_name = $1",
                                  slot)
                         .empty();
          break;
        } catch (const pqxx::sql_error &e) {
          if (e.sqlstate() != "55006" || std::chrono::steady_clock::now() > deadline) {
            throw;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      tx.exec("DROP PUBLICATION IF EXISTS " + slot);
      return dropped;
    });
  }

private:
  void create_table() {
    lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      detail::exec(w, "SELECT pg_advisory_xact_lock(hashtext($1))", "lakh_outbox_schema:" + table_);
      if (const auto dot = table_.find('.'); dot != std::string::npos) {
        w.exec("CREATE SCHEMA IF NOT EXISTS " + table_.substr(0, dot));
      }
      w.exec("CREATE TABLE IF NOT EXISTS " + table_ +
             " (id bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL, "
             "payload text NOT NULL, headers text[], "
             "xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
             "created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz, "
             "uuid uuid NOT NULL DEFAULT gen_random_uuid(), attempts int NOT NULL DEFAULT 0, "
             "failed_at timestamptz, last_error text, parked_at timestamptz)");
      w.exec("ALTER TABLE " + table_ + " ADD COLUMN IF NOT EXISTS headers text[]");
      w.exec("ALTER TABLE " + table_ +
             " ADD COLUMN IF NOT EXISTS uuid uuid NOT NULL DEFAULT gen_random_uuid(), "
             "ADD COLUMN IF NOT EXISTS attempts int NOT NULL DEFAULT 0, "
             "ADD COLUMN IF NOT EXISTS failed_at timestamptz, "
             "ADD COLUMN IF NOT EXISTS last_error text, "
             "ADD COLUMN IF NOT EXISTS parked_at timestamptz");
      w.exec("CREATE INDEX IF NOT EXISTS " + detail::index_base(table_) + "_unpublished ON " +
             table_ + " (id) WHERE published_at IS NULL");
      w.exec("CREATE INDEX IF NOT EXISTS " + detail::index_base(table_) + "_parked ON " + table_ +
             " (key, id) WHERE parked_at IS NOT NULL");
      w.commit();
    });
  }

  // The publication first, then the slot, then the mark on the publication. pgoutput looks the
  // publication up in the catalog as of each change it decodes, so a slot made before its
  // publication fails on every table change committed between the two ("publication does not
  // exist") and never gets past it. A marked publication without its slot means the slot was
  // lost (a failover to a server that had no copy of it, or a drop by hand), and create_schema
  // says so instead of making a new slot that would hide the gap. A session advisory lock
  // serializes concurrent callers.
  void create_slot() {
    lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      const auto slot = wal_slot(c);
      pqxx::nontransaction tx(c);
      const auto lock_key = "lakh_outbox_slot:" + slot;
      detail::exec(tx, "SELECT pg_advisory_lock(hashtext($1))", lock_key);
      try {
        const auto [has_slot, has_publication, slot_made] =
            read_wal_setup(tx, slot, "lakh::pg::outbox: ");
        if (!has_slot && slot_made) {
          throw wal_setup_error(
              "lakh::pg::outbox: publication \"" + slot +
              "\" exists but its replication slot "
              "does not: the slot was lost (a failover to a server without a copy of it, or "
              "dropped by hand), and events committed after its last confirmed position were "
              "never relayed. See docs/outbox.md, \"Failover\"; to accept the gap and go on, "
              "call drop_wal_slot() and then create_schema()");
        }
        if (!has_publication) {
          tx.exec("CREATE PUBLICATION " + slot); // no tables: the slot sends messages only
        }
        if (!has_slot) {
          try {
            detail::exec(tx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot);
          } catch (const pqxx::sql_error &e) {
            if (e.sqlstate() == "42501") { // insufficient_privilege
              throw wal_setup_error("lakh::pg::outbox: the role may not create the "
                                    "replication slot \"" +
                                    slot +
                                    "\": it needs the REPLICATION attribute (or run "
                                    "create_schema as a role that has it)");
            }
            throw;
          }
        }
        if (!slot_made) {
          tx.exec("COMMENT ON PUBLICATION " + slot + " IS " + tx.quote(slot_made_mark));
        }
      } catch (...) {
        try {
          detail::exec(tx, "SELECT pg_advisory_unlock(hashtext($1))", lock_key);
        } catch (...) { // the connection is gone, and the lock with it
        }
        throw;
      }
      detail::exec(tx, "SELECT pg_advisory_unlock(hashtext($1))", lock_key);
    });
  }

public:
  /// Adds an event in the caller's transaction `tx` (it is published only if `tx` commits);
  /// returns its id. `tx` is usually a pqxx::work; any pqxx transaction works.
  /// Blocks: a round trip.
  /// @throws std::invalid_argument naming the value if topic is empty or over 255 bytes, key
  /// is over 255 bytes, the payload is over max_payload, any string holds a NUL byte, or a
  /// header is malformed (see outbox_header) or there are over 64: then nothing was sent to
  /// the server. pqxx errors from the INSERT.
  /// With the wal store the event is a transactional logical message (it is decoded only if
  /// `tx` commits) and the id returned is the message's WAL position (unique, increasing in
  /// write order; the relay publishes in commit order).
  std::int64_t enqueue(pqxx::transaction_base &tx, std::string_view topic, std::string_view key,
                       std::string_view payload, std::span<const outbox_header> headers = {}) {
    check_event(topic, key, payload, headers, max_payload_);
    if (store_ == outbox_store::wal) {
      return emit(tx, topic, key, payload, headers, nullptr);
    }
    const auto sql = "INSERT INTO " + table_ +
                     " (topic, key, payload, headers) VALUES ($1, $2, $3, $4) RETURNING id";
    auto r = headers.empty() ? detail::exec(tx, sql, std::string(topic), std::string(key),
                                            std::string(payload), nullptr)
                             : detail::exec(tx, sql, std::string(topic), std::string(key),
                                            std::string(payload), header_array(headers));
    return r[0][0].as<std::int64_t>();
  }

  /// Unpublished events that may be published now (the visibility rule, docs/outbox.md): the
  /// visible unpublished rows in id order, cut before the first whose transaction may precede one
  /// still running; at most `limit`. Blocks: a round trip.
  /// @throws std::invalid_argument if limit < 1; pqxx errors.
  /// @throws std::logic_error with the wal store (its events are in the WAL: see wal_relay).
  std::vector<outbox_event> ready(pqxx::transaction_base &tx, int limit) {
    table_only("ready");
    return read_ready(tx, limit, "lakh::pg::outbox::ready").events;
  }

  /// Marks `events` published (deletes them with delete_published). Run it only after the
  /// broker acknowledged them. Blocks: a round trip. @throws pqxx errors.
  /// @throws std::logic_error with the wal store.
  void mark_published(pqxx::transaction_base &tx, std::span<const outbox_event> events) {
    table_only("mark_published");
    if (events.empty()) {
      return;
    }
    const auto ids = int_array(events, &outbox_event::id);
    detail::exec(tx,
                 delete_published_ ? "DELETE FROM " + table_ + " WHERE id = ANY($1::bigint[])"
                                   : "UPDATE " + table_ +
                                         " SET published_at = now() WHERE id = ANY($1::bigint[])",
                 ids);
  }

  /// Committed events not yet published, parked ones excluded. Blocks: a round trip (a
  /// count, linear in the unpublished rows). @throws pqxx errors, acquire_error;
  /// std::logic_error with the wal store (wal_slot_status says how far its relay is behind).
  std::int64_t pending() {
    table_only("pending");
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::nontransaction tx(c);
      return tx
          .exec("SELECT count(*) FROM " + table_ +
                " WHERE published_at IS NULL AND parked_at IS NULL")[0][0]
          .as<std::int64_t>();
    });
  }

  /// How long the oldest committed unpublished event (the lowest id, parked ones excluded)
  /// has waited, by the database's clock; 0 when none waits. It grows while no relay makes
  /// progress (stopped, hung, or standing by without an active one), unlike the relay's own
  /// gauges: call it from a monitor on its own pooled connection. Blocks: a round trip.
  /// @throws pqxx errors, acquire_error; std::logic_error with the wal store.
  std::chrono::milliseconds oldest_pending_age() {
    table_only("oldest_pending_age");
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::nontransaction tx(c);
      const auto r = tx.exec("SELECT (extract(epoch FROM clock_timestamp() - created_at) * "
                             "1000)::bigint FROM " +
                             table_ +
                             " WHERE published_at IS NULL AND parked_at IS NULL ORDER BY id "
                             "LIMIT 1");
      return std::chrono::milliseconds(
          r.empty() ? 0 : std::max<std::int64_t>(0, r[0][0].as<std::int64_t>()));
    });
  }

  /// The parked events, in id order, at most `limit`. Blocks: a round trip.
  /// @throws std::invalid_argument if limit < 1; pqxx errors, acquire_error.
  std::vector<parked_event> parked(int limit = 1000) {
    if (limit < 1) {
      throw std::invalid_argument("lakh::pg::outbox::parked: limit (" + std::to_string(limit) +
                                  ") must be at least 1");
    }
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::nontransaction tx(c);
      auto r = detail::exec(
          tx,
          "SELECT id, topic, key, payload, headers, uuid::text, attempts, "
          "extract(epoch FROM failed_at)::float8, coalesce(last_error, '') FROM " +
              table_ + " WHERE parked_at IS NOT NULL AND published_at IS NULL ORDER BY id LIMIT $1",
          limit);
      std::vector<parked_event> out;
      out.reserve(detail::row_count(r));
      for (const auto &row : r) {
        parked_event p{{row[0].as<std::int64_t>(), row[1].as<std::string>(),
                        row[2].as<std::string>(), row[3].as<std::string>(),
                        row[4].is_null() ? std::vector<outbox_header>{} : parse_headers(row[4]),
                        row[5].as<std::string>()},
                       row[6].as<int>(),
                       {},
                       row[8].as<std::string>()};
        p.failed_at = std::chrono::system_clock::time_point(
            std::chrono::duration_cast<std::chrono::system_clock::duration>(
                std::chrono::duration<double>(row[7].as<double>(0.0))));
        out.push_back(std::move(p));
      }
      return out;
    });
  }

  /// Returns parked events `ids` to the relay (attempts start again at 0), e.g. once the
  /// broker can take them; returns how many were parked. With the wal store they are written
  /// to the WAL again, in id order and with their identities, and their rows deleted, in one
  /// transaction. Blocks: a round trip (the wal store: one per event).
  /// @throws pqxx errors, acquire_error.
  std::size_t retry_parked(std::span<const std::int64_t> ids) {
    if (store_ == outbox_store::table) {
      return change_parked(ids, "UPDATE " + table_ + " SET parked_at = NULL, attempts = 0");
    }
    if (ids.empty()) {
      return 0;
    }
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      auto r = detail::exec(w,
                            "WITH d AS (DELETE FROM " + table_ +
                                " WHERE id = ANY($1::bigint[]) AND parked_at IS NOT NULL "
                                "RETURNING id, topic, key, payload, headers, uuid::text) "
                                "SELECT * FROM d ORDER BY id",
                            int_array(ids));
      for (const auto &row : r) {
        const auto headers =
            row[4].is_null() ? std::vector<outbox_header>{} : parse_headers(row[4]);
        const auto uuid = row[5].as<std::string>();
        (void)emit(w, row[1].as<std::string>(), row[2].as<std::string>(), row[3].as<std::string>(),
                   headers, &uuid);
      }
      w.commit();
      return detail::row_count(r);
    });
  }

  /// Deletes parked events `ids` (never published; the later events of their keys go on);
  /// returns how many were parked. Blocks: a round trip. @throws pqxx errors, acquire_error.
  std::size_t drop_parked(std::span<const std::int64_t> ids) {
    return change_parked(ids, "DELETE FROM " + table_);
  }

  /// Deletes rows published more than `older_than` ago (kept when delete_published is
  /// false); returns how many. Blocks: a round trip. @throws pqxx errors, acquire_error.
  std::size_t purge_published(std::chrono::milliseconds older_than) {
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      auto r = detail::exec(w,
                            "DELETE FROM " + table_ +
                                " WHERE published_at < now() - $1 * interval '1 millisecond'",
                            static_cast<long long>(older_than.count()));
      w.commit();
      return static_cast<std::size_t>(r.affected_rows());
    });
  }

  /// The table name.
  [[nodiscard]] const std::string &table() const noexcept { return table_; }

  /// The pool.
  [[nodiscard]] pool &connections() const noexcept { return *pool_; }

private:
  friend class outbox_relay;
  friend class wal_relay;

  void table_only(const char *what) const {
    if (store_ == outbox_store::wal) {
      throw std::logic_error(std::string("lakh::pg::outbox::") + what +
                             ": not for the wal store (its events are in the WAL, not the "
                             "table: see wal_relay and wal_slot_status)");
    }
  }

  struct wal_setup {
    bool slot = false;        // the slot exists (in this database, with pgoutput)
    bool publication = false; // its publication exists
    bool slot_made = false;   // the publication says its slot was made (slot_made_mark)
  };

  // The comment create_schema puts on the publication once the slot exists: a publication that
  // has it and no slot means the slot was lost.
  static constexpr const char *slot_made_mark = "lakh outbox: its slot was made";

  // The wal store's setup as the server has it. @throws wal_setup_error (its text after
  // `who`) if wal_level is not logical, or `slot` is another database's or plugin's.
  static wal_setup read_wal_setup(pqxx::transaction_base &tx, const std::string &slot,
                                  const std::string &who) {
    const auto r = detail::exec(
        tx,
        "SELECT current_setting('wal_level'), (SELECT row(plugin, database = "
        "current_database(), database)::text FROM pg_replication_slots WHERE slot_name = $1), "
        "EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1), "
        "coalesce((SELECT obj_description(oid, 'pg_publication') = $2 FROM pg_publication "
        "WHERE pubname = $1), false)",
        slot, slot_made_mark);
    const auto level = r[0][0].as<std::string>();
    if (level != "logical") {
      throw wal_setup_error(who + "the server has wal_level=" + level +
                            "; the wal store needs wal_level=logical (postgresql.conf or -c "
                            "wal_level=logical, then restart the server)");
    }
    if (!r[0][1].is_null() && r[0][1].as<std::string>().rfind("(pgoutput,t,", 0) != 0) {
      throw wal_setup_error(
          who + "replication slot \"" + slot +
          "\" is not a pgoutput slot of this database: " + r[0][1].as<std::string>() +
          " (plugin, here, database); name another with outbox_options::slot");
    }
    return {!r[0][1].is_null(), r[0][2].as<bool>(), r[0][3].as<bool>()};
  }

  static std::string missing_slot(const std::string &slot) {
    return "replication slot \"" + slot +
           "\" does not exist: run outbox::create_schema (after a failover the promoted "
           "server has no slot: see docs/outbox.md, \"Failover\")";
  }

  std::string wal_slot(pqxx::connection &c) const {
    if (!slot_.empty()) {
      return slot_;
    }
    pqxx::nontransaction tx(c);
    return detail::wal_slot_name(tx.exec("SELECT current_database()")[0][0].as<std::string>(),
                                 table_);
  }

  // Writes the event as a transactional logical message; a null `uuid` draws a new one.
  std::int64_t emit(pqxx::transaction_base &tx, std::string_view topic, std::string_view key,
                    std::string_view payload, std::span<const outbox_header> headers,
                    const std::string *uuid) {
    std::vector<std::string_view> fields{topic, key, payload};
    for (const auto &h : headers) {
      fields.push_back(h.name);
      fields.push_back(h.value);
    }
    auto r = detail::exec(
        tx,
        "SELECT pg_logical_emit_message(true, $1, $2 || coalesce($3, gen_random_uuid()::text) "
        "|| $4) - '0/0'::pg_lsn",
        prefix_, std::string(detail::wal_content_version),
        uuid != nullptr ? std::optional<std::string>(*uuid) : std::nullopt,
        detail::wal_content_fields(fields));
    return r[0][0].as<std::int64_t>();
  }

  // Parks an event the wal relay could not publish (refused park_after times): a row of the
  // table, listed by parked() like the table store's.
  void park(pqxx::transaction_base &tx, const outbox_event &e, int attempts,
            const std::string &error) {
    std::vector<std::string_view> flat;
    for (const auto &h : e.headers) {
      flat.push_back(h.name);
      flat.push_back(h.value);
    }
    detail::exec(tx,
                 "INSERT INTO " + table_ +
                     " (topic, key, payload, headers, uuid, attempts, failed_at, last_error, "
                     "parked_at) VALUES ($1, $2, $3, $4, $5::uuid, $6, now(), $7, now())",
                 e.topic, e.key, e.payload,
                 e.headers.empty() ? std::optional<std::string>() : text_array(flat), e.uuid,
                 attempts, error);
  }

  struct ready_result {
    std::vector<outbox_event> events;
    double oldest_age_s = 0; // of the oldest visible unpublished row, eligible or not
  };

  // `exclude`: a bigint[] literal of ids being published right now (overlapped relay);
  // `skip_keys`: a text[] literal of keys backing off. Parked events and the later events of
  // their keys are not read.
  ready_result read_ready(pqxx::transaction_base &tx, int limit, const char *who,
                          const std::string &exclude = "{}", const std::string &skip_keys = "{}") {
    if (limit < 1) {
      throw std::invalid_argument(std::string(who) + ": limit (" + std::to_string(limit) +
                                  ") must be at least 1");
    }
    // The visibility rule (docs/outbox.md): a row is eligible when its inserting transaction's
    // xid is below the snapshot's xmin (every transaction below it has ended), and the batch
    // is cut at the first row that is not. xmin is taken once per statement (MATERIALIZED),
    // not by a volatile call per row.
    auto r = detail::exec(
        tx,
        "WITH s AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) "
        "SELECT o.id, o.topic, o.key, o.payload, o.headers, o.xid < s.xmin, "
        "extract(epoch FROM clock_timestamp() - o.created_at)::float8, o.uuid::text FROM " +
            table_ + " o, s WHERE o.published_at IS NULL AND o.parked_at IS NULL" +
            " AND o.id <> ALL($2::bigint[]) AND o.key <> ALL($3::text[]) AND NOT EXISTS "
            "(SELECT 1 FROM " +
            table_ +
            " p WHERE p.parked_at IS NOT NULL AND p.key = o.key AND p.id < o.id) "
            "ORDER BY o.id LIMIT $1",
        limit, exclude, skip_keys);
    ready_result out;
    out.events.reserve(detail::row_count(r));
    if (!r.empty()) {
      out.oldest_age_s = r[0][6].as<double>();
    }
    for (const auto &row : r) {
      if (!row[5].as<bool>()) {
        break; // later ids wait for this one
      }
      outbox_event e{row[0].as<std::int64_t>(),
                     row[1].as<std::string>(),
                     row[2].as<std::string>(),
                     row[3].as<std::string>(),
                     {},
                     row[7].as<std::string>()};
      if (!row[4].is_null()) {
        e.headers = parse_headers(row[4]);
      }
      out.events.push_back(std::move(e));
    }
    return out;
  }

  // A failed publish of event `id`: `error` is the publisher's text; `rejected`: refused for
  // good (the event is parked once it has `park_after` attempts).
  struct publish_failure {
    std::int64_t id = 0;
    std::string error;
    bool rejected = false;
  };

  // Counts the failures' attempts, parks the ones due; returns how many were parked.
  std::size_t record_failures(pqxx::transaction_base &tx,
                              const std::vector<publish_failure> &failures, int park_after) {
    if (failures.empty()) {
      return 0;
    }
    std::string rejected = "{";
    for (const auto &f : failures) {
      if (rejected.size() > 1) {
        rejected += ',';
      }
      rejected += f.rejected ? 't' : 'f';
    }
    rejected += '}';
    auto r = detail::exec(
        tx,
        "UPDATE " + table_ +
            " o SET attempts = o.attempts + 1, failed_at = now(), last_error = f.error, "
            "parked_at = CASE WHEN f.rejected AND o.attempts + 1 >= $4 THEN now() END "
            "FROM unnest($1::bigint[], $2::text[], $3::bool[]) AS f(id, error, rejected) "
            "WHERE o.id = f.id RETURNING o.parked_at IS NOT NULL",
        int_array(failures, &publish_failure::id), text_array(failures, &publish_failure::error),
        rejected, park_after);
    std::size_t parked = 0;
    for (const auto &row : r) {
      parked += row[0].as<bool>() ? 1U : 0U;
    }
    return parked;
  }

  std::size_t change_parked(std::span<const std::int64_t> ids, const std::string &change) {
    if (ids.empty()) {
      return 0;
    }
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      auto r = detail::exec(w, change + " WHERE id = ANY($1::bigint[]) AND parked_at IS NOT NULL",
                            int_array(ids));
      w.commit();
      return static_cast<std::size_t>(r.affected_rows());
    });
  }

  static void check_event(std::string_view topic, std::string_view key, std::string_view payload,
                          std::span<const outbox_header> headers, std::size_t max_payload) {
    const std::string who = "lakh::pg::outbox::enqueue: ";
    if (payload.size() > max_payload) {
      throw std::invalid_argument(who + "payload (" + std::to_string(payload.size()) +
                                  " bytes) exceeds max_payload (" + std::to_string(max_payload) +
                                  " bytes)");
    }
    if (topic.empty() || topic.size() > max_topic) {
      throw std::invalid_argument(who + "topic (" + std::to_string(topic.size()) +
                                  " bytes) must be 1..255 bytes");
    }
    if (key.size() > max_key) {
      throw std::invalid_argument(who + "key (" + std::to_string(key.size()) +
                                  " bytes) must be at most 255 bytes");
    }
    for (auto [what, v] : {std::pair{"topic", topic}, {"key", key}, {"payload", payload}}) {
      if (v.find('\0') != std::string_view::npos) {
        throw std::invalid_argument(who + what + " contains a NUL byte");
      }
    }
    if (headers.size() > max_headers) {
      throw std::invalid_argument(who + std::to_string(headers.size()) + " headers (at most 64)");
    }
    for (const auto &h : headers) {
      const bool name_ok = !h.name.empty() && h.name.size() <= max_header_name &&
                           std::all_of(h.name.begin(), h.name.end(),
                                       [](char ch) { return ch > ' ' && ch < 127 && ch != ':'; });
      if (!name_ok) {
        throw std::invalid_argument(who + "header name \"" + h.name +
                                    "\" must be 1..255 printable ASCII bytes without ':' or "
                                    "spaces");
      }
      if (h.value.size() > max_header_value ||
          h.value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
        throw std::invalid_argument(who + "header \"" + h.name + "\": value (" +
                                    std::to_string(h.value.size()) +
                                    " bytes) must be at most 4096 bytes without CR, LF or NUL");
      }
    }
  }

  // A text[] literal {"n1","v1","n2","v2"}.
  static std::string header_array(std::span<const outbox_header> headers) {
    std::vector<std::string_view> flat;
    flat.reserve(headers.size() * 2);
    for (const auto &h : headers) {
      flat.push_back(h.name);
      flat.push_back(h.value);
    }
    return text_array(flat);
  }

  static std::vector<outbox_header> parse_headers(const detail::field_view &f) {
    std::vector<std::string> flat = detail::text_array_of(f);
    std::vector<outbox_header> out;
    for (std::size_t i = 0; i + 1 < flat.size(); i += 2) {
      out.push_back({std::move(flat[i]), std::move(flat[i + 1])});
    }
    return out;
  }

  pool *pool_;
  std::string table_;
  bool delete_published_;
  std::size_t max_payload_;
  outbox_store store_;
  std::string slot_;   // as given (empty: derived from the database and table)
  std::string prefix_; // of the wal store's messages
};

} // namespace lakh::pg

// The relay, so that code including only this header keeps compiling.
#include <lakh/pg/outbox_relay.hpp>
