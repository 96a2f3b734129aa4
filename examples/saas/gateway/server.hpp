#pragma once
// examples/saas/gateway/server.hpp: what every request to the gateway goes through (route():
// authentication, limits, the Idempotency-Key, trace, metrics, logs, the answer for an
// exception) and the gRPC calls to the owning services, made with gRPC's callback API so that
// no thread waits for an answer. The HTTP server is http_server.hpp, the routes routes.hpp.
//
// Threads: GATEWAY_THREADS event loops (the HTTP connections; a request that needs nothing
// but cached state and gRPC runs there), and a pool of DB_POOL_SIZE threads for what blocks
// on the database: a key not in the cache, signups, the admin route.
#include "../common/auth.hpp"
#include "../common/db.hpp"
#include "../common/housekeeping.hpp"
#include "../common/log.hpp"
#include "../common/rpc.hpp"
#include "http.hpp"
#include "http_server.hpp"
#include "keys.hpp"
#include "limits.hpp"
#include "signup.hpp"

#include <lakh/idempotency.hpp>
#include <lakh/metrics.hpp>
#include <lakh/prometheus.hpp>

#include <boost/asio/thread_pool.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>

namespace gateway {

/// What a route handler gets besides the request.
struct request_context {
  std::int64_t tenant = 0;                  ///< 0 on public routes
  saas::trace_context trace;                ///< a child of the client's traceparent
  std::optional<saas::idempotency_ref> key; ///< POST: the Idempotency-Key and fingerprint
};

/// A request from admission to its answer, shared with the gRPC callbacks that finish it.
struct pending {
  std::shared_ptr<http::exchange> ex;
  request_context rc;
  std::optional<lakh::permit> permit; ///< the tenant's in-flight slot, until the answer
  std::chrono::steady_clock::time_point t0;
  bool post = false;
  [[nodiscard]] const http::request &req() const { return ex->req; }
};
using pending_ptr = std::shared_ptr<pending>;

class server {
public:
  explicit server(const saas::config &cfg)
      : cfg_(cfg), auth_("gateway", saas::service_token_secret(cfg)),
        deadline_(cfg.millis("GRPC_DEADLINE_MS", std::chrono::milliseconds(2000))),
        db_(pool_options(cfg)), keys_(db_, cfg),
        limits_(static_cast<double>(cfg.integer("TENANT_RATE", 1000, 1, 10'000'000)),
                static_cast<double>(cfg.integer("TENANT_BURST", 2000, 1, 10'000'000)),
                cfg.integer("TENANT_CONCURRENCY", 8, 1, 100'000)),
        auth_failures_(static_cast<double>(cfg.integer("AUTH_FAILURE_RATE", 1, 1, 1'000'000)),
                       static_cast<double>(cfg.integer("AUTH_FAILURE_BURST", 20, 1, 1'000'000))),
        signup_rate_(static_cast<double>(cfg.integer("SIGNUP_RATE", 1, 1, 1'000'000)),
                     static_cast<double>(cfg.integer("SIGNUP_BURST", 20, 1, 1'000'000))),
        users_(v1::UserService::NewStub(channel("USER", 15051))),
        subscriptions_(v1::SubscriptionService::NewStub(channel("SUBSCRIPTION", 15052))),
        billing_(v1::BillingService::NewStub(channel("BILLING", 15053))),
        invoicing_(v1::InvoicingService::NewStub(channel("INVOICING", 15054))),
        payments_(v1::PaymentService::NewStub(channel("PAYMENT", 15055))),
        notifications_(v1::NotificationService::NewStub(channel("NOTIFICATION", 15056))),
        signups_(db_, keys_, *users_, auth_, deadline_),
        requests_(metrics_.make_counter("saas_gateway_requests_total", "HTTP requests")),
        limited_(metrics_.make_counter("saas_gateway_limited_total",
                                       "requests refused by a limit (429)")),
        cancelled_(metrics_.make_counter(
            "saas_gateway_cancelled_total",
            "requests whose client went away before the answer (downstream call cancelled)")),
        latency_(metrics_.make_histogram("saas_gateway_request_seconds", "request latency")),
        http_(router_, static_cast<int>(cfg.integer("GATEWAY_THREADS", default_threads(), 1, 1024)),
              std::size_t{1} << 20), // larger bodies: 413
        blocking_(static_cast<std::size_t>(cfg.integer("DB_POOL_SIZE", 8, 1, 1000))),
        purger_("gateway", db_, "gateway",
                std::chrono::milliseconds(cfg.integer("PURGE_INTERVAL_MS", 60000, 1000, 86400000)),
                [this, keep = cfg.integer("SIGNUP_RETENTION_HOURS", 24, 24, 87600)] {
                  return purge_signups(keep);
                }) {
    saas::check_least_privilege(db_, saas::role_of("gateway"));
    routes();
  }

  /// Serves until stop() (from another thread); in-flight requests finish first. False when
  /// it cannot listen on host:port.
  bool listen(const std::string &host, int port) {
    const bool ok = http_.run(host, port);
    blocking_.join();
    return ok;
  }
  void stop() { http_.stop(); }

private:
  /// Starts a request's work; answers through finish() or call().
  using handler = std::function<void(const pending_ptr &)>;
  /// A route that blocks (on the database): runs on the blocking pool.
  using blocking_handler = std::function<reply(const request_context &, const http::request &)>;
  enum class access : std::uint8_t { tenant, anonymous, admin };

  static long long default_threads() { return std::max(1U, std::thread::hardware_concurrency()); }

  static lakh::pg::pool_options pool_options(const saas::config &cfg) {
    lakh::pg::pool_options o;
    o.url = cfg.require("DATABASE_URL");
    o.max_size = static_cast<std::size_t>(cfg.integer("DB_POOL_SIZE", 8, 1, 1000));
    o.acquire_timeout = cfg.millis("DB_ACQUIRE_TIMEOUT_MS", std::chrono::milliseconds(1000));
    return o;
  }

  std::shared_ptr<grpc::Channel> channel(const std::string &name, int port) const {
    return saas::channel(cfg_.get(name + "_GRPC_ADDR", "127.0.0.1:" + std::to_string(port)));
  }

  /// Calls a gRPC method (start(ctx, in, out, done): the stub's async() form) with the
  /// deadline, the trace and the service token, and with the request's idempotency key when
  /// `write`. then(ctx, out) makes the answer, or returns void when it makes another call
  /// that answers. The call is cancelled when the client goes away.
  template <class Out, class In, class Start, class Then>
  void call(const pending_ptr &p, bool write, In in, Start start, Then then) {
    struct rpc {
      grpc::ClientContext ctx;
      In in;
      Out out;
    };
    auto c = std::make_shared<rpc>();
    c->in = std::move(in);
    saas::prepare_call(c->ctx, auth_, p->rc.trace, deadline_,
                       write && p->rc.key ? &*p->rc.key : nullptr);
    start(&c->ctx, &c->in, &c->out,
          [this, p, c, then = std::move(then)](const grpc::Status &s) mutable {
            try {
              if (s.ok()) {
                if constexpr (std::is_void_v<
                                  std::invoke_result_t<Then &, grpc::ClientContext &, Out &>>) {
                  then(c->ctx, c->out);
                } else {
                  finish(p, then(c->ctx, c->out));
                }
              } else if (s.error_code() == grpc::StatusCode::CANCELLED && p->ex->cancelled()) {
                cancelled_.add();
                finish(p, fail(499, "the client closed the request")); // nobody reads it
              } else {
                finish(p, from_grpc(c->ctx, s, p->rc.trace.trace_id));
              }
            } catch (const std::exception &e) {
              fail_with(p, e);
            }
          });
    p->ex->on_cancel([c] { c->ctx.TryCancel(); });
  }

  /// Admission of a request: the reply that refuses it, or nothing (rc.tenant set). `tenant`:
  /// the key's tenant if the cache knew it (else authenticate() may query the database).
  std::optional<reply> admit(access a, const http::request &req, request_context &rc,
                             std::optional<lakh::permit> &permit,
                             std::optional<std::int64_t> tenant) {
    if (a == access::admin) {
      const auto token = cfg_.find("GATEWAY_ADMIN_TOKEN");
      if (!token || token->size() < 32) {
        return fail(404, "no such route");
      }
      if (!saas::equal_constant_time(req.header(http::bhttp::field::authorization),
                                     "Bearer " + *token)) {
        return fail(401, "missing or wrong admin token");
      }
      return std::nullopt;
    }
    if (a == access::anonymous) {
      return std::nullopt;
    }
    if (!auth_failures_.available(req.remote_addr)) {
      return reply{429, {{"error", "too many failed authentications"}}, nullptr, 10};
    }
    rc.tenant =
        tenant ? *tenant : keys_.authenticate(req.header(http::bhttp::field::authorization));
    if (rc.tenant == 0) {
      (void)auth_failures_.take(req.remote_addr);
      return fail(401, "missing or wrong API key");
    }
    auto [p, why] = limits_.admit(rc.tenant);
    if (!p.owns()) {
      return reply{429, {{"error", why}}, nullptr, 1};
    }
    permit.emplace(std::move(p));
    return std::nullopt;
  }

  /// The Idempotency-Key of a POST, bound to its fingerprint, or the 400 that refuses it.
  static std::optional<reply> idempotency_key(const http::request &req, request_context &rc) {
    const auto key = req.header("Idempotency-Key");
    if (key.empty()) {
      return fail(400, "Idempotency-Key header required");
    }
    try {
      lakh::validate_idempotency_key(key, "Idempotency-Key");
    } catch (const std::invalid_argument &e) {
      return fail(400, std::string(e.what()) +
                           " (use a random value, e.g. a UUID, per request and its retries)");
    }
    rc.key = saas::idempotency_ref{std::string(key),
                                   lakh::fingerprint(req.method(), req.path, req.body())};
    return std::nullopt;
  }

  /// Registers a route: admission, Idempotency-Key (POST), trace, then `h`; on the blocking
  /// pool when `blocking` or when the API key is not cached.
  void route(const char *method, std::string_view pattern, access a, handler h,
             bool blocking = false) {
    const bool post = std::string_view(method) == "POST";
    router_.add(method, pattern, [this, h = std::move(h), a, post, blocking](const auto &ex) {
      requests_.add();
      auto p = std::make_shared<pending>();
      p->ex = ex;
      p->t0 = std::chrono::steady_clock::now();
      p->post = post;
      auto parsed = saas::trace_context::parse(ex->req.header("traceparent"));
      p->rc.trace = parsed ? parsed->child() : saas::trace_context::root();
      std::optional<std::int64_t> tenant;
      if (a == access::tenant) {
        tenant = keys_.tenant_if_cached(ex->req.header(http::bhttp::field::authorization));
      }
      auto run = [this, &h, a, p, tenant] {
        try {
          auto refused = admit(a, p->req(), p->rc, p->permit, tenant);
          if (!refused && p->post && a != access::admin) {
            refused = idempotency_key(p->req(), p->rc);
          }
          if (refused) {
            finish(p, std::move(*refused));
          } else {
            h(p);
          }
        } catch (const std::exception &e) {
          fail_with(p, e);
        }
      };
      if (blocking || (a == access::tenant && !tenant)) {
        boost::asio::post(blocking_, run);
      } else {
        run();
      }
    });
  }

  /// A route whose handler blocks (the database): it runs on the blocking pool.
  void blocking_route(const char *method, std::string_view pattern, access a, blocking_handler h) {
    route(
        method, pattern, a,
        [this, h = std::move(h)](const pending_ptr &p) { finish(p, h(p->rc, p->req())); }, true);
  }

  /// The answer for an exception: 503 when a retry may help, 500 for a bug; never its text.
  void fail_with(const pending_ptr &p, const std::exception &e) {
    finish(p, unavailable(saas::transient(e) ? 503 : 500, p->rc.trace.trace_id), e.what());
  }

  /// Answers `r` (headers, metrics, logs); the tenant's in-flight slot is free again.
  void finish(const pending_ptr &p, reply r, const std::string &error = {}) {
    if (r.status == 429) {
      limited_.add();
    }
    http::response res{r.status, r.body.dump()};
    res.headers.emplace_back("traceparent", p->rc.trace.header());
    if (r.replayed != nullptr) {
      res.headers.emplace_back("Idempotent-Replayed", r.replayed);
    }
    if (r.retry_after > 0) {
      res.headers.emplace_back("Retry-After", std::to_string(r.retry_after));
    }
    latency_.record(std::chrono::steady_clock::now() - p->t0);
    if (p->post || r.status >= 400) { // reads are not logged one by one (the hot path)
      saas::json fields = {{"method", p->req().method()},
                           {"path", p->req().path},
                           {"status", r.status},
                           {"tenant", p->rc.tenant}};
      if (!error.empty()) {
        fields["error"] = error;
      }
      saas::log("gateway", r.status >= 500 && r.status != 499 ? "error" : "info", p->rc.trace,
                "request", std::move(fields));
    }
    p->permit.reset();
    p->ex->answer(std::move(res));
  }

  void routes(); // routes.hpp

  /// Forgets signups older than `hours` (SIGNUP_RETENTION_HOURS, at least the 24 h the user
  /// service keeps CreateTenant's key): a retry after that is a new signup.
  saas::json purge_signups(long long hours) {
    const auto n = lakh::pg::with_connection(db_, [&](pqxx::connection &c) {
      pqxx::work w(c);
      const auto r = w.exec_params(
          "DELETE FROM gateway.signups WHERE created_at < now() - $1 * interval '1 hour'", hours);
      w.commit();
      return r.affected_rows();
    });
    return n > 0 ? saas::json{{"gateway.signups", n}} : saas::json::object();
  }

  saas::config cfg_;
  saas::service_auth auth_;
  std::chrono::milliseconds deadline_;
  lakh::pg::pool db_;
  api_keys keys_;
  tenant_limits limits_;
  keyed_buckets<std::string> auth_failures_;
  keyed_buckets<std::string> signup_rate_;
  std::unique_ptr<v1::UserService::Stub> users_;
  std::unique_ptr<v1::SubscriptionService::Stub> subscriptions_;
  std::unique_ptr<v1::BillingService::Stub> billing_;
  std::unique_ptr<v1::InvoicingService::Stub> invoicing_;
  std::unique_ptr<v1::PaymentService::Stub> payments_;
  std::unique_ptr<v1::NotificationService::Stub> notifications_;
  signups signups_;
  lakh::registry metrics_;
  lakh::counter &requests_;
  lakh::counter &limited_;
  lakh::counter &cancelled_;
  lakh::latency_histogram &latency_;
  http::router router_;
  http::server http_;
  boost::asio::thread_pool blocking_; // after what its tasks use: joined first
  saas::housekeeping purger_;         // last: it stops first
};

} // namespace gateway
