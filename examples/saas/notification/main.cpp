// saas_notification: the Notification service (examples/saas/README.md). Owns schema
// `notifications`: sent (what would have been sent, one row per event; row-level security by
// app.tenant_id) and inbox (the ids of the events handled). Consumes `saas.payment.captured`
// (durable "notification-payments"): each event records one notification exactly once, in a
// transaction that also records the event id in the inbox, so a redelivery does nothing.
// gRPC: List. Config: DATABASE_URL, NATS_URL (required); NOTIFICATION_GRPC_ADDR
// (127.0.0.1:15056), NOTIFICATION_METRICS_PORT (9106); environment or .env. SIGTERM/SIGINT:
// drain and exit 0.
#include "../common/runtime.hpp"
#include "saas.grpc.pb.h"

#include <cstdint>
#include <cstdio>
#include <string>

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;
constexpr const char *service = "notification";
constexpr const char *consumer_name = "notification-payments";

/// "$12.34" for 1234.
std::string dollars(std::int64_t cents) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "$%lld.%02lld", static_cast<long long>(cents / 100),
                static_cast<long long>(cents % 100));
  return buf;
}

/// The payment.captured handler: records one notification per event (once_per_event), then
/// counts and logs it after its transaction committed. Runs on the consumer's thread only.
class payment_captured_handler {
public:
  payment_captured_handler(lakh::pg::pool &p, lakh::pg::inbox &inbox, lakh::registry &r)
      : recorded_(&r.make_counter("saas_notifications_recorded_total",
                                  "notifications recorded (one per payment.captured event)")),
        once_(
            saas::once_per_event(p, inbox, consumer_name,
                                 [this](pqxx::work &w, const saas::event &ev) { record(w, ev); })) {
  }

  void operator()(const saas::event &ev) {
    const auto &b = ev.body;
    if (!b.contains("invoice_id") || !b["invoice_id"].is_number_integer() ||
        !b.contains("amount_cents") || !b["amount_cents"].is_number_integer() ||
        b["amount_cents"].get<std::int64_t>() < 0) {
      saas::log(service, "error", ev.trace.trace_id, "dropped a malformed payment.captured event",
                {{"event", ev.id}, {"payload", b}});
      return; // acknowledged: a redelivery could never succeed
    }
    pending_.reset();
    once_(ev);      // throws: not acknowledged, redelivered
    if (pending_) { // first delivery, committed (a retried transaction set it again)
      recorded_->add();
      saas::log(service, "info", ev.trace.trace_id, "notification recorded", *pending_);
    }
  }

private:
  void record(pqxx::work &w, const saas::event &ev) {
    const auto invoice = ev.body["invoice_id"].get<std::int64_t>();
    const auto amount = ev.body["amount_cents"].get<std::int64_t>();
    const auto text =
        "Payment of " + dollars(amount) + " received for invoice " + std::to_string(invoice);
    auto r = w.exec_params("INSERT INTO notifications.sent (tenant_id, kind, invoice_id, "
                           "amount_cents, text, traceparent, event_id) VALUES ($1, "
                           "'payment.captured', $2, $3, $4, $5, $6) RETURNING id",
                           ev.tenant_id, invoice, amount, text, ev.trace.header(), ev.id);
    pending_ = saas::json{{"tenant_id", ev.tenant_id},
                          {"notification_id", r[0][0].as<std::int64_t>()},
                          {"invoice_id", invoice},
                          {"amount_cents", amount},
                          {"text", text},
                          {"event", ev.id}};
  }

  lakh::counter *recorded_;
  std::optional<saas::json> pending_; // set by record(), read after the commit
  saas::event_handler once_;
};

class notification_service final : public v1::NotificationService::Service {
public:
  notification_service(lakh::pg::pool &p, lakh::registry &r)
      : pool_(&p), stats_(r, service, {"List"}) {}

  Status List(ServerContext *ctx, const v1::ListNotificationsRequest *req,
              v1::NotificationList *out) override {
    return stats_.run("List", *ctx, [&](const saas::trace_context &) {
      if (req->tenant_id() < 1) {
        return Status(StatusCode::INVALID_ARGUMENT, "tenant_id must be >= 1");
      }
      return saas::in_tenant(retry_, *pool_, req->tenant_id(), [&](pqxx::work &w) {
        out->clear_notifications();
        for (const auto &row : w.exec("SELECT id, kind, invoice_id, amount_cents, text, "
                                      "traceparent FROM notifications.sent ORDER BY id")) {
          auto *n = out->add_notifications();
          n->set_tenant_id(req->tenant_id());
          n->set_id(row[0].as<std::int64_t>());
          n->set_kind(row[1].as<std::string>());
          n->set_invoice_id(row[2].as<std::int64_t>());
          n->set_amount_cents(row[3].as<std::int64_t>());
          n->set_text(row[4].as<std::string>());
          n->set_traceparent(row[5].as<std::string>());
        }
        return Status::OK;
      });
    });
  }

private:
  lakh::pg::pool *pool_;
  saas::rpc_stats stats_;
  lakh::pg::retrier retry_;
};

} // namespace

int main() {
  const sigset_t sigs = saas::block_stop_signals();
  return saas::guarded_main(service, [&] {
    const auto cfg = saas::config::load();
    const auto url = cfg.require("DATABASE_URL");
    lakh::nats::jetstream js(cfg.require("NATS_URL"));
    saas::ensure_stream(js);
    lakh::pg::pool pool(saas::service_pool(url, 8));
    auto inbox = [&] {
      lakh::pg::pool admin(url, 1);
      saas::setup_schema(admin, "notifications", [](pqxx::work &w) {
        w.exec("CREATE TABLE IF NOT EXISTS notifications.sent (tenant_id bigint NOT NULL, id "
               "bigserial PRIMARY KEY, kind text NOT NULL, invoice_id bigint NOT NULL, "
               "amount_cents bigint NOT NULL, text text NOT NULL, traceparent text NOT NULL, "
               "event_id text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())");
        saas::tenant_policy(w, "notifications.sent");
      });
      return saas::make_inbox(admin, pool, "notifications");
    }();
    lakh::registry metrics;
    saas::metrics_endpoint http(metrics, "127.0.0.1", cfg.port("NOTIFICATION_METRICS_PORT", 9106));
    notification_service svc(pool, metrics);
    payment_captured_handler handler(pool, inbox, metrics);
    saas::event_consumer consumer(
        service, js, saas::topic("payment.captured"), consumer_name,
        [&handler](const saas::event &ev) { handler(ev); }, metrics);
    consumer.start();
    return saas::serve(service, sigs, cfg, cfg.get("NOTIFICATION_GRPC_ADDR", "127.0.0.1:15056"),
                       {&svc}, [&] { consumer.stop(); });
  });
}
