// saas_notification: the Notification service (examples/saas/README.md). Owns schema
// `notifications` (schema.sql): sent, what would have been sent, one row per event (row-level
// security by app.tenant_id). Consumes `payment.captured` (durable "notification-payments"):
// each event records one notification exactly once, in a transaction that also records the
// event id in the inbox, so a redelivery does nothing. gRPC: List, a page at a time (at most
// 100, in id order). Settings: service_main.hpp.
#include "../common/service_main.hpp"
#include "notification_schema.hpp"
#include "saas.grpc.pb.h"

#include <cstdint>
#include <cstdio>
#include <string>

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;
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
  explicit payment_captured_handler(saas::service &s)
      : recorded_(
            &s.metrics().make_counter("saas_notifications_recorded_total",
                                      "notifications recorded (one per payment.captured event)")),
        once_(
            saas::once_per_event(s.db(), s.inbox(), consumer_name,
                                 [this](pqxx::work &w, const saas::event &ev) { record(w, ev); })) {
  }

  void operator()(const saas::event &ev) {
    const auto &b = ev.body;
    if (!b.contains("invoice_id") || !b["invoice_id"].is_number_integer() ||
        !b.contains("amount_cents") || !b["amount_cents"].is_number_integer() ||
        b["amount_cents"].get<std::int64_t>() < 0) {
      saas::log("notification", "error", ev.trace, "dropped a malformed payment.captured event",
                {{"event", ev.id}, {"payload", b}});
      return; // acknowledged: a redelivery could never succeed
    }
    pending_.reset();
    once_(ev);      // throws: not acknowledged, redelivered
    if (pending_) { // first delivery, committed (a retried transaction set it again)
      recorded_->add();
      saas::log("notification", "info", ev.trace, "notification recorded", *pending_);
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
  explicit notification_service(saas::service &s)
      : svc_(&s), rpc_(s.metrics(), s.name(), s.auth(), {"List"}) {}

  Status List(ServerContext *ctx, const v1::ListNotificationsRequest *req,
              v1::NotificationList *out) override {
    return rpc_.run("List", *ctx, [&](const saas::trace_context &) {
      if (req->tenant_id() < 1 || req->limit() < 0 || req->limit() > 100 || req->after_id() < 0) {
        return Status(StatusCode::INVALID_ARGUMENT,
                      "tenant_id must be >= 1, limit 0..100, after_id >= 0");
      }
      const int limit = req->limit() == 0 ? 50 : req->limit();
      // One more than the page: whether another page follows.
      const auto rows = saas::tenant_read(
          svc_->db(), req->tenant_id(),
          "SELECT id, kind, invoice_id, amount_cents, text, traceparent FROM notifications.sent "
          "WHERE id > " +
              std::to_string(req->after_id()) + " ORDER BY id LIMIT " + std::to_string(limit + 1));
      for (const auto &row : rows) {
        if (out->notifications_size() == limit) {
          out->set_next_after_id(out->notifications(limit - 1).id());
          break;
        }
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
  }

private:
  saas::service *svc_;
  saas::rpc_server rpc_;
};

} // namespace

int main(int argc, char **argv) {
  return saas::service_main(
      {"notification", "notifications", saas::schema_sql, 15056, 9106, false, true},
      [](saas::service &s) {
        auto handler = std::make_shared<payment_captured_handler>(s);
        s.consume("payment.captured", consumer_name,
                  [handler](const saas::event &ev) { (*handler)(ev); });
        return std::make_unique<notification_service>(s);
      },
      argc, argv);
}
