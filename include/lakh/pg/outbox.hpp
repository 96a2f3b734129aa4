#pragma once
// lakh/pg/outbox.hpp: the transactional outbox. Events are inserted in the caller's
// transaction (they exist if and only if the business change committed); a relay publishes
// the committed ones to a broker through an outbox_publisher and marks them published once
// the broker acknowledged them. Unlike publishing from application code after COMMIT (Go's
// usual "db.Commit(); nc.Publish()"), no event is lost by a crash between the two and none
// is sent for a change that rolled back.
//
// The visibility rule (which rows the relay may publish, and why). Ids come from a bigserial
// and are taken at INSERT; rows become visible at COMMIT, in another order. A relay that
// remembers "published up to id N" loses rows: A takes id 5, B takes id 6, B commits, the
// relay publishes 6 and moves past it, A commits 5, which is never read (the gap bug of
// watermill's SQL outbox, #311). lakh keeps no watermark: every row has its own
// published_at, so a late row is always found. And to keep order, the relay reads the
// unpublished rows it can see in id order and publishes only the longest prefix whose
// inserting transactions have all ended before any transaction that is still running began:
//     xid < pg_snapshot_xmin(pg_current_snapshot())
// `xid` is the inserting transaction's id (pg_current_xact_id(), stored by the INSERT,
// xid8: no wraparound). Every transaction below the snapshot's xmin has ended; every
// transaction still running has an xid at or above it. In the example B's row 6 waits (its
// xid is not below xmin while A runs), then 5 and 6 go out in id order; a visible row never
// jumps ahead of a visible lower id that is not yet eligible.
//
// Per-key order. Events of one key whose writers are serialized (a row lock on the entity,
// an advisory lock on the key: what "event 1 happened before event 2" means in a database)
// get ids in commit order and are published in that order, never the later one first: the
// earlier one is visible whenever the later one is, and the relay publishes in id order. On
// a partial failure the relay marks, per key, only the acknowledged prefix, and a publisher
// must not hand the broker an event of a key before the earlier events of that key in the
// same call were acknowledged (lakh::nats::outbox_publisher sends such events in waves), so
// a retried event never lands behind a later event of its key. Two transactions that
// inserted concurrently (neither waited for the other) have no defined order; theirs may
// come out either way. A long transaction (any, in the cluster) holds back the xmin and so
// delays the relay, not only its own events: keep transactions short.
//
// Delivery is at least once: rows are marked only after the acknowledgement, so a crash in
// between republishes them; brokers dedupe by event id (lakh::nats's publisher sets
// Nats-Msg-Id), consumers make effects exactly once with lakh::pg::inbox.
//
// One active relay per outbox: a relay holds a session advisory lock
// (lakh::pg::session_advisory_lock on "lakh_outbox_relay:<table>") on a connection it keeps;
// a second relay (another process) finds it taken and stands by until the first stops or
// its connection dies.
//
// Needs PostgreSQL 13 or later (xid8, pg_current_xact_id, pg_current_snapshot).

#include <lakh/backoff.hpp>
#include <lakh/metrics.hpp>
#include <lakh/pg/advisory_lock.hpp>
#include <lakh/pg/array.hpp>
#include <lakh/pg/detail/sql.hpp>
#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_set>
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
  std::int64_t id = 0;                ///< unique, increasing in insertion order: the dedupe id
  std::string topic;                  ///< e.g. a NATS subject "invoice.issued"
  std::string key;                    ///< ordering key (see the header comment)
  std::string payload;                ///< text (JSON, or base64 for binary)
  std::vector<outbox_header> headers; ///< in the order given to enqueue
};

/// What a broker said about one event.
enum class publish_outcome : std::uint8_t {
  failed,    ///< sent, not acknowledged (error or timeout): retried later
  not_sent,  ///< withheld (an earlier event of its key failed): retried later
  acked,     ///< stored by the broker
  duplicate, ///< the broker had this id already (a republish): counts as acknowledged
};

