#pragma once
// lakh/pg/inbox.hpp: lakh::pg::inbox, the consumer side of exactly-once processing over an
// at-least-once broker (the "idempotent consumer" pattern, with the dedupe record inside the
// consumer's own transaction): INSERT ... ON CONFLICT DO NOTHING of the message id, in the
// transaction that makes the processing's effects, tells whether this delivery is the
// first; a redelivery finds the id and skips, and a processing that rolled back left no id,
// so its redelivery processes. Ack the broker after the commit. With lakh::pg::outbox and
// lakh::nats it completes the end-to-end story of docs/outbox.md.

#include <lakh/pg/array.hpp>
#include <lakh/pg/detail/sql.hpp>
#include <lakh/pg/pool.hpp>

#include <pqxx/pqxx>

#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

namespace lakh::pg {

/// Settings of an inbox.
struct inbox_options {
  std::string table = "lakh_inbox"; ///< lower-case identifier, optionally schema-qualified
};

/// Message ids already processed, per consumer.
///
/// Memory ordering: the database's: a delivery that finds the id sees every effect committed
/// with it. Fairness: concurrent deliveries of one id queue on its unique index (PostgreSQL's
/// lock queue). Thread-safety: immutable after construction, shareable.
class inbox {
public:
  static constexpr std::size_t max_id = 255;

  /// @throws std::invalid_argument if the table name is not a lower-case identifier.
  explicit inbox(pool &p, inbox_options opts = {})
      : pool_(&p), table_(detail::checked_table_name(std::move(opts.table), "lakh::pg::inbox")) {}

  /// Creates the schema (if qualified) and the table if missing; safe from many processes
  /// at once (advisory-locked). Thread-safety: safe. Blocks: a few round trips.
  /// @throws pqxx errors, acquire_error. Allocates: may.
  void create_schema() {
    lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      detail::exec(w, "SELECT pg_advisory_xact_lock(hashtext($1))", "lakh_inbox_schema:" + table_);
      if (const auto dot = table_.find('.'); dot != std::string::npos) {
        w.exec("CREATE SCHEMA IF NOT EXISTS " + table_.substr(0, dot));
      }
      w.exec("CREATE TABLE IF NOT EXISTS " + table_ +
             " (consumer text NOT NULL, message_id text NOT NULL, "
             "received_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (consumer, message_id))");
      w.commit();
    });
  }

  /// Records (consumer, message_id) in the consumer's transaction `w` (usually a pqxx::work).
  /// Returns true for the first delivery (process it in `w`, commit, then ack the broker),
  /// false for a redelivery (commit or abort, then ack: it was processed before).
  /// Thread-safety: safe (w's thread). Blocks: a round trip, and while a concurrent
  /// transaction holds the same id. @throws std::invalid_argument if consumer or message_id
  /// is empty or longer than 255 bytes (nothing written); pqxx errors. Allocates: may.
  [[nodiscard]] bool first_delivery(pqxx::transaction_base &w, std::string_view consumer,
                                    std::string_view message_id) {
    check(consumer, "consumer");
    check(message_id, "message_id");
    auto r = detail::exec(w,
                          "INSERT INTO " + table_ +
                              " (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                          std::string(consumer), std::string(message_id));
    return r.affected_rows() == 1;
  }

  /// The batch form of first_delivery, for a batch fetched from the broker: records every id
  /// in ONE statement in `w` and returns, per position, whether it is the first delivery of
  /// that id (process those in `w`, commit, then ack the whole batch). An id repeated inside
  /// the batch is a first delivery at its first position only. The ids are inserted in
  /// sorted order, so concurrent batches with overlapping ids never deadlock each other.
  /// Thread-safety: safe (w's thread). Blocks: a round trip, and while a concurrent
  /// transaction holds one of the ids. @throws std::invalid_argument if consumer or any id is
  /// empty or longer than 255 bytes or holds a NUL byte (nothing written); pqxx errors.
  /// Allocates: the result and the array text.
  [[nodiscard]] std::vector<bool> first_deliveries(pqxx::transaction_base &w,
                                                   std::string_view consumer,
                                                   const std::vector<std::string> &message_ids) {
    constexpr const char *fn = "lakh::pg::inbox::first_deliveries";
    check(consumer, "consumer", fn);
    for (const auto &id : message_ids) {
      check(id, "message_id", fn);
      if (id.find('\0') != std::string::npos) {
        throw std::invalid_argument("lakh::pg::inbox::first_deliveries: a message_id holds a "
                                    "NUL byte");
      }
    }
    const auto array = text_array(message_ids);
    std::vector<bool> first(message_ids.size(), false);
    if (message_ids.empty()) {
      return first;
    }
    // Rows are inserted in one order for every caller (byte order), so two batches with
    // overlapping ids in different orders cannot deadlock; RETURNING names the new ids.
    auto r = detail::exec(w,
                          "INSERT INTO " + table_ +
                              " (consumer, message_id) SELECT $1, m FROM unnest($2::text[]) "
                              "AS m ORDER BY m COLLATE \"C\" ON CONFLICT DO NOTHING "
                              "RETURNING message_id",
                          std::string(consumer), array);
    std::unordered_set<std::string> fresh;
    for (const auto &row : r) {
      fresh.insert(row[0].as<std::string>());
    }
    for (std::size_t i = 0; i < message_ids.size(); ++i) {
      first[i] = fresh.erase(message_ids[i]) == 1; // the first position of a repeated id
    }
    return first;
  }

  /// Forgets ids received more than `older_than` ago (keep longer than the broker's
  /// redelivery horizon). Returns how many. Thread-safety: safe. Blocks: a round trip.
  /// @throws pqxx errors, acquire_error. Allocates: may.
  std::size_t purge(std::chrono::milliseconds older_than) {
    return lakh::pg::with_connection(*pool_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      auto r = detail::exec(
          w, "DELETE FROM " + table_ + " WHERE received_at < now() - $1 * interval '1 millisecond'",
          static_cast<long long>(older_than.count()));
      w.commit();
      return static_cast<std::size_t>(r.affected_rows());
    });
  }

  /// The table name.
  [[nodiscard]] const std::string &table() const noexcept { return table_; }

private:
  static void check(std::string_view v, const char *what,
                    const char *fn = "lakh::pg::inbox::first_delivery") {
    if (v.empty() || v.size() > max_id) {
      throw std::invalid_argument(std::string(fn) + ": " + what + " (" + std::to_string(v.size()) +
                                  " bytes) must be 1..255 bytes");
    }
  }

  pool *pool_;
  std::string table_;
};

} // namespace lakh::pg
