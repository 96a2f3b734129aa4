#pragma once
// examples/saas/common/runtime.hpp: what every SaaS service shares, so that each service's
// main.cpp holds only its own schema and handlers:
//   - log(): structured logs, one JSON object per line on stderr, with the trace id;
//   - metrics_endpoint: GET /metrics (Prometheus text of a lakh::registry) and GET /healthz;
//   - rpc_stats: per-method gRPC latency and error counts, the caller's traceparent, and an
//     exception turned into UNAVAILABLE (logged) instead of a crash;
//   - event_relay: the service's transactional outbox relayed to JetStream (Nats-Msg-Id);
//   - event_consumer: a durable pull consumer; once_per_event() makes its handler run once
//     per event through lakh::pg::inbox, in a transaction scoped to the event's tenant;
//   - serve(): listen, wait for SIGTERM/SIGINT, then drain in this order: stop accepting and
//     finish in-flight calls (they may write outbox events), stop consumers (the batch in
//     hand is finished and acknowledged), stop relays (a round in flight finishes; what is
//     left stays in the outbox for the next start: no event is lost).
// No OpenTelemetry C++ SDK is packaged in Debian 12, so tracing is the W3C traceparent
// header carried by hand (trace.hpp) and written into every log line.

#include "config.hpp"
#include "db.hpp"
#include "signals.hpp"
#include "trace.hpp"

#include <child_process.hpp>

#include <lakh/metrics.hpp>
#include <lakh/nats/jetstream.hpp>
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/pg/inbox.hpp>
#include <lakh/pg/outbox.hpp>

#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace saas {

using json = nlohmann::json;

/// Writes one log line: {"ts":"...","service":...,"level":...,"trace_id":...,"msg":...,...}.
/// Thread-safety: safe (one fwrite per line). Blocks: on stderr.
inline void log(std::string_view service, std::string_view level, std::string_view trace_id,
                std::string_view msg, json fields = json::object()) {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) %
                  std::chrono::seconds(1);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char ts[64];
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms.count()));
  json line = {{"ts", ts}, {"service", service}, {"level", level}, {"msg", msg}};
  if (!trace_id.empty()) {
    line["trace_id"] = trace_id;
  }
  line.update(fields);
  const auto text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::fwrite(text.data(), 1, text.size(), stderr);
}

/// Serves GET /metrics (the registry's Prometheus text) and GET /healthz on host:port from its
/// own thread, from construction until destruction.
class metrics_endpoint {
public:
  /// @throws std::runtime_error naming the address if it cannot listen.
  metrics_endpoint(lakh::registry &r, const std::string &host, int port) {
    http_.Get("/metrics", [&r](const httplib::Request &, httplib::Response &res) {
      res.set_content(r.prometheus_text(), "text/plain; version=0.0.4; charset=utf-8");
    });
    http_.Get("/healthz", [](const httplib::Request &, httplib::Response &res) {
      res.set_content("ok\n", "text/plain");
    });
    if (!http_.bind_to_port(host, port)) {
      throw std::runtime_error("cannot listen on " + host + ":" + std::to_string(port) +
                               " for /metrics");
    }
    thread_ = std::thread([this] { http_.listen_after_bind(); });
  }
  metrics_endpoint(const metrics_endpoint &) = delete;
  metrics_endpoint &operator=(const metrics_endpoint &) = delete;
  ~metrics_endpoint() {
    http_.stop();
    thread_.join();
  }

private:
  httplib::Server http_;
  std::thread thread_;
};

/// The trace of an incoming call: a child of the caller's traceparent, or a new root.
inline trace_context trace_of(const grpc::ServerContext &ctx) {
  const auto &md = ctx.client_metadata();
  if (auto it = md.find("traceparent"); it != md.end()) {
    if (auto t = trace_context::parse(std::string_view(it->second.data(), it->second.size()))) {
      return t->child();
    }
  }
  return trace_context::root();
}

/// Sets a call's deadline and passes the trace on as gRPC metadata.
inline void outgoing(grpc::ClientContext &ctx, const trace_context &t,
                     std::chrono::milliseconds deadline) {
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  ctx.AddMetadata("traceparent", t.header());
}

/// Per-method gRPC metrics and error handling of one service.
class rpc_stats {
public:
  rpc_stats(lakh::registry &r, std::string service, std::initializer_list<const char *> methods)
      : service_(std::move(service)) {
    for (const char *m : methods) {
      auto &e = by_method_[m];
      e.latency = &r.make_histogram("saas_rpc_seconds", "gRPC handler latency",
                                    {{"service", service_}, {"method", m}});
      e.errors = &r.make_counter("saas_rpc_errors_total", "gRPC calls that did not return OK",
                                 {{"service", service_}, {"method", m}});
    }
  }