/// Where a relay publishes: lakh::nats::outbox_publisher (JetStream), or your own.
///
/// The contract is "publish each, then flush": publish() hands every event of the span to the
/// broker (asynchronously if it can), waits for the acknowledgements, and reports one outcome
/// per event. Per-key order: an implementation must not hand the broker an event of key k
/// before every earlier event of k in the span was acknowledged, unless its broker applies
/// them in order whatever happens; withheld events are reported not_sent. The relay marks
/// acked and duplicate events published (per key, only the prefix before the first other
/// outcome) and retries the rest later with backoff.
class outbox_publisher {
public:
  virtual ~outbox_publisher() = default;
  /// Publishes `events` and fills `outcomes` (same size, preset to failed).
  /// Thread-safety: called by one relay thread at a time. Blocks: until acknowledged or a
  /// timeout of the implementation's. @throws anything: the relay counts every event failed.
  virtual void publish(std::span<const outbox_event> events,
                       std::span<publish_outcome> outcomes) = 0;
};

/// Settings of an outbox.
struct outbox_options {
  /// Lower-case identifier, optionally schema-qualified ("billing.outbox"); a schema that
  /// does not exist is created by create_schema().
  std::string table = "lakh_outbox";
  /// true: published rows are deleted; false: kept with published_at set (an audit trail;
  /// remove them with purge_published()).
  bool delete_published = false;
};

/// The outbox table: enqueue in the caller's transaction; read and mark for the relay.
///
/// Memory ordering: the database's. An event is visible to the relay only after the enqueuing
/// transaction committed. Thread-safety: the object is immutable after construction and may
/// be shared; each call uses the caller's transaction or a pooled connection.
class outbox {
public:
  static constexpr std::size_t max_topic = 255;
  static constexpr std::size_t max_key = 255;
  static constexpr std::size_t max_headers = 64;
  static constexpr std::size_t max_header_name = 255;
  static constexpr std::size_t max_header_value = 4096;

  /// An outbox over table `opts.table` reached through `p` (which must outlive it).
  /// Thread-safety: n/a. Blocks: never. Allocates: may.
  /// @throws std::invalid_argument if the table name is not a lower-case identifier.
  explicit outbox(pool &p, outbox_options opts = {})
      : pool_(&p), table_(detail::checked_table_name(std::move(opts.table), "lakh::pg::outbox")),
        delete_published_(opts.delete_published) {}

