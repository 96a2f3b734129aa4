#pragma once
// examples/billing_run/events.hpp: the relay stage. lakh::pg::outbox_relay_thread (the table
// store) or lakh::pg::wal_relay_thread (the wal store) -> lakh::nats::outbox_publisher
// (Nats-Msg-Id = event id), and a lakh::nats::consume loop that counts each invoice event once
// through lakh::pg::inbox.

#include "database.hpp"
#include "verify.hpp"

#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/nats/pull_consumer.hpp>
#include <lakh/pg/array.hpp>
#include <lakh/pg/inbox.hpp>
#include <lakh/pg/outbox.hpp>
#include <lakh/pg/outbox_relay.hpp>
#include <lakh/pg/wal_relay.hpp>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace billing {

struct relay_stats {
  std::uint64_t consumed = 0;    ///< first deliveries counted
  std::uint64_t redelivered = 0; ///< deliveries the inbox recognised (skipped)
  std::uint64_t errors = 0;
};

/// Creates the run's JetStream stream (deleting a previous one with `reset`), with
/// `replicas` copies of each event when set (3 on a three-node cluster: docs/scale-out.md).
inline void ensure_stream(lakh::nats::jetstream &js, const names &n, bool reset,
                          std::optional<int> replicas = {}) {
  if (reset) {
    js.delete_stream(n.stream());
  }
  lakh::nats::stream_config cfg{
      n.stream(), {n.subjects()}, lakh::nats::storage::file, std::chrono::minutes(10)};
  cfg.replicas = replicas;
  js.ensure_stream(cfg);
}

/// Adds to `v` the check that the stream holds each invoice's event once: JetStream dropped
/// what a relay sent again.
inline void check_stream(verify_result &v, lakh::nats::jetstream &js, const names &n) {
  v.checks.push_back({"invoice events in the stream (once each)", std::to_string(v.invoices),
                      std::to_string(js.stream_messages(n.stream()))});
}

/// The consumer: fetches invoice events and records each once (inbox + notified row in one
/// transaction per batch), acked after the commit, on lakh::nats::consume. Runs until `st` is
/// stopped; survives broker and database restarts (a failed batch is nak'ed, redelivered and
/// deduplicated).
inline void count_events(lakh::pg::pool &p, lakh::nats::jetstream &js, const names &n,
                         relay_stats &stats, std::stop_token st) {
  auto inbox = make_inbox(p);
  auto retry = patient_retrier();
  lakh::nats::consume_options o{n.stream(), n.subject(), n.durable(), std::chrono::seconds(5)};
  o.batch = 500;
  o.fetch_wait = std::chrono::milliseconds(100);
  o.on_error = [&](const std::exception &e) {
    if (!st.stop_requested()) {
      ++stats.errors;
      std::fprintf(stderr, "billing_run consumer: %s (retrying)\n", e.what());
    }
  };
  const auto count_batch = [&](std::span<lakh::nats::delivery> batch) {
    std::vector<std::string> ids;
    ids.reserve(batch.size());
    for (const auto &d : batch) {
      ids.push_back(d.id());
    }
    const auto [first, again] = retry.run(
        p,
        [&](pqxx::work &w) {
          // One statement records the batch's ids; one more applies the new ones' effects.
          const auto fresh = inbox.first_deliveries(w, consumer_name, ids);
          std::vector<std::int64_t> tenants;
          std::vector<std::int64_t> cents;
          for (std::size_t i = 0; i < batch.size(); ++i) {
            if (fresh[i]) {
              const auto e = nlohmann::json::parse(batch[i].payload());
              tenants.push_back(e.at("tenant_id").get<std::int64_t>());
              cents.push_back(e.at("total_cents").get<std::int64_t>());
            }
          }
          const std::uint64_t f = tenants.size();
          if (f != 0) {
            // Were a tenant's event counted twice, verify would see deliveries > 1.
            lakh::pg::detail::exec(
                w,
                "INSERT INTO billing.notified AS n (tenant_id, cents) "
                "SELECT * FROM unnest($1::int[], $2::bigint[]) "
                "ON CONFLICT (tenant_id) DO UPDATE SET deliveries = n.deliveries + 1",
                lakh::pg::int_array(tenants), lakh::pg::int_array(cents));
          }
          return std::pair<std::uint64_t, std::uint64_t>{f, batch.size() - f};
        },
        st);
    stats.consumed += first;
    stats.redelivered += again;
  };
  lakh::nats::consume(js, o, count_batch, st);
}