  /// Runs fn(trace) for `method`: records its latency, counts a non-OK status, logs it with the
  /// trace id, and turns an exception into UNAVAILABLE (the database or broker is down).
  template <class Fn>
  grpc::Status run(const char *method, const grpc::ServerContext &ctx, Fn &&fn) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto trace = trace_of(ctx);
    grpc::Status s;
    try {
      s = fn(trace);
    } catch (const std::exception &e) {
      s = grpc::Status(grpc::StatusCode::UNAVAILABLE, e.what());
    }
    auto &e = by_method_.at(method);
    e.latency->record(std::chrono::steady_clock::now() - t0);
    if (!s.ok()) {
      e.errors->add();
      log(service_, s.error_code() == grpc::StatusCode::UNAVAILABLE ? "error" : "info",
          trace.trace_id, std::string(method) + " failed",
          {{"code", static_cast<int>(s.error_code())}, {"error", s.error_message()}});
    }
    return s;
  }

private:
  struct entry {
    lakh::latency_histogram *latency = nullptr;
    lakh::counter *errors = nullptr;
  };
  std::string service_;
  std::map<std::string, entry, std::less<>> by_method_;
};

/// Grants `table` (and its schema's sequences) to saas_app, as the owner (`admin`).
inline void grant_to_app(lakh::pg::pool &admin, const std::string &table) {
  lakh::pg::with_connection(admin, [&](pqxx::connection &c) {
    pqxx::work w(c);
    w.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON " + table + " TO saas_app");
    w.exec("GRANT USAGE ON ALL SEQUENCES IN SCHEMA " + table.substr(0, table.find('.')) +
           " TO saas_app");
    w.commit();
  });
}

/// An inbox table `<schema>.inbox`, created as the owner (`admin`), used through `p`.
inline lakh::pg::inbox make_inbox(lakh::pg::pool &admin, lakh::pg::pool &p,
                                  const std::string &schema) {
  const auto table = schema + ".inbox";
  lakh::pg::inbox(admin, {table}).create_schema();
  grant_to_app(admin, table);
  return lakh::pg::inbox(p, {table});
}

/// True for a billing period "YYYY-MM" (month 01..12), as billing and invoicing expect.
inline bool valid_period(std::string_view p) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  return p.size() == 7 && digit(p[0]) && digit(p[1]) && digit(p[2]) && digit(p[3]) && p[4] == '-' &&
         digit(p[5]) && digit(p[6]) &&
         ((p[5] == '0' && p[6] != '0') || (p[5] == '1' && p[6] <= '2'));
}

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

/// Creates the stream if missing (idempotent). @throws lakh::nats::error, config_error.
inline void ensure_stream(lakh::nats::jetstream &js) {
  js.ensure_stream({stream_name(),
                    {event_namespace() + ".>"},
                    lakh::nats::storage::file,
                    std::chrono::minutes(2)});
}

/// A service's outbox (`<schema>.outbox`) relayed to JetStream on a thread, from start() to
/// stop(). Events carry Nats-Msg-Id "<schema>-<event id>", so JetStream drops a republished one.
class event_relay {
public:
  event_relay(lakh::pg::pool &p, lakh::nats::jetstream &js, const std::string &schema)
      : box_(p, {schema + ".outbox"}), pub_(js, {schema + "-"}), relay_(box_, pub_) {}

  /// The outbox (enqueue into it in the business transaction).
  lakh::pg::outbox &box() noexcept { return box_; }
  /// Creates the outbox table if missing (as the owner: `admin`) and grants it to saas_app.
  void create_schema(lakh::pg::pool &admin) {
    lakh::pg::outbox(admin, {box_.table()}).create_schema();
    grant_to_app(admin, box_.table());
  }
  void start() {
    thread_.emplace([this](std::stop_token st) { relay_.run(st); });
  }
  /// Finishes the round in flight; unpublished events stay in the outbox.
  void stop() { thread_.reset(); }

private:
  lakh::pg::outbox box_;
  lakh::nats::outbox_publisher pub_;
  lakh::pg::outbox_relay relay_;
  std::optional<std::jthread> thread_;
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

/// A durable pull consumer of `subject` (a topic()) on a thread, from start() to stop(): fetches
/// up to `fetch` events at a time, hands each to the handler, acknowledges it after the handler
/// returned. Events of a batch wait for those before them: keep fetch x (slowest handler) below
/// ack_wait, or JetStream redelivers events still in hand (harmless, wasteful). Reconnects and
/// retries after errors (logged). Delivery is at least once: pair it with once_per_event or
/// another idempotency guard.
class event_consumer {
public:
  event_consumer(std::string service, lakh::nats::jetstream &js, std::string subject,
                 std::string durable, event_handler handler, lakh::registry &metrics,
                 std::chrono::milliseconds ack_wait = std::chrono::seconds(10), int fetch = 64)
      : service_(std::move(service)), js_(&js), subject_(std::move(subject)),
        durable_(std::move(durable)), handler_(std::move(handler)), ack_wait_(ack_wait),
        fetch_(fetch),
        handled_(&metrics.make_counter("saas_events_handled_total", "events handled and acked",
                                       {{"service", service_}, {"subject", subject_}})),
        failed_(&metrics.make_counter("saas_events_failed_total",
                                      "events whose handler threw (redelivered later)",
                                      {{"service", service_}, {"subject", subject_}})) {}

