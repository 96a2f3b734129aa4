#pragma once
// examples/saas/common/service_main.hpp: the main() every gRPC service shares, so that each
// service's main.cpp holds only its handlers. service_main(spec, build):
//   1. reads the configuration (environment + .env: config.hpp);
//   2. as the database owner (DATABASE_OWNER_URL, when set), creates the service's login role
//      and applies its schema.sql, then lakh's own tables in the schema (idempotency keys, and
//      the outbox and inbox when the service has them; OUTBOX_STORE=wal: the outbox's slot
//      too) and their grants;
//   3. connects as the service's role (DATABASE_URL), refusing a role that bypasses RLS, with
//      a bounded wait for a pooled connection (an exhausted pool answers UNAVAILABLE);
//   4. calls build(service&) for the gRPC service, serves /metrics and /healthz, starts the
//      outbox relay and the event consumers, and serves gRPC until SIGTERM/SIGINT;
//   5. drains in order: stop accepting and finish calls in flight (they may write outbox
//      events; those on workers() included), stop the consumers (the batch in hand is
//      acknowledged), stop the relay (what is left stays in the outbox for the next start: no event
//      is lost).
// Exit status 0 after a drain, 1 when a setting is missing or malformed or startup fails (the
// log line names the problem).

#include "auth.hpp"
#include "config.hpp"
#include "db.hpp"
#include "events.hpp"
#include "housekeeping.hpp"
#include "log.hpp"
#include "rpc.hpp"

#include <child_process.hpp>
#include <stop_signals.hpp>

#include <lakh/metrics.hpp>
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/prometheus.hpp>
#include <lakh/worker_pool.hpp>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <httplib.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace saas {

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

/// What a service is, for service_main.
struct service_spec {
  std::string name;            ///< "billing": role saas_billing, BILLING_GRPC_ADDR, ...
  std::string schema;          ///< the PostgreSQL schema it owns
  std::string_view schema_sql; ///< its schema.sql (embedded at build time)
  int grpc_port = 0;           ///< default port on 127.0.0.1 (<NAME>_GRPC_ADDR overrides)
  int metrics_port = 0;        ///< default /metrics port (<NAME>_METRICS_PORT overrides)
  bool outbox = false;         ///< relays <schema>.outbox to JetStream
  bool inbox = false;          ///< consumes events once each through <schema>.inbox
  std::vector<prepared_statement> prepared{}; ///< prepared on each database connection
};

/// The upper-case form of a service name, for its settings: "billing" -> "BILLING".
inline std::string upper(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return s;
}

/// A running service's shared parts, handed to the build function of service_main.
class service {
public:
  service(const service_spec &spec, config cfg)
      : spec_(spec), cfg_(std::move(cfg)), auth_(spec.name, service_token_secret(cfg_)),
        db_(pool_options(cfg_, spec.prepared)), keys_(db_, {spec.schema + ".idempotency_keys"}),
        deadline_(cfg_.millis("GRPC_DEADLINE_MS", std::chrono::milliseconds(2000))) {}

  [[nodiscard]] const std::string &name() const noexcept { return spec_.name; }
  [[nodiscard]] const config &cfg() const noexcept { return cfg_; }
  [[nodiscard]] lakh::registry &metrics() noexcept { return metrics_; }
  [[nodiscard]] const service_auth &auth() const noexcept { return auth_; }
  /// The pool of connections as the service's role.
  [[nodiscard]] lakh::pg::pool &db() noexcept { return db_; }
  /// <schema>.idempotency_keys: callers' keys recorded with the effects (rpc.hpp idempotent()).
  [[nodiscard]] lakh::pg::idempotency_store &keys() noexcept { return keys_; }
  /// GRPC_DEADLINE_MS: the deadline of this service's outgoing calls.
  [[nodiscard]] std::chrono::milliseconds deadline() const noexcept { return deadline_; }
  /// The outbox (spec.outbox): enqueue events into it in the business transaction.
  [[nodiscard]] lakh::pg::outbox &outbox() { return relay_.value().box(); }

  /// Threads for handlers on gRPC's callback API that wait (rpc_server::run_on): DB_WORKERS
  /// threads (default 8) and a queue of 1024 calls, started on the first call (make it from
  /// the build function of service_main). service_main drains it after the gRPC server's
  /// shutdown, before the server goes away.
  [[nodiscard]] lakh::worker_pool &workers() {
    if (!workers_) {
      workers_.emplace(static_cast<std::size_t>(cfg_.integer("DB_WORKERS", 8, 1, 1000)), 1024);
    }
    return *workers_;
  }