/// The outbox relay of the store's kind and the counting consumer on two threads: start()
/// starts both, stop() (or the destructor) requests stop on both and joins them.
struct relay_threads {
  lakh::pg::pool &pool;
  lakh::nats::jetstream &js;
  billing::names names;
  lakh::pg::outbox box;
  lakh::nats::outbox_publisher pub{
      js, {names.database + "-", lakh::nats::key_order::strict, std::chrono::milliseconds(5000)}};
  relay_stats consumer_stats;
  std::optional<lakh::pg::outbox_relay_thread> relay;
  std::optional<lakh::pg::wal_relay_thread> wal_relay;
  // Constructed in place (emplace): GCC 12 with sanitizers warns falsely about a moved-from
  // temporary jthread's stop_source.
  std::optional<std::jthread> consumer_thread;

  relay_threads(lakh::pg::pool &p, lakh::nats::jetstream &j, billing::names n,
                lakh::pg::outbox_store store)
      : pool(p), js(j), names(std::move(n)), box(make_outbox(p, store)) {}
  /// @throws lakh::pg::wal_setup_error (the wal store) if the slot is missing.
  void start() {
    if (box.store() == lakh::pg::outbox_store::wal) {
      lakh::pg::wal_relay_options o;
      o.on_error = [](const std::exception &e) {
        std::fprintf(stderr, "billing_run relay: %s (retrying)\n", e.what());
      };
      wal_relay.emplace(box, pub, std::move(o)); // streams from the slot on the pool's URL
    } else {
      relay.emplace(box, pub);
    }
    consumer_thread.emplace(
        [this](std::stop_token st) { count_events(pool, js, names, consumer_stats, st); });
  }
  /// The relay's counters, whatever its kind (all zero before start()).
  [[nodiscard]] const lakh::pg::outbox_relay_metrics *metrics() const noexcept {
    return wal_relay ? &wal_relay->metrics() : relay ? &relay->metrics() : nullptr;
  }
  /// One line on where the events are: what the relay published, failed and parked, the
  /// publisher's last error, the slot (wal store) and the consumer; for a run that waits too
  /// long, so that its failure says which stage stalled. Call after stop() (the relay's and
  /// consumer's threads write what it reads).
  [[nodiscard]] std::string describe() {
    std::string s = "relay:";
    if (const auto *m = metrics()) {
      s += " published " + std::to_string(m->published.value()) + ", failed " +
           std::to_string(m->failed.value()) + ", parked " + std::to_string(m->parked.value()) +
           ", last round " + std::to_string(m->since_last_round().count()) + " ms ago";
    }
    if (!pub.last_error().empty()) {
      s += ", last publish error: " + pub.last_error();
    }
    if (box.store() == lakh::pg::outbox_store::wal) {
      try {
        const auto slot = box.wal_slot_status();
        s += "; slot: " + std::string(slot.exists ? "" : "missing, ") +
             (slot.active ? "active" : "inactive") + ", " + std::to_string(slot.unconfirmed_bytes) +
             " bytes unconfirmed";
      } catch (const std::exception &e) {
        s += std::string("; slot: unreadable (") + e.what() + ")";
      }
    }
    s += "; consumer: counted " + std::to_string(consumer_stats.consumed) + ", redelivered " +
         std::to_string(consumer_stats.redelivered) + ", errors " +
         std::to_string(consumer_stats.errors);
    return s;
  }
  void stop() {
    // Each requests stop and joins (the wal relay after confirming to its slot what JetStream
    // acknowledged); the relays stay, with their counters.
    if (relay) {
      relay->stop();
    }
    if (wal_relay) {
      wal_relay->stop();
    }
    consumer_thread.reset();
  }
};

} // namespace billing