  void start() {
    thread_.emplace([this](std::stop_token st) { loop(st); });
  }
  /// Finishes (and acknowledges) the batch in hand, then returns.
  void stop() { thread_.reset(); }

private:
  void loop(std::stop_token st) {
    std::optional<lakh::nats::pull_consumer> consumer;
    while (!st.stop_requested()) {
      try {
        if (!consumer) {
          consumer.emplace(*js_, stream_name(), subject_, durable_, ack_wait_);
        }
        for (auto &d : consumer->fetch(fetch_, std::chrono::milliseconds(200))) {
          handle(d);
        }
      } catch (const std::exception &e) {
        log(service_, "error", "", "consumer " + durable_ + ": " + e.what() + " (retrying)");
        consumer.reset();
        for (int i = 0; i < 10 && !st.stop_requested(); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
      }
    }
  }

  void handle(lakh::nats::delivery &d) {
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
      log(service_, "error", ev.trace.trace_id, "dropped a malformed event",
          {{"subject", ev.subject}, {"payload", std::string(d.payload())}});
      d.ack();
      return;
    }
    ev.tenant_id = ev.body["tenant_id"].get<std::int64_t>();
    try {
      handler_(ev);
    } catch (const std::exception &e) {
      failed_->add();
      log(service_, "error", ev.trace.trace_id, "event handler failed (redelivered later)",
          {{"subject", ev.subject}, {"event", ev.id}, {"error", e.what()}});
      return; // not acked: JetStream redelivers it after ack_wait
    }
    d.ack();
    handled_->add();
  }

  std::string service_;
  lakh::nats::jetstream *js_;
  std::string subject_;
  std::string durable_;
  event_handler handler_;
  std::chrono::milliseconds ack_wait_;
  int fetch_;
  lakh::counter *handled_;
  lakh::counter *failed_;
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

// ---- main --------------------------------------------------------------------------------

/// Creates a schema's tables once across processes: fn(w) runs under an advisory lock named
/// after the schema, as the database owner (admin pool), then commits.
template <class Fn> void setup_schema(lakh::pg::pool &admin, const std::string &schema, Fn &&fn) {
  ensure_app_role(admin);
  lakh::pg::with_connection(admin, [&](pqxx::connection &c) {
    pqxx::work w(c);
    w.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", "saas schema " + schema);
    w.exec("CREATE SCHEMA IF NOT EXISTS " + schema);
    w.exec("GRANT USAGE ON SCHEMA " + schema + " TO saas_app");
    fn(w);
    w.exec("GRANT USAGE ON ALL SEQUENCES IN SCHEMA " + schema + " TO saas_app");
    w.commit();
  });
}

/// Serves `services` on `addr` until SIGTERM or SIGINT (`sigs` from block_stop_signals), then
/// drains: gRPC calls in flight finish (up to 5 s), then `on_stop` runs (stop consumers, then
/// relays). Returns main's exit status. Logs start and stop.
///
/// GRPC_IDLE_THREADS (default 64, 2..4096) is the sync server's MAX_POLLERS. gRPC starts a
/// thread when no idle one is left and ends a thread that finishes a call while more than
/// MAX_POLLERS are idle; its default of 2 makes a server under steady concurrency create and
/// destroy threads all the time (the gateway's read path went from 2.4k to 4.1k req/s with
/// 64: docs/architecture.md#load).
/// @throws config_error for a malformed GRPC_IDLE_THREADS.
inline int serve(const std::string &service, const sigset_t &sigs, const config &cfg,
                 const std::string &addr, std::initializer_list<grpc::Service *> services,
                 const std::function<void()> &on_stop = {}) {
  grpc::ServerBuilder b;
  b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
                        static_cast<int>(cfg.integer("GRPC_IDLE_THREADS", 64, 2, 4096)));
  int port = 0;
  b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
  for (auto *s : services) {
    b.RegisterService(s);
  }
  auto server = b.BuildAndStart();
  if (!server || port == 0) {
    log(service, "error", "", "cannot listen on " + addr);
    if (on_stop) {
      on_stop();
    }
    return 1;
  }
  log(service, "info", "", "listening", {{"grpc", addr}});
  const int sig = wait_stop_signal(sigs);
  log(service, "info", "", "draining", {{"signal", sig}});
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (on_stop) {
    on_stop();
  }
  log(service, "info", "", "stopped");
  return 0;
}

/// The body of a service's main(): runs fn(), turning an exception (a bad setting, no
/// database) into a logged error and exit status 1.
template <class Fn> int guarded_main(const char *service, Fn &&fn) {
  lakh_examples::die_with_parent(); // under saas.e2e: the service dies with the test
  try {
    return fn();
  } catch (const std::exception &e) {
    log(service, "error", "", e.what());
    return 1;
  }
}

} // namespace saas
