#pragma once
// examples/saas/gateway/routes.hpp: the public API, one route each (docs/architecture.md#api).
// POSTs pass the request's Idempotency-Key to the owning service (server.hpp call(write)).
#include "server.hpp"

#include <charconv>

namespace gateway {

namespace detail {

/// A query parameter as an integer within [lo, hi], `fallback` when absent; nullopt when
/// malformed.
inline std::optional<std::int64_t> query_int(const http::request &req, const char *name,
                                             std::int64_t fallback, std::int64_t lo,
                                             std::int64_t hi) {
  const auto p = req.query_param(name);
  if (!p) {
    return fallback;
  }
  const auto v = *p;
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < lo || n > hi) {
    return std::nullopt;
  }
  return n;
}

} // namespace detail

inline void server::routes() {
  router_.add("GET", "/metrics", [this](const auto &ex) {
    requests_.add();
    ex->answer({200, metrics_.prometheus_text(), "text/plain; version=0.0.4; charset=utf-8"});
  });
  router_.add("GET", "/healthz", [this](const auto &ex) {
    requests_.add();
    ex->answer({200, "ok\n", "text/plain"});
  });

  blocking_route("POST", "/v1/signup", access::anonymous, [this](const auto &rc, const auto &req) {
    if (!signup_rate_.take(req.remote_addr)) {
      return reply{429, {{"error", "too many signups from this address"}}, nullptr, 1};
    }
    auto body = parse_body(req.body(), {{"name", kind::string}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return fail(400, *msg);
    }
    return signups_.run(std::get<json>(body)["name"].template get<std::string>(), *rc.key,
                        rc.trace);
  });

  // A new API key for a tenant, all its other keys revoked: how a client that lost its key
  // (or whose key leaked) gets one. Operators only (GATEWAY_ADMIN_TOKEN).
  blocking_route(
      "POST", "/v1/admin/tenants/{id}/api-keys", access::admin,
      [this](const auto &, const auto &req) {
        const auto tenant = req.ids[0];
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

  route("POST", "/v1/users", access::tenant, [this](const pending_ptr &p) {
    auto body = parse_body(p->req().body(), {{"email", kind::string}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return finish(p, fail(400, *msg));
    }
    v1::CreateUserRequest in;
    in.set_tenant_id(p->rc.tenant);
    in.set_email(std::get<json>(body)["email"].template get<std::string>());
    call<v1::User>(
        p, true, std::move(in),
        [this](auto *c, auto *i, auto *o, auto done) {
          users_->async()->CreateUser(c, i, o, std::move(done));
        },
        [](const auto &ctx, const v1::User &out) {
          return reply{201, {{"id", out.id()}, {"email", out.email()}}, replayed(ctx)};
        });
  });

  route("GET", "/v1/users/{id}", access::tenant, [this](const pending_ptr &p) {
    v1::GetUserRequest in;
    in.set_tenant_id(p->rc.tenant);
    in.set_user_id(p->req().ids[0]);
    call<v1::User>(
        p, false, std::move(in),
        [this](auto *c, auto *i, auto *o, auto done) {
          users_->async()->GetUser(c, i, o, std::move(done));
        },
        [](const auto &, const v1::User &out) {
          return reply{200, {{"id", out.id()}, {"email", out.email()}}};
        });
  });

  route("POST", "/v1/subscriptions", access::tenant, [this](const pending_ptr &p) {
    auto body = parse_body(p->req().body(), {{"plan", kind::string}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return finish(p, fail(400, *msg));
    }
    v1::SubscribeRequest in;
    in.set_tenant_id(p->rc.tenant);
    in.set_plan(std::get<json>(body)["plan"].template get<std::string>());
    call<v1::Subscription>(
        p, true, std::move(in),
        [this](auto *c, auto *i, auto *o, auto done) {
          subscriptions_->async()->Subscribe(c, i, o, std::move(done));
        },
        [](const auto &ctx, const v1::Subscription &out) {
          return reply{201, to_json(out), replayed(ctx)};
        });
  });

  route("GET", "/v1/subscription", access::tenant, [this](const pending_ptr &p) {
    v1::GetSubscriptionRequest in;
    in.set_tenant_id(p->rc.tenant);
    call<v1::Subscription>(
        p, false, std::move(in),
        [this](auto *c, auto *i, auto *o, auto done) {
          subscriptions_->async()->Get(c, i, o, std::move(done));
        },
        [](const auto &, const v1::Subscription &out) {
          return reply{200, to_json(out)};
        });
  });

  route("POST", "/v1/usage", access::tenant, [this](const pending_ptr &p) {
    auto body = parse_body(p->req().body(), {{"rows", kind::array}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return finish(p, fail(400, *msg));
    }
    auto rows = usage_rows(std::get<json>(body)["rows"]);
    if (auto *msg = std::get_if<std::string>(&rows)) {
      return finish(p, fail(400, *msg));
    }
    auto &in = std::get<v1::IngestUsageRequest>(rows);
    in.set_tenant_id(p->rc.tenant);
    call<v1::IngestUsageResponse>(
        p, true, std::move(in),
        [this](auto *c, auto *i, auto *o, auto done) {
          billing_->async()->IngestUsage(c, i, o, std::move(done));
        },
        [](const auto &ctx, const v1::IngestUsageResponse &out) {
          return reply{200,
                       {{"accepted", out.accepted()},
                        {"duplicates", out.duplicates()},
                        {"charge_cents", out.charge_cents()}},
                       replayed(ctx)};
        });
  });

  // Closes a period: 201 with the invoice once it is issued, 202 while the period is closed to
  // usage but its invoice is still on its way (the same request again answers the period as
  // it is then).
  route("POST", "/v1/invoices", access::tenant, [this](const pending_ptr &p) {
    auto body = parse_body(p->req().body(), {{"period", kind::string}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return finish(p, fail(400, *msg));
    }
    v1::ClosePeriodRequest in;
    in.set_tenant_id(p->rc.tenant);
    in.set_period(std::get<json>(body)["period"].template get<std::string>());
    auto period = in.period();
    call<v1::ClosePeriodResponse>(
        p, true, std::move(in),
        [this](auto *c, auto *i, auto *o, auto done) {
          billing_->async()->ClosePeriod(c, i, o, std::move(done));
        },
        [period](const auto &ctx, const v1::ClosePeriodResponse &out) {
          if (out.state() != "closed") {
            return reply{202,
                         {{"status", "closing"}, {"period", period}, {"rows", out.rows()}},
                         replayed(ctx),
                         1};
          }
          auto j = to_json(out.invoice());
          j["rows"] = out.rows();
          return reply{201, j, replayed(ctx)};
        });
  });

  route("GET", "/v1/invoices/{id}", access::tenant, [this](const pending_ptr &p) {
    v1::GetInvoiceRequest in;
    in.set_tenant_id(p->rc.tenant);
    in.set_invoice_id(p->req().ids[0]);
    call<v1::Invoice>(
        p, false, std::move(in),
        [this](auto *c, auto *i, auto *o, auto done) {
          invoicing_->async()->Get(c, i, o, std::move(done));
        },
        [](const auto &, const v1::Invoice &out) {
          return reply{200, to_json(out)};
        });
  });

  route("GET", "/v1/invoices/{id}/payment", access::tenant, [this](const pending_ptr &p) {
    v1::GetPaymentRequest in;
    in.set_tenant_id(p->rc.tenant);
    in.set_invoice_id(p->req().ids[0]);
    call<v1::Payment>(
        p, false, std::move(in),
        [this](auto *c, auto *i, auto *o, auto done) {
          payments_->async()->GetByInvoice(c, i, o, std::move(done));
        },
        [](const auto &, const v1::Payment &out) {
          return reply{200, to_json(out)};
        });
  });

  // Pays an invoice now (payments otherwise follow invoice.issued on their own): one charge
  // per invoice however many requests, keys or retries (payment/main.cpp).
  route("POST", "/v1/payments", access::tenant, [this](const pending_ptr &p) {
    auto body = parse_body(p->req().body(), {{"invoice_id", kind::integer}});
    if (auto *msg = std::get_if<std::string>(&body)) {
      return finish(p, fail(400, *msg));
    }
    const auto invoice_id = std::get<json>(body)["invoice_id"].template get<std::int64_t>();
    v1::GetInvoiceRequest get;
    get.set_tenant_id(p->rc.tenant);
    get.set_invoice_id(invoice_id);
    call<v1::Invoice>(
        p, false, std::move(get),
        [this](auto *c, auto *i, auto *o, auto done) {
          invoicing_->async()->Get(c, i, o, std::move(done));
        },
        [this, p, invoice_id](const auto &, const v1::Invoice &invoice) {
          v1::CaptureRequest in;
          in.set_tenant_id(p->rc.tenant);
          in.set_invoice_id(invoice_id);
          in.set_amount_cents(invoice.total_cents());
          in.set_idempotency_key(p->rc.key->key);
          call<v1::Payment>(
              p, true, std::move(in),
              [this](auto *c, auto *i, auto *o, auto done) {
                payments_->async()->Capture(c, i, o, std::move(done));
              },
              [](const auto &, const v1::Payment &out) {
                return reply{201, to_json(out)};
              });
        });
  });

  // Notifications a page at a time: ?limit=1..100 (50) &after=<id of the last one seen>.
  route("GET", "/v1/notifications", access::tenant, [this](const pending_ptr &p) {
    const auto limit = detail::query_int(p->req(), "limit", 50, 1, 100);
    const auto after = detail::query_int(p->req(), "after", 0, 0, INT64_MAX);
    if (!limit || !after) {
      return finish(p, fail(400, "limit must be 1..100 and after a notification id (>= 0)"));
    }
    v1::ListNotificationsRequest in;
    in.set_tenant_id(p->rc.tenant);
    in.set_limit(static_cast<std::int32_t>(*limit));
    in.set_after_id(*after);
    call<v1::NotificationList>(
        p, false, std::move(in),
        [this](auto *c, auto *i, auto *o, auto done) {
          notifications_->async()->List(c, i, o, std::move(done));
        },
        [](const auto &, const v1::NotificationList &out) {
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
  });
}

} // namespace gateway