  /// Creates the schema (if qualified), the table and its partial index if missing; adds
  /// columns a table from an older lakh lacks. Safe to run from many processes at once (an
  /// advisory lock serializes them). Thread-safety: safe. Blocks: a few round trips.
  /// @throws pqxx errors; acquire_error if no connection could be leased. Allocates: may.
  void create_schema() {
    lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      w.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", "lakh_outbox_schema:" + table_);
      if (const auto dot = table_.find('.'); dot != std::string::npos) {
        w.exec("CREATE SCHEMA IF NOT EXISTS " + table_.substr(0, dot));
      }
      w.exec("CREATE TABLE IF NOT EXISTS " + table_ +
             " (id bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL, "
             "payload text NOT NULL, headers text[], "
             "xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
             "created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz)");
      w.exec("ALTER TABLE " + table_ + " ADD COLUMN IF NOT EXISTS headers text[]");
      w.exec("CREATE INDEX IF NOT EXISTS " + detail::index_base(table_) + "_unpublished ON " +
             table_ + " (id) WHERE published_at IS NULL");
      w.commit();
    });
  }

  /// Adds an event in the caller's transaction `tx` (it is published only if `tx` commits);
  /// returns its id. `tx` is usually a pqxx::work; any pqxx transaction works.
  /// Thread-safety: safe (tx's thread). Blocks: a round trip.
  /// @throws std::invalid_argument naming the value if topic is empty or over 255 bytes, key
  /// is over 255 bytes, any string holds a NUL byte, or a header is malformed (see
  /// outbox_header) or there are over 64: then nothing was sent to the server. pqxx errors
  /// from the INSERT. Allocates: may.
  std::int64_t enqueue(pqxx::transaction_base &tx, std::string_view topic, std::string_view key,
                       std::string_view payload, std::span<const outbox_header> headers = {}) {
    check_event(topic, key, payload, headers);
    const auto sql = "INSERT INTO " + table_ +
                     " (topic, key, payload, headers) VALUES ($1, $2, $3, $4) RETURNING id";
    auto r = headers.empty() ? tx.exec_params(sql, std::string(topic), std::string(key),
                                              std::string(payload), nullptr)
                             : tx.exec_params(sql, std::string(topic), std::string(key),
                                              std::string(payload), header_array(headers));
    return r[0][0].as<std::int64_t>();
  }

  /// Unpublished events that may be published now (the visibility rule above): the visible
  /// unpublished rows in id order, cut before the first whose transaction may precede one
  /// still running; at most `limit`. Thread-safety: safe. Blocks: a round trip.
  /// @throws std::invalid_argument if limit < 1; pqxx errors. Allocates: the events.
  std::vector<outbox_event> ready(pqxx::transaction_base &tx, int limit) {
    return read_ready(tx, limit, "lakh::pg::outbox::ready").events;
  }

  /// Marks `events` published (deletes them with delete_published). Run it only after the
  /// broker acknowledged them. Thread-safety: safe. Blocks: a round trip.
  /// @throws pqxx errors. Allocates: may.
  void mark_published(pqxx::transaction_base &tx, std::span<const outbox_event> events) {
    if (events.empty()) {
      return;
    }
    const auto ids = int_array(events, &outbox_event::id);
    tx.exec_params(delete_published_ ? "DELETE FROM " + table_ + " WHERE id = ANY($1::bigint[])"
                                     : "UPDATE " + table_ +
                                           " SET published_at = now() WHERE id = ANY($1::bigint[])",
                   ids);
  }

  /// Committed events not yet published. Thread-safety: safe. Blocks: a round trip (a count,
  /// linear in the unpublished rows). @throws pqxx errors, acquire_error. Allocates: may.
  std::int64_t pending() {
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::nontransaction tx(c);
      return tx.exec("SELECT count(*) FROM " + table_ + " WHERE published_at IS NULL")[0][0]
          .as<std::int64_t>();
    });
  }

  /// Deletes rows published more than `older_than` ago (kept when delete_published is
  /// false); returns how many. Thread-safety: safe. Blocks: a round trip.
  /// @throws pqxx errors, acquire_error. Allocates: may.
  std::size_t purge_published(std::chrono::milliseconds older_than) {
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      auto r = w.exec_params("DELETE FROM " + table_ +
                                 " WHERE published_at < now() - $1 * interval '1 millisecond'",
                             static_cast<long long>(older_than.count()));
      w.commit();
      return static_cast<std::size_t>(r.affected_rows());
    });
  }

  /// The table name. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] const std::string &table() const noexcept { return table_; }

  /// The pool. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] pool &connections() const noexcept { return *pool_; }

private:
  friend class outbox_relay;

  struct ready_result {
    std::vector<outbox_event> events;
    double oldest_age_s = 0; // of the oldest visible unpublished row, eligible or not
  };

  // `exclude`: a bigint[] literal of ids being published right now (overlapped relay).
  ready_result read_ready(pqxx::transaction_base &tx, int limit, const char *who,
                          const std::string &exclude = "{}") {
    if (limit < 1) {
      throw std::invalid_argument(std::string(who) + ": limit (" + std::to_string(limit) +
                                  ") must be at least 1");
    }
    // The snapshot's xmin once per statement (a volatile call per row costs 10x).
    auto r = tx.exec_params(
        "WITH s AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) "
        "SELECT id, topic, key, payload, headers, xid < s.xmin, "
        "extract(epoch FROM clock_timestamp() - created_at)::float8 FROM " +
            table_ +
            ", s WHERE published_at IS NULL AND id <> ALL($2::bigint[]) ORDER BY id LIMIT $1",
        limit, exclude);
    ready_result out;
    out.events.reserve(r.size());
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
                     {}};
      if (!row[4].is_null()) {
        e.headers = parse_headers(row[4]);
      }
      out.events.push_back(std::move(e));
    }
    return out;
  }

  static void check_event(std::string_view topic, std::string_view key, std::string_view payload,
                          std::span<const outbox_header> headers) {
    const std::string who = "lakh::pg::outbox::enqueue: ";
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

  static std::vector<outbox_header> parse_headers(const pqxx::field &f) {
    std::vector<std::string> flat;
    auto parser = f.as_array();
    for (auto step = parser.get_next(); step.first != pqxx::array_parser::done;
         step = parser.get_next()) {
      if (step.first == pqxx::array_parser::string_value) {
        flat.push_back(std::move(step.second));
      }
    }
    std::vector<outbox_header> out;
    for (std::size_t i = 0; i + 1 < flat.size(); i += 2) {
      out.push_back({std::move(flat[i]), std::move(flat[i + 1])});
    }
    return out;
  }

  pool *pool_;
  std::string table_;
  bool delete_published_;
};

