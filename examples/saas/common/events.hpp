#pragma once
// examples/saas/common/events.hpp: the platform's events on NATS JetStream.
//   - event_namespace(), topic(), stream_name(), ensure_stream(): one stream per platform
//     ("<NS>", subjects "<ns>.>"), with retention limits so that it does not grow forever;
//   - outbox_store_of(): OUTBOX_STORE, where outboxes keep their events (rows or the WAL);
//   - event_relay: a service's transactional outbox relayed to JetStream
//     (lakh::pg::outbox_relay_thread, or lakh::pg::wal_relay_thread with the wal store);
//   - event_consumer: a durable consumer on a thread (lakh::nats::consume, which reconnects
//     with lakh::backoff), handing each event to a handler with its tenant and trace;
//   - once_per_event(): a handler run at most once per event id through lakh::pg::inbox, in a
//     transaction scoped to the event's tenant.

#include "config.hpp"
#include "db.hpp"
#include "log.hpp"
#include "trace.hpp"

#include <lakh/metrics.hpp>
#include <lakh/nats/jetstream.hpp>
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/nats/pull_consumer.hpp>
#include <lakh/pg/inbox.hpp>
#include <lakh/pg/outbox.hpp>
#include <lakh/pg/outbox_relay.hpp>
#include <lakh/pg/wal_relay.hpp>
#include <lakh/prometheus.hpp>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

namespace saas {

// ---- events -----------------------------------------------------------------------------

/// The platform's event namespace, EVENTS_NAMESPACE (environment or .env; default "saas";
/// 1..32 of [a-z0-9]): events are subjects "<ns>.<event>" of the JetStream stream "<NS>", and
/// Redis keys start with "<ns>:", so that two platforms (two test runs) can share one NATS
/// and one Redis. Read once, on first use. @throws config_error naming the variable.
inline const std::string &event_namespace() {
  static const std::string ns = [] {
    auto v = config::load().get("EVENTS_NAMESPACE", "saas");
    if (v.empty() || v.size() > 32 ||
        v.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789") != std::string::npos) {
      throw config_error("EVENTS_NAMESPACE=\"" + v + "\" must be 1..32 of [a-z0-9]");
    }
    return v;
  }();
  return ns;
}

/// The subject of an event: topic("invoice.issued") is "saas.invoice.issued".
inline std::string topic(std::string_view event) {
  return event_namespace() + "." + std::string(event);
}

/// The stream that holds every event of the platform: the namespace in upper case.
inline std::string stream_name() {
  auto s = event_namespace();
  for (auto &c : s) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return s;
}

/// Creates the stream if missing (idempotent), with the platform's retention: events older
/// than 7 days or beyond 1 GiB are discarded (consumers ack within seconds; the outbox, not
/// the stream, is the record). An operator's other settings are kept.
/// @throws lakh::nats::nats_error, config_error.
inline void ensure_stream(lakh::nats::jetstream &js) {
  lakh::nats::stream_config c{stream_name(), {event_namespace() + ".>"}};
  c.max_age = std::chrono::hours(24 * 7);
  c.max_bytes = std::int64_t{1} << 30;
  js.ensure_stream(c);
}

/// OUTBOX_STORE (environment or .env): "table" (the default), each event a row of
/// `<schema>.outbox`; or "wal", each event a transactional logical message relayed from a
/// replication slot, which needs wal_level=logical and DATABASE_OWNER_URL with REPLICATION
/// (README.md, "The outbox store"). @throws config_error naming the variable.
inline lakh::pg::outbox_store outbox_store_of(const config &cfg) {
  const auto v = cfg.get("OUTBOX_STORE", "table");
  if (v != "table" && v != "wal") {
    throw config_error("OUTBOX_STORE=\"" + v + "\" must be table or wal");
  }
  return v == "wal" ? lakh::pg::outbox_store::wal : lakh::pg::outbox_store::table;
}

/// The options of a service's outbox `<schema>.outbox`, the same for its owner (who creates
/// it) and the service: published rows are deleted (delete_published), so the table holds
/// only what is still to be sent (with the wal store: only what was parked).
inline lakh::pg::outbox_options outbox_options(const std::string &schema,
                                               lakh::pg::outbox_store store) {
  return {schema + ".outbox", true, std::size_t{1} << 20, store};
}

/// A service's outbox relayed to JetStream on a thread, from start() to stop(). Events carry
/// Nats-Msg-Id "<schema>-<event id>", so JetStream drops a republished one. With the wal
/// store the relay streams from the outbox's slot on `replication_url` (a role with
/// REPLICATION); its errors are logged and retried.
class event_relay {
public:
  event_relay(std::string service, lakh::pg::pool &p, lakh::nats::jetstream &js,
              const std::string &schema, lakh::pg::outbox_store store,
              std::string replication_url = {})
      : service_(std::move(service)), box_(p, outbox_options(schema, store)),
        pub_(js, {schema + "-"}), replication_url_(std::move(replication_url)) {}