  /// The inbox (spec.inbox): ids of the events already handled, per consumer.
  [[nodiscard]] lakh::pg::inbox &inbox() { return inbox_.value(); }

  /// Deletes expired idempotency records and inbox ids older than INBOX_RETENTION_HOURS
  /// (192: longer than the stream keeps an event, so no redelivery can find its id gone).
  /// Returns what it deleted, per table. @throws pqxx errors, lakh::pg::acquire_error.
  json purge() {
    json out = json::object();
    if (const auto n = keys_.purge_expired(); n > 0) {
      out[keys_.table()] = n;
    }
    if (inbox_) {
      const auto keep = std::chrono::hours(cfg_.integer("INBOX_RETENTION_HOURS", 192, 169, 87600));
      if (const auto n = inbox_->purge(keep); n > 0) {
        out[spec_.schema + ".inbox"] = n;
      }
    }
    return out;
  }

  /// A channel to another service: <NAME>_GRPC_ADDR, default 127.0.0.1:<port>.
  [[nodiscard]] std::shared_ptr<grpc::Channel> channel_to(const std::string &other,
                                                          int port) const {
    return channel(cfg_.get(upper(other) + "_GRPC_ADDR", "127.0.0.1:" + std::to_string(port)));
  }

  /// Runs fn(w, event) at most once per event of `event_name` (a topic() suffix), through
  /// the inbox, in a transaction scoped to the event's tenant, from a durable consumer.
  template <class Fn>
  void on_event(const std::string &event_name, const std::string &durable, Fn fn, int fetch = 64) {
    consume(event_name, durable, once_per_event(db_, inbox_.value(), durable, std::move(fn)),
            fetch);
  }
  /// A durable consumer of `event_name` with a raw handler (it must be idempotent itself).
  void consume(const std::string &event_name, const std::string &durable, event_handler h,
               int fetch = 64) {
    consumers_.push_back(
        std::make_unique<event_consumer>(spec_.name, js_.value(), topic(event_name), durable,
                                         std::move(h), metrics_, std::chrono::seconds(10), fetch));
  }

private:
  template <class Build> friend int service_main(const service_spec &, Build &&, int, char **);

  static lakh::pg::pool_options pool_options(const config &cfg,
                                             const std::vector<prepared_statement> &prepared) {
    lakh::pg::pool_options o;
    if (!prepared.empty()) {
      o.on_connect = [prepared](pqxx::connection &c) { prepare_all(c, prepared); };
    }
    o.url = cfg.require("DATABASE_URL");
    o.max_size = static_cast<std::size_t>(cfg.integer("DB_POOL_SIZE", 16, 1, 1000));
    o.acquire_timeout = cfg.millis("DB_ACQUIRE_TIMEOUT_MS", std::chrono::milliseconds(1000));
    return o;
  }

  /// Steps 2 and 3 of the header comment.
  void set_up_database() {
    const auto role = role_of(spec_.name);
    if (auto owner_url = cfg_.find("DATABASE_OWNER_URL")) {
      lakh::pg::pool owner(*owner_url, 1);
      migrate(owner, role, spec_.schema, spec_.schema_sql);
      lakh::pg::idempotency_store(owner, {keys_.table()}).create_schema();
      std::vector<std::string> tables{keys_.table()};
      if (spec_.outbox) {
        lakh::pg::outbox(owner, outbox_options(spec_.schema, store_)).create_schema();
        tables.push_back(spec_.schema + ".outbox");
      }
      if (spec_.inbox) {
        lakh::pg::inbox(owner, {spec_.schema + ".inbox"}).create_schema();
        tables.push_back(spec_.schema + ".inbox");
      }
      create_jobs_table(owner, spec_.schema, role);
      lakh::pg::with_connection(owner, [&](pqxx::connection &c) {
        pqxx::work w(c);
        w.exec("GRANT USAGE ON SCHEMA " + spec_.schema + " TO " + role);
        for (const auto &t : tables) {
          w.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON " + t + " TO " + role);
        }
        w.exec("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA " + spec_.schema + " TO " +
               role);
        w.commit();
      });
    }
    check_least_privilege(db_, role);
  }