/// A relay's counters: plain atomics, readable from any thread while the relay runs (e.g. by
/// a /metrics endpoint; lakh::registry can expose them under your names).
struct outbox_relay_metrics {
  lakh::counter published;  ///< events marked published (acknowledged, duplicates included)
  lakh::counter duplicates; ///< of which the broker reported as duplicates (republished ids)
  lakh::counter failed;     ///< publish attempts not acknowledged (retried later)
  lakh::counter rounds;     ///< rounds that held the relay lock
  lakh::gauge lag_ms;       ///< age of the oldest unpublished visible event at the last round
};

/// Settings of a relay.
struct outbox_relay_options {
  int batch = 1000;                            ///< events per round, >= 1
  std::chrono::milliseconds idle{50};          ///< pause when nothing is ready
  std::chrono::milliseconds backoff_base{10};  ///< first retry pause after a failure
  std::chrono::milliseconds backoff_cap{5000}; ///< longest retry pause
  /// run() only: while the broker acknowledges batch n, mark batch n-1 and read batch n+1
  /// (on the relay's connection, in a helper thread). Marks then lag one round; after a
  /// failure the prefetched batch is dropped and the next round starts afresh.
  bool overlap = true;
};

/// What one relay round did.
struct outbox_round {
  bool active = false;       ///< this relay holds the relay lock (false: another one does)
  std::size_t ready = 0;     ///< eligible events read
  std::size_t published = 0; ///< acknowledged; marked this round (run_once) or the next (overlap)
  std::size_t failed = 0;    ///< not acknowledged (failed or withheld), retried later
};

/// Publishes an outbox's events through a publisher, in id order, one active relay per
/// outbox (session advisory lock).
///
/// Memory ordering: an event is marked published in a transaction that starts after the
/// publisher returned its acknowledgement (so the mark happens-after the broker's store). In
/// overlapped rounds the database work runs on a helper thread; std::future::get orders it
/// with the relay's thread, and the two never use the connection at the same time.
/// Fairness: none among relays: whichever takes the lock first is active until it stops.
class outbox_relay {
public:
  /// A relay of `box` to `pub` (both must outlive it).
  /// Thread-safety: n/a. Blocks: never. Allocates: may.
  /// @throws std::invalid_argument if batch < 1, idle is negative, or the backoff base is not
  /// positive or exceeds the cap.
  outbox_relay(outbox &box, outbox_publisher &pub, outbox_relay_options opts = {})
      : box_(&box), pub_(&pub), opts_(opts) {
    const std::string who = "lakh::pg::outbox_relay: ";
    if (opts_.batch < 1) {
      throw std::invalid_argument(who + "batch (" + std::to_string(opts_.batch) +
                                  ") must be at least 1");
    }
    if (opts_.idle.count() < 0) {
      throw std::invalid_argument(who + "idle (" + std::to_string(opts_.idle.count()) +
                                  " ms) must not be negative");
    }
    if (opts_.backoff_base.count() <= 0 || opts_.backoff_base > opts_.backoff_cap) {
      throw std::invalid_argument(who + "backoff_base (" +
                                  std::to_string(opts_.backoff_base.count()) +
                                  " ms) must be positive and at most backoff_cap (" +
                                  std::to_string(opts_.backoff_cap.count()) + " ms)");
    }
  }