  /// The outbox (enqueue into it in the business transaction).
  lakh::pg::outbox &box() noexcept { return box_; }
  /// @throws lakh::pg::wal_setup_error (the wal store) naming what the setup lacks.
  void start() {
    if (box_.store() == lakh::pg::outbox_store::table) {
      thread_.emplace(box_, pub_);
      return;
    }
    lakh::pg::wal_relay_options o;
    o.conninfo = replication_url_;
    o.on_error = [this](const std::exception &e) {
      log(service_, "error", std::string("outbox relay: ") + e.what() + " (retrying)");
    };
    wal_thread_.emplace(box_, pub_, std::move(o));
  }
  /// Finishes the round in flight; unpublished events stay in the outbox (the wal store: in
  /// its slot, after the position the relay confirmed).
  void stop() {
    thread_.reset();
    wal_thread_.reset();
  }

private:
  std::string service_;
  lakh::pg::outbox box_;
  lakh::nats::outbox_publisher pub_;
  std::string replication_url_;
  std::optional<lakh::pg::outbox_relay_thread> thread_;
  std::optional<lakh::pg::wal_relay_thread> wal_thread_;
};

/// What a consumer's handler gets.
struct event {
  std::string id;         ///< Nats-Msg-Id (the producer's outbox event id)
  std::string subject;    ///< "saas.invoice.issued"
  json body;              ///< the payload; always has "tenant_id"
  std::int64_t tenant_id; ///< body["tenant_id"]
  trace_context trace;    ///< a child of the producer's traceparent header (or a new root)
  std::uint64_t delivery; ///< 1 the first time JetStream delivered it
};

/// Handles one event; throwing leaves it unacknowledged (redelivered after the ack wait).
using event_handler = std::function<void(const event &)>;

/// A durable consumer of `subject` (a topic()) on a thread, from start() to stop(), on
/// lakh::nats::consume: fetches up to `fetch` events at a time, hands each to the handler,
/// acknowledges it after the handler returned. Events of a batch wait for those before them:
/// keep fetch x (slowest handler) below ack_wait, or JetStream redelivers events still in hand
/// (harmless, wasteful). Reconnects and retries after errors (logged). Delivery is at least
/// once: pair it with once_per_event or another idempotency guard.
class event_consumer {
public:
  event_consumer(std::string service, lakh::nats::jetstream &js, std::string subject,
                 std::string durable, event_handler handler, lakh::registry &metrics,
                 std::chrono::milliseconds ack_wait = std::chrono::seconds(10), int fetch = 64)
      : service_(std::move(service)), js_(&js), handler_(std::move(handler)),
        handled_(&metrics.make_counter("saas_events_handled_total", "events handled and acked",
                                       {{"service", service_}, {"subject", subject}})),
        failed_(&metrics.make_counter("saas_events_failed_total",
                                      "events whose handler threw (redelivered later)",
                                      {{"service", service_}, {"subject", subject}})) {
    options_.stream = stream_name();
    options_.subject = std::move(subject);
    options_.durable = std::move(durable);
    options_.ack_wait = ack_wait;
    options_.batch = fetch;
    options_.on_error = [this](const std::exception &e) {
      log(service_, "error", "consumer " + options_.durable + ": " + e.what() + " (retrying)");
    };
  }

  void start() {
    thread_.emplace([this](std::stop_token st) {
      lakh::nats::consume(
          *js_, options_, [this](lakh::nats::delivery &d) { return handle(d); }, st);
    });
  }
  /// Finishes (and acknowledges) the batch in hand, then returns.
  void stop() { thread_.reset(); }

private:
  lakh::nats::verdict handle(const lakh::nats::delivery &d) {
    const auto tp = trace_context::parse(d.header("traceparent"));
    event ev{d.id(),
             std::string(d.subject()),
             json::parse(d.payload(), nullptr, false),
             0,
             tp ? tp->child() : trace_context::root(),
             d.delivery_count()};
    if (!ev.body.is_object() || !ev.body.contains("tenant_id") ||
        !ev.body["tenant_id"].is_number_integer() || ev.id.empty()) {
      // A malformed event can never succeed: acknowledge it (and say so) instead of looping.
      log(service_, "error", ev.trace, "dropped a malformed event",
          {{"subject", ev.subject}, {"payload", std::string(d.payload())}});
      return lakh::nats::verdict::ack;
    }
    ev.tenant_id = ev.body["tenant_id"].get<std::int64_t>();
    try {
      handler_(ev);
    } catch (const std::exception &e) {
      failed_->add();
      log(service_, "error", ev.trace, "event handler failed (redelivered later)",
          {{"subject", ev.subject}, {"event", ev.id}, {"error", e.what()}});
      return lakh::nats::verdict::leave; // JetStream redelivers it after ack_wait
    }
    handled_->add();
    return lakh::nats::verdict::ack;
  }

  std::string service_;
  lakh::nats::jetstream *js_;
  event_handler handler_;
  lakh::counter *handled_;
  lakh::counter *failed_;
  lakh::nats::consume_options options_;
  std::optional<std::jthread> thread_;
};

/// An event_handler that runs fn(w, ev) at most once per event id: in one transaction, scoped
/// to the event's tenant (row-level security), that records the id in `inbox` for `consumer`
/// (a redelivery finds it and does nothing). Deadlocks and lost connections are retried.
template <class Fn>
event_handler once_per_event(lakh::pg::pool &p, lakh::pg::inbox &inbox, std::string consumer,
                             Fn fn) {
  return [&p, &inbox, consumer = std::move(consumer), fn = std::move(fn)](const event &ev) {
    lakh::pg::retrier retry;
    in_tenant(retry, p, ev.tenant_id, [&](pqxx::work &w) {
      if (inbox.first_delivery(w, consumer, ev.id)) {
        fn(w, ev);
      }
      return 0;
    });
  };
}

} // namespace saas
