#pragma once
// examples/saas/gateway/server.hpp: the gateway's HTTP server: what every request goes through
// (route(): authentication, limits, the Idempotency-Key, trace, metrics, logs, the answer for
// an exception) and the gRPC calls to the owning services. The routes are in routes.hpp.
#include "../common/auth.hpp"
#include "../common/db.hpp"
#include "../common/housekeeping.hpp"
#include "../common/log.hpp"
#include "../common/rpc.hpp"
#include "http.hpp"
#include "keys.hpp"
#include "limits.hpp"
#include "signup.hpp"

#include <lakh/idempotency.hpp>
#include <lakh/metrics.hpp>
#include <lakh/prometheus.hpp>

#include <httplib.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace gateway {

/// What a route handler gets besides the request.
struct request_context {
  std::int64_t tenant = 0;                  ///< 0 on public routes
  saas::trace_context trace;                ///< a child of the client's traceparent
  std::optional<saas::idempotency_ref> key; ///< POST: the Idempotency-Key and fingerprint
};

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
        latency_(metrics_.make_histogram("saas_gateway_request_seconds", "request latency")),
        purger_("gateway", db_, "gateway",
                std::chrono::milliseconds(cfg.integer("PURGE_INTERVAL_MS", 60000, 1000, 86400000)),
                [this, keep = cfg.integer("SIGNUP_RETENTION_HOURS", 24, 24, 87600)] {
                  return purge_signups(keep);
                }) {
    saas::check_least_privilege(db_, saas::role_of("gateway"));
    routes();
  }

  /// Serves until stop() (from another thread); in-flight requests finish first.
  bool listen(const std::string &host, int port, int threads) {
    http_.new_task_queue = [threads] {
      return new httplib::ThreadPool(static_cast<size_t>(threads));
    };
    return http_.listen(host, port);
  }
  void stop() { http_.stop(); }

private:
  using handler = std::function<reply(const request_context &, const httplib::Request &)>;
  enum class access : std::uint8_t { tenant, anonymous, admin };

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

  /// Calls a gRPC method with the deadline, the trace and the service token; with the
  /// request's idempotency key when `write`.
  template <class Call>
  grpc::Status call(grpc::ClientContext &ctx, const request_context &rc, bool write, Call &&f) {
    saas::prepare_call(ctx, auth_, rc.trace, deadline_, write && rc.key ? &*rc.key : nullptr);
    return f(ctx);
  }

  /// Admission of a request: the reply that refuses it, or nothing (rc.tenant set).
  std::optional<reply> admit(access a, const httplib::Request &req, request_context &rc,
                             std::optional<lakh::permit> &permit) {
    if (a == access::admin) {
      const auto token = cfg_.find("GATEWAY_ADMIN_TOKEN");
      if (!token || token->size() < 32) {
        return fail(404, "no such route");
      }
      if (!saas::equal_constant_time(req.get_header_value("Authorization"), "Bearer " + *token)) {
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
    rc.tenant = keys_.authenticate(req.get_header_value("Authorization"));
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
  static std::optional<reply> idempotency_key(const httplib::Request &req, request_context &rc) {
    const auto key = req.get_header_value("Idempotency-Key");
    if (key.empty()) {
      return fail(400, "Idempotency-Key header required");
    }
    try {
      lakh::validate_idempotency_key(key, "Idempotency-Key");
    } catch (const std::invalid_argument &e) {
      return fail(400, std::string(e.what()) +
                           " (use a random value, e.g. a UUID, per request and its retries)");
    }
    rc.key = saas::idempotency_ref{key, lakh::fingerprint(req.method, req.path, req.body)};
    return std::nullopt;
  }

  /// Registers a route: admission, Idempotency-Key (POST), trace, metrics, logs, and the
  /// answer for an exception (503 when a retry may help, 500 for a bug; never its text).
  void route(const char *method, const std::string &pattern, access a, handler h) {
    const bool post = std::string_view(method) == "POST";
    auto wrapped = [this, h = std::move(h), a, post, method](const httplib::Request &req,
                                                             httplib::Response &res) {
      const auto t0 = std::chrono::steady_clock::now();
      auto parsed = saas::trace_context::parse(req.get_header_value("traceparent"));
      request_context rc{0, parsed ? parsed->child() : saas::trace_context::root(), {}};
      std::optional<lakh::permit> permit;
      reply r;
      std::string error;
      try {
        auto refused = admit(a, req, rc, permit);
        if (!refused && post && a != access::admin) {
          refused = idempotency_key(req, rc);
        }
        r = refused ? std::move(*refused) : h(rc, req);
      } catch (const std::exception &e) {
        error = e.what();
        r = unavailable(saas::transient(e) ? 503 : 500, rc.trace.trace_id);
      }
      if (r.status == 429) {
        limited_.add();
      }
      res.status = r.status;
      res.set_header("traceparent", rc.trace.header());
      if (r.replayed != nullptr) {
        res.set_header("Idempotent-Replayed", r.replayed);
      }
      if (r.retry_after > 0) {
        res.set_header("Retry-After", std::to_string(r.retry_after));
      }
      res.set_content(r.body.dump(), "application/json");
      latency_.record(std::chrono::steady_clock::now() - t0);
      if (post || r.status >= 400) { // reads are not logged one by one (the hot path)
        saas::json fields = {
            {"method", method}, {"path", req.path}, {"status", r.status}, {"tenant", rc.tenant}};
        if (!error.empty()) {
          fields["error"] = error;
        }
        saas::log("gateway", r.status >= 500 ? "error" : "info", rc.trace.trace_id, "request",
                  std::move(fields));
      }
    };
    if (post) {
      http_.Post(pattern, wrapped);
    } else {
      http_.Get(pattern, wrapped);
    }
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
  lakh::latency_histogram &latency_;
  httplib::Server http_;
  saas::housekeeping purger_; // last: it stops first
};

} // namespace gateway