  outbox_relay(const outbox_relay &) = delete;
  outbox_relay &operator=(const outbox_relay &) = delete;

  /// Gives up the relay lock (its connection is closed, which releases it for certain).
  /// Destroy the relay on the thread that ran it, or after run() returned.
  ~outbox_relay() { drop_lock(); }

  /// One round: takes the relay lock if this relay does not hold it (standing by if another
  /// relay does), reads up to `batch` ready events, publishes them, and marks the
  /// acknowledged ones published (per key, the prefix before the first failure).
  /// Thread-safety: one thread at a time. Blocks: round trips and the publisher.
  /// @throws pqxx errors and acquire_error (the lock's connection is then given up, so the
  /// next round takes the lock afresh); never for a failing publisher (counted in failed).
  /// Allocates: may.
  outbox_round run_once() {
    outbox_round round;
    try {
      if (!lock_ && !take_lock()) {
        return round;
      }
      round.active = true;
      metrics_.rounds.add();
      auto batch = read();
      round.ready = batch.events.size();
      if (batch.events.empty()) {
        return round;
      }
      auto done = publish(batch.events, round);
      mark(done);
      return round;
    } catch (...) {
      drop_lock(); // a lost connection: take the lock again on a fresh one
      throw;
    }
  }

  /// Runs rounds until stop is requested: at once again after a full batch, after `idle`
  /// when fewer were ready or this relay stands by, and with capped exponential backoff (full
  /// jitter) after a failed publish or a database error. With `overlap` (the default) the
  /// database work of neighbouring rounds runs while the broker acknowledges. Before it
  /// returns it marks what was acknowledged and gives up the relay lock.
  /// Thread-safety: one thread at a time. Blocks: until `st` is stopped (a pause is cut short,
  /// a round in progress finishes). @throws nothing but std::bad_alloc: errors are retried.
  /// Allocates: may.
  void run(std::stop_token st) {
    const lakh::backoff retry(opts_.backoff_base, opts_.backoff_cap);
    unsigned failures = 0;
    pipeline pipe;
    while (!st.stop_requested()) {
      std::chrono::nanoseconds pause{0};
      try {
        const auto r = opts_.overlap ? overlapped_round(pipe) : run_once();
        if (r.failed > 0) {
          pause = retry.delay(failures++);
        } else {
          failures = 0;
          pause = r.active && r.ready == static_cast<std::size_t>(opts_.batch)
                      ? std::chrono::nanoseconds(0)
                      : std::chrono::nanoseconds(opts_.idle);
        }
      } catch (const std::bad_alloc &) {
        drop_lock();
        throw;
      } catch (...) {
        pipe = pipeline(); // unmarked acknowledged events are republished: duplicates
        pause = retry.delay(failures++);
      }
      if (pause.count() > 0) {
        (void)lakh::sleep_for(pause, st);
      }
    }
    try {
      if (lock_) {
        mark(pipe.to_mark);
      }
    } catch (...) { // republished later, deduplicated by the broker
    }
    drop_lock(); // let a standby relay take over
  }

  /// Whether this relay holds the relay lock now. Thread-safety: the relay's thread.
  /// Blocks: never. Allocates: never.
  [[nodiscard]] bool active() const noexcept { return static_cast<bool>(lock_); }

  /// The relay's counters. Thread-safety: safe from any thread. Blocks: never.
  /// Allocates: never.
  [[nodiscard]] const outbox_relay_metrics &metrics() const noexcept { return metrics_; }

private:
  // The overlapped relay's state between rounds.
  struct pipeline {
    bool have_next = false;            // `next` was read while the last batch was published
    outbox::ready_result next;         // excludes the ids of the batch published then
    std::vector<outbox_event> to_mark; // acknowledged in the last round, not yet marked
  };

  outbox::ready_result read(const std::string &exclude = "{}") {
    pqxx::nontransaction tx(*lease_);
    auto batch = box_->read_ready(tx, opts_.batch, "lakh::pg::outbox_relay", exclude);
    metrics_.lag_ms.set(static_cast<std::int64_t>(batch.oldest_age_s * 1000.0));
    return batch;
  }