  void set_up_events() {
    if (!spec_.outbox && !spec_.inbox) {
      return;
    }
    js_.emplace(cfg_.require("NATS_URL"));
    ensure_stream(*js_);
    if (spec_.outbox) {
      std::string replication_url;
      if (store_ == lakh::pg::outbox_store::wal) {
        // The wal relay streams as the owner, the one role that needs REPLICATION: the
        // service's own role never gets it (README.md, "The outbox store").
        replication_url = cfg_.get("DATABASE_OWNER_URL", "");
        if (replication_url.empty()) {
          throw config_error("OUTBOX_STORE=wal needs DATABASE_OWNER_URL (environment or .env): "
                             "the outbox relay streams from its slot as the owner");
        }
      }
      relay_.emplace(spec_.name, db_, *js_, spec_.schema, store_, replication_url);
    }
    if (spec_.inbox) {
      inbox_.emplace(db_, lakh::pg::inbox_options{spec_.schema + ".inbox"});
    }
  }

  const service_spec &spec_;
  config cfg_;
  lakh::pg::outbox_store store_ = outbox_store_of(cfg_);
  lakh::registry metrics_;
  service_auth auth_;
  lakh::pg::pool db_;
  lakh::pg::idempotency_store keys_;
  std::chrono::milliseconds deadline_;
  std::optional<lakh::nats::jetstream> js_;
  std::optional<event_relay> relay_;
  std::optional<lakh::pg::inbox> inbox_;
  std::vector<std::unique_ptr<event_consumer>> consumers_;
  std::optional<lakh::worker_pool> workers_;
};

/// The main() of a gRPC service (see the header comment). build(service&) returns the
/// std::unique_ptr of its grpc::Service implementation; argv answers --help and --version
/// (saas::command_line). Returns main's exit status.
template <class Build>
int service_main(const service_spec &spec, Build &&build, int argc, char **argv) {
  if (const auto done =
          command_line(argc, argv, "saas_" + spec.name,
                       "The " + spec.name +
                           " service of lakh's SaaS example "
                           "(examples/saas/README.md): gRPC inside, its own schema.")) {
    return *done;
  }
  lakh_examples::die_with_parent(); // under saas.e2e: the service dies with the test
  quiet_abseil_mutexes();
  const sigset_t sigs = lakh_examples::block_stop_signals();
  try {
    service svc(spec, config::load());
    svc.set_up_database();
    svc.set_up_events();
    const auto &cfg = svc.cfg();
    metrics_endpoint http(svc.metrics(), "127.0.0.1",
                          cfg.port(upper(spec.name) + "_METRICS_PORT", spec.metrics_port));
    auto impl = build(svc);
    // grpc.health.v1.Health (SERVING until the drain, for grpc_health_probe and load
    // balancers) and, unless GRPC_REFLECTION=0, server reflection (grpcurl lists and
    // describes the methods); neither asks for the service token.
    grpc::EnableDefaultHealthCheckService(true);
    if (cfg.integer("GRPC_REFLECTION", 1, 0, 1) == 1) {
      grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    }
    grpc::ServerBuilder b;
    // MAX_POLLERS: idle sync-server threads kept (gRPC's default of 2 makes a server under
    // steady concurrency create and destroy a thread per call: docs/architecture.md#load).
    b.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
                          static_cast<int>(cfg.integer("GRPC_IDLE_THREADS", 64, 2, 4096)));
    const auto addr =
        cfg.get(upper(spec.name) + "_GRPC_ADDR", "127.0.0.1:" + std::to_string(spec.grpc_port));
    int port = 0;
    b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
    b.RegisterService(impl.get());
    auto server = b.BuildAndStart();
    if (!server || port == 0) {
      log(spec.name, "error", "cannot listen on " + addr);
      return 1;
    }
    if (svc.relay_) {
      svc.relay_->start();
    }
    std::optional<housekeeping> purger(
        std::in_place, spec.name, svc.db(), spec.schema,
        std::chrono::milliseconds(cfg.integer("PURGE_INTERVAL_MS", 60000, 1000, 86400000)),
        [&svc] { return svc.purge(); });
    for (auto &c : svc.consumers_) {
      c->start();
    }
    log(spec.name, "info", "listening", {{"grpc", addr}});
    const int sig = lakh_examples::wait_stop_signal(sigs);
    log(spec.name, "info", "draining", {{"signal", sig}});
    server->GetHealthCheckService()->SetServingStatus(false);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (svc.workers_) {
      svc.workers_->shutdown(); // the calls they still hold finish before the server goes
    }
    purger.reset();
    for (auto &c : svc.consumers_) {
      c->stop();
    }
    if (svc.relay_) {
      svc.relay_->stop();
    }
    log(spec.name, "info", "stopped");
    return 0;
  } catch (const std::exception &e) {
    log(spec.name, "error", e.what());
    return 1;
  }
}

} // namespace saas
