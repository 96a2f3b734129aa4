#pragma once
// examples/saas/gateway/routes.hpp: the public API, one route each (docs/architecture.md#api).
// POSTs pass the request's Idempotency-Key to the owning service (server.hpp call(write)).
#include "server.hpp"

#include <charconv>

namespace gateway {

namespace detail {

/// A query parameter as an integer within [lo, hi], `fallback` when absent; nullopt when
/// malformed.
inline std::optional<std::int64_t> query_int(const httplib::Request &req, const char *name,
                                             std::int64_t fallback, std::int64_t lo,
                                             std::int64_t hi) {
  if (!req.has_param(name)) {
    return fallback;
  }
  const auto v = req.get_param_value(name);
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) {
    return std::nullopt;
  }
  return n;
}

} // namespace detail

inline void server::routes() {
  http_.set_tcp_nodelay(true);
  http_.set_keep_alive_max_count(1000000);
  http_.set_payload_max_length(1 << 20); // larger bodies: 413
  http_.set_pre_routing_handler([this](const httplib::Request &, httplib::Response &) {
    requests_.add();
    return httplib::Server::HandlerResponse::Unhandled;
  });
  http_.Get("/metrics", [this](const httplib::Request &, httplib::Response &res) {
    res.set_content(metrics_.prometheus_text(), "text/plain; version=0.0.4; charset=utf-8");
  });
  http_.Get("/healthz", [](const httplib::Request &, httplib::Response &res) {
    res.set_content("ok\n", "text/plain");
  });

  route("POST", "/v1/signup", access::anonymous, [this](const auto &rc, const auto &req) {
    if (!signup_rate_.take(req.remote_addr)) {
      return reply{429, {{"error", "too many signups from this address"}}, nullptr, 1};
    }
    auto body = parse_body(req.body, {{"name", kind::string}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return fail(400, *msg);
    }
    return signups_.run(std::get<json>(body)["name"].template get<std::string>(), *rc.key,
                        rc.trace);
  });

  // A new API key for a tenant, all its other keys revoked: how a client that lost its key
  // (or whose key leaked) gets one. Operators only (GATEWAY_ADMIN_TOKEN).
  route(
      "POST", R"(/v1/admin/tenants/(\d{1,18})/api-keys)", access::admin,
      [this](const auto &, const auto &req) {
        const auto tenant = std::stoll(req.matches[1]);
        const auto key = keys_.key_for(saas::random_hex(16));
        const bool known = lakh::pg::with_connection(db_, [&](pqxx::connection &c) {
          pqxx::work w(c);
          auto r = w.exec_params("DELETE FROM gateway.api_keys WHERE tenant_id = $1", tenant);
          const bool k =
              r.affected_rows() > 0 ||
              !w.exec_params("SELECT 1 FROM gateway.signups WHERE tenant_id = $1", tenant).empty();
          if (k) {
            w.exec_params("INSERT INTO gateway.api_keys (key_sha256, tenant_id) VALUES ($1, $2)",
                          saas::sha256_hex(key), tenant);
            w.commit();
          }
          return k;
        });
        keys_.forget_tenant(tenant);
        return known ? reply{201, {{"tenant_id", tenant}, {"api_key", key}}}
                     : fail(404, "no tenant " + std::to_string(tenant));
      });

  route("POST", "/v1/users", access::tenant, [this](const auto &rc, const auto &req) {
    auto body = parse_body(req.body, {{"email", kind::string}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return fail(400, *msg);
    }
    v1::CreateUserRequest in;
    in.set_tenant_id(rc.tenant);
    in.set_email(std::get<json>(body)["email"].template get<std::string>());
    v1::User out;
    grpc::ClientContext ctx;
    auto s = call(ctx, rc, true, [&](auto &c) { return users_->CreateUser(&c, in, &out); });
    if (!s.ok()) {
      return from_grpc(ctx, s, rc.trace.trace_id);
    }
    return reply{201, {{"id", out.id()}, {"email", out.email()}}, replayed(ctx)};
  });

  route("GET", R"(/v1/users/(\d{1,18}))", access::tenant, [this](const auto &rc, const auto &req) {
    v1::GetUserRequest in;
    in.set_tenant_id(rc.tenant);
    in.set_user_id(std::stoll(req.matches[1]));
    v1::User out;
    grpc::ClientContext ctx;
    auto s = call(ctx, rc, false, [&](auto &c) { return users_->GetUser(&c, in, &out); });
    return s.ok() ? reply{200, {{"id", out.id()}, {"email", out.email()}}}
                  : from_grpc(ctx, s, rc.trace.trace_id);
  });

  route("POST", "/v1/subscriptions", access::tenant, [this](const auto &rc, const auto &req) {
    auto body = parse_body(req.body, {{"plan", kind::string}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return fail(400, *msg);
    }
    v1::SubscribeRequest in;
    in.set_tenant_id(rc.tenant);
    in.set_plan(std::get<json>(body)["plan"].template get<std::string>());
    v1::Subscription out;
    grpc::ClientContext ctx;
    auto s = call(ctx, rc, true, [&](auto &c) { return subscriptions_->Subscribe(&c, in, &out); });
    return s.ok() ? reply{201, to_json(out), replayed(ctx)} : from_grpc(ctx, s, rc.trace.trace_id);
  });

  route("GET", "/v1/subscription", access::tenant, [this](const auto &rc, const auto &) {
    v1::GetSubscriptionRequest in;
    in.set_tenant_id(rc.tenant);
    v1::Subscription out;
    grpc::ClientContext ctx;
    auto s = call(ctx, rc, false, [&](auto &c) { return subscriptions_->Get(&c, in, &out); });
    return s.ok() ? reply{200, to_json(out)} : from_grpc(ctx, s, rc.trace.trace_id);
  });

  route("POST", "/v1/usage", access::tenant, [this](const auto &rc, const auto &req) {
    auto body = parse_body(req.body, {{"rows", kind::array}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return fail(400, *msg);
    }
    auto rows = usage_rows(std::get<json>(body)["rows"]);
    if (auto *msg = std::get_if<std::string>(&rows)) {
      return fail(400, *msg);
    }
    auto &in = std::get<v1::IngestUsageRequest>(rows);
    in.set_tenant_id(rc.tenant);
    v1::IngestUsageResponse out;
    grpc::ClientContext ctx;
    auto s = call(ctx, rc, true, [&](auto &c) { return billing_->IngestUsage(&c, in, &out); });
    if (!s.ok()) {
      return from_grpc(ctx, s, rc.trace.trace_id);
    }
    return reply{200,
                 {{"accepted", out.accepted()},
                  {"duplicates", out.duplicates()},
                  {"charge_cents", out.charge_cents()}},
                 replayed(ctx)};
  });

  // Closes a period: 201 with the invoice once it is issued, 202 while the period is closed to
  // usage but its invoice is still on its way (the same request again answers the period as
  // it is then).
  route("POST", "/v1/invoices", access::tenant, [this](const auto &rc, const auto &req) {
    auto body = parse_body(req.body, {{"period", kind::string}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return fail(400, *msg);
    }
    v1::ClosePeriodRequest in;
    in.set_tenant_id(rc.tenant);
    in.set_period(std::get<json>(body)["period"].template get<std::string>());
    v1::ClosePeriodResponse out;
    grpc::ClientContext ctx;
    auto s = call(ctx, rc, true, [&](auto &c) { return billing_->ClosePeriod(&c, in, &out); });
    if (!s.ok()) {
      return from_grpc(ctx, s, rc.trace.trace_id);
    }
    if (out.state() != "closed") {
      return reply{202,
                   {{"status", "closing"}, {"period", in.period()}, {"rows", out.rows()}},
                   replayed(ctx),
                   1};
    }
    auto j = to_json(out.invoice());
    j["rows"] = out.rows();
    return reply{201, j, replayed(ctx)};
  });

  route("GET", R"(/v1/invoices/(\d{1,18}))", access::tenant,
        [this](const auto &rc, const auto &req) {
          v1::GetInvoiceRequest in;
          in.set_tenant_id(rc.tenant);
          in.set_invoice_id(std::stoll(req.matches[1]));
          v1::Invoice out;
          grpc::ClientContext ctx;
          auto s = call(ctx, rc, false, [&](auto &c) { return invoicing_->Get(&c, in, &out); });
          return s.ok() ? reply{200, to_json(out)} : from_grpc(ctx, s, rc.trace.trace_id);
        });

  route("GET", R"(/v1/invoices/(\d{1,18})/payment)", access::tenant,
        [this](const auto &rc, const auto &req) {
          v1::GetPaymentRequest in;
          in.set_tenant_id(rc.tenant);
          in.set_invoice_id(std::stoll(req.matches[1]));
          v1::Payment out;
          grpc::ClientContext ctx;
          auto s =
              call(ctx, rc, false, [&](auto &c) { return payments_->GetByInvoice(&c, in, &out); });
          return s.ok() ? reply{200, to_json(out)} : from_grpc(ctx, s, rc.trace.trace_id);
        });

  // Pays an invoice now (payments otherwise follow invoice.issued on their own): one charge
  // per invoice however many requests, keys or retries (payment/main.cpp).
  route("POST", "/v1/payments", access::tenant, [this](const auto &rc, const auto &req) {
    auto body = parse_body(req.body, {{"invoice_id", kind::integer}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return fail(400, *msg);
    }
    const auto invoice_id = std::get<json>(body)["invoice_id"].template get<std::int64_t>();
    v1::GetInvoiceRequest get;
    get.set_tenant_id(rc.tenant);
    get.set_invoice_id(invoice_id);
    v1::Invoice invoice;
    grpc::ClientContext gctx;
    auto s = call(gctx, rc, false, [&](auto &c) { return invoicing_->Get(&c, get, &invoice); });
    if (!s.ok()) {
      return from_grpc(gctx, s, rc.trace.trace_id);
    }
    v1::CaptureRequest in;
    in.set_tenant_id(rc.tenant);
    in.set_invoice_id(invoice_id);
    in.set_amount_cents(invoice.total_cents());
    in.set_idempotency_key(rc.key->key);
    v1::Payment out;
    grpc::ClientContext ctx;
    s = call(ctx, rc, true, [&](auto &c) { return payments_->Capture(&c, in, &out); });
    return s.ok() ? reply{201, to_json(out)} : from_grpc(ctx, s, rc.trace.trace_id);
  });

  // Notifications a page at a time: ?limit=1..100 (50) &after=<id of the last one seen>.
  route("GET", "/v1/notifications", access::tenant, [this](const auto &rc, const auto &req) {
    const auto limit = detail::query_int(req, "limit", 50, 1, 100);
    const auto after = detail::query_int(req, "after", 0, 0, INT64_MAX);
    if (!limit || !after) {
      return fail(400, "limit must be 1..100 and after a notification id (>= 0)");
    }
    v1::ListNotificationsRequest in;
    in.set_tenant_id(rc.tenant);
    in.set_limit(static_cast<std::int32_t>(*limit));
    in.set_after_id(*after);
    v1::NotificationList out;
    grpc::ClientContext ctx;
    auto s = call(ctx, rc, false, [&](auto &c) { return notifications_->List(&c, in, &out); });
    if (!s.ok()) {
      return from_grpc(ctx, s, rc.trace.trace_id);
    }
    json list = json::array();
    for (const auto &n : out.notifications()) {
      list.push_back({{"id", n.id()},
                      {"kind", n.kind()},
                      {"invoice_id", n.invoice_id()},
                      {"amount_cents", n.amount_cents()},
                      {"text", n.text()},
                      {"traceparent", n.traceparent()}});
    }
    json page = {{"notifications", list}};
    page["next_after"] = out.next_after_id() != 0 ? json(out.next_after_id()) : json(nullptr);
    return reply{200, page};
  });
}

} // namespace gateway