  void mark(std::vector<outbox_event> &done) {
    if (!done.empty()) {
      pqxx::work w(*lease_);
      box_->mark_published(w, done);
      w.commit();
      metrics_.published.add(done.size());
      done.clear();
    }
  }

  // Publishes `events`; returns the ones to mark: per key, the acknowledged prefix.
  std::vector<outbox_event> publish(std::vector<outbox_event> &events, outbox_round &round) {
    outcomes_.assign(events.size(), publish_outcome::failed);
    try {
      pub_->publish(events, outcomes_);
    } catch (...) {
      std::fill(outcomes_.begin(), outcomes_.end(), publish_outcome::failed);
    }
    blocked_.clear();
    std::vector<outbox_event> done;
    done.reserve(events.size());
    for (std::size_t i = 0; i < events.size(); ++i) {
      const bool ok =
          outcomes_[i] == publish_outcome::acked || outcomes_[i] == publish_outcome::duplicate;
      if (!ok || blocked_.count(events[i].key) != 0) {
        blocked_.insert(events[i].key);
        if (outcomes_[i] == publish_outcome::failed) {
          metrics_.failed.add();
        }
        ++round.failed;
        continue;
      }
      if (outcomes_[i] == publish_outcome::duplicate) {
        metrics_.duplicates.add();
      }
      done.push_back(std::move(events[i]));
    }
    round.published = done.size();
    return done;
  }

  // One overlapped round: publish the prefetched batch while a helper thread marks the last
  // round's acknowledged events and reads the next batch (excluding the one in flight).
  outbox_round overlapped_round(pipeline &pipe) {
    outbox_round round;
    try {
      if (!lock_ && !take_lock()) {
        return round;
      }
      round.active = true;
      metrics_.rounds.add();
      if (!pipe.have_next) {
        mark(pipe.to_mark);
        pipe.next = read();
      }
      pipe.have_next = false;
      auto current = std::move(pipe.next.events);
      round.ready = current.size();
      if (current.empty()) {
        mark(pipe.to_mark);
        return round;
      }
      const auto in_flight = int_array(current, &outbox_event::id);
      // The helper uses the relay's connection while this thread only talks to the broker;
      // future::get() orders the two.
      auto db = std::async(std::launch::async, [this, &pipe, &in_flight] {
        mark(pipe.to_mark);
        return read(in_flight);
      });
      auto done = publish(current, round);
      auto next = db.get();
      pipe.to_mark = std::move(done);
      if (round.failed == 0) {
        pipe.next = std::move(next);
        pipe.have_next = true;
      } // else: drop the prefetch; the next round marks, then reads afresh (failed first)
      return round;
    } catch (...) {
      drop_lock();
      throw;
    }
  }

  void drop_lock() noexcept {
    lock_.reset(); // pg_advisory_unlock if the connection still works
    if (lease_) {
      lease_.mark_broken(); // closed, not pooled: a pooled session would keep a stuck lock
    }
    lease_ = pooled_connection();
  }

  bool take_lock() {
    auto lease = box_->connections().acquire();
    if (!lease) {
      throw acquire_error(lease.status(), box_->connections().target());
    }
    auto lock = std::make_unique<session_advisory_lock>(
        *lease, advisory_key::hashed("lakh_outbox_relay:" + box_->table()));
    if (!lock->try_lock()) {
      return false; // stand by; the connection goes back to the pool
    }
    lease_ = std::move(lease);
    lock_ = std::move(lock);
    return true;
  }

  outbox *box_;
  outbox_publisher *pub_;
  outbox_relay_options opts_;
  pooled_connection lease_;                     // the relay lock's session
  std::unique_ptr<session_advisory_lock> lock_; // on lease_; destroyed before it
  std::vector<publish_outcome> outcomes_;
  std::unordered_set<std::string> blocked_;
  outbox_relay_metrics metrics_;
};

} // namespace lakh::pg
