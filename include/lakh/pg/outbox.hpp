#pragma once
// lakh/pg/outbox.hpp: the transactional outbox. outbox::enqueue writes an event in the
// caller's transaction, so the event exists if and only if the business change committed
// (unlike Go's usual "db.Commit(); nc.Publish()", which loses events on a crash in between).
// outbox_publisher is the broker interface a relay publishes through; the relay itself is
// lakh/pg/outbox_relay.hpp (included at the end). Needs PostgreSQL 13 or later (xid8).
// Docs: docs/outbox.md (the visibility rule that makes the relay skip nothing, per-key order).

#include <lakh/pg/array.hpp>
#include <lakh/pg/detail/sql.hpp>
#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
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
        delete_published_(opts.delete_published) {}

  /// Creates the schema (if qualified), the table and its partial index if missing; adds
  /// columns a table from an older lakh lacks (existing rows get a fresh uuid each). Safe to run
  /// from many processes at once (an advisory lock serializes them). Blocks: a few round trips.
  /// @throws pqxx errors; acquire_error if no connection could be leased.
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
             "created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz, "
             "uuid uuid NOT NULL DEFAULT gen_random_uuid())");
      w.exec("ALTER TABLE " + table_ + " ADD COLUMN IF NOT EXISTS headers text[]");
      w.exec("ALTER TABLE " + table_ +
             " ADD COLUMN IF NOT EXISTS uuid uuid NOT NULL DEFAULT gen_random_uuid()");
      w.exec("CREATE INDEX IF NOT EXISTS " + detail::index_base(table_) + "_unpublished ON " +
             table_ + " (id) WHERE published_at IS NULL");
      w.commit();
    });
  }

  /// Adds an event in the caller's transaction `tx` (it is published only if `tx` commits);
  /// returns its id. `tx` is usually a pqxx::work; any pqxx transaction works.
  /// Blocks: a round trip.
  /// @throws std::invalid_argument naming the value if topic is empty or over 255 bytes, key
  /// is over 255 bytes, any string holds a NUL byte, or a header is malformed (see
  /// outbox_header) or there are over 64: then nothing was sent to the server. pqxx errors
  /// from the INSERT.
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

  /// Unpublished events that may be published now (the visibility rule, docs/outbox.md): the
  /// visible unpublished rows in id order, cut before the first whose transaction may precede one
  /// still running; at most `limit`. Blocks: a round trip.
  /// @throws std::invalid_argument if limit < 1; pqxx errors.
  std::vector<outbox_event> ready(pqxx::transaction_base &tx, int limit) {
    return read_ready(tx, limit, "lakh::pg::outbox::ready").events;
  }

  /// Marks `events` published (deletes them with delete_published). Run it only after the
  /// broker acknowledged them. Blocks: a round trip. @throws pqxx errors.
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

  /// Committed events not yet published. Blocks: a round trip (a count, linear in the
  /// unpublished rows). @throws pqxx errors, acquire_error.
  std::int64_t pending() {
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::nontransaction tx(c);
      return tx.exec("SELECT count(*) FROM " + table_ + " WHERE published_at IS NULL")[0][0]
          .as<std::int64_t>();
    });
  }

  /// Deletes rows published more than `older_than` ago (kept when delete_published is
  /// false); returns how many. Blocks: a round trip. @throws pqxx errors, acquire_error.
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

  /// The table name.
  [[nodiscard]] const std::string &table() const noexcept { return table_; }

  /// The pool.
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
    // The visibility rule (docs/outbox.md): a row is eligible when its inserting transaction's
    // xid is below the snapshot's xmin (every transaction below it has ended), and the batch
    // is cut at the first row that is not. xmin is taken once per statement (MATERIALIZED),
    // not by a volatile call per row.
    auto r = tx.exec_params(
        "WITH s AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) "
        "SELECT id, topic, key, payload, headers, xid < s.xmin, "
        "extract(epoch FROM clock_timestamp() - created_at)::float8, uuid::text FROM " +
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
                     {},
                     row[7].as<std::string>()};
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

} // namespace lakh::pg

// The relay, so that code including only this header keeps compiling.
#include <lakh/pg/outbox_relay.hpp>
