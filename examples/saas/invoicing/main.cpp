// saas_invoicing: the Invoicing service (examples/saas/README.md). Owns schema `invoicing`
// (schema.sql): invoices, one per tenant and period (row-level security by app.tenant_id).
// gRPC: Issue is idempotent on (tenant, period): a new invoice and its `invoice.issued` event
// commit together through the outbox, and a repeat answers the same invoice. Get reads one.
// Consumes `payment.captured` (durable "invoicing-payments", once per event through the inbox)
// and marks the invoice paid. Settings: service_main.hpp.
#include "../common/period.hpp"
#include "../common/service_main.hpp"
#include "invoicing_schema.hpp"
#include "saas.grpc.pb.h"

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;

// Columns of an invoice, in the order fill() reads them.
constexpr const char *invoice_columns =
    "id, period, total_cents, status, extract(epoch FROM issued_at)::bigint";

void fill(v1::Invoice &out, std::int64_t tenant, const pqxx::row &r) {
  out.set_tenant_id(tenant);
  out.set_id(r[0].as<std::int64_t>());
  out.set_period(r[1].as<std::string>());
  out.set_total_cents(r[2].as<std::int64_t>());
  out.set_status(r[3].as<std::string>());
  out.set_issued_unix(r[4].as<std::int64_t>());
}

class invoicing_service final : public v1::InvoicingService::Service {
public:
  explicit invoicing_service(saas::service &s)
      : svc_(&s), rpc_(s.metrics(), s.name(), s.auth(), {"Issue", "Get"}),
        issued_(&s.metrics().make_counter("saas_invoicing_issued_total", "invoices issued")) {}

  Status Issue(ServerContext *ctx, const v1::IssueInvoiceRequest *req, v1::Invoice *out) override {
    return rpc_.run("Issue", *ctx, [&](const saas::trace_context &trace) {
      if (!saas::valid_period(req->period())) {
        return Status(StatusCode::INVALID_ARGUMENT,
                      "period must be YYYY-MM, got \"" + req->period() + "\"");
      }
      if (req->total_cents() < 0) {
        return Status(StatusCode::INVALID_ARGUMENT,
                      "total_cents must be >= 0, got " + std::to_string(req->total_cents()));
      }
      bool inserted = false;
      auto s = saas::in_tenant(retry_, svc_->db(), req->tenant_id(), [&](pqxx::work &w) {
        inserted = false;
        // The unique (tenant_id, period) makes a concurrent Issue of the same period wait for
        // this one and then find its invoice.
        auto r = w.exec_params(std::string("INSERT INTO invoicing.invoices (tenant_id, period, "
                                           "total_cents) VALUES ($1, $2, $3) ON CONFLICT "
                                           "(tenant_id, period) DO NOTHING RETURNING ") +
                                   invoice_columns,
                               req->tenant_id(), req->period(), req->total_cents());
        if (r.empty()) { // issued before: the same invoice for the same total, and no event
          r = w.exec_params(std::string("SELECT ") + invoice_columns +
                                " FROM invoicing.invoices WHERE tenant_id = $1 AND period = $2",
                            req->tenant_id(), req->period());
          const auto total = r[0][2].as<std::int64_t>();
          if (total != req->total_cents()) {
            return Status(StatusCode::FAILED_PRECONDITION,
                          "invoice for period " + req->period() + " of tenant " +
                              std::to_string(req->tenant_id()) + " was issued for " +
                              std::to_string(total) + " cents, not " +
                              std::to_string(req->total_cents()));
          }
          fill(*out, req->tenant_id(), r[0]);
          return Status::OK;
        }
        fill(*out, req->tenant_id(), r[0]);
        const saas::json ev = {{"tenant_id", req->tenant_id()},
                               {"invoice_id", out->id()},
                               {"period", req->period()},
                               {"total_cents", req->total_cents()}};
        const lakh::pg::outbox_header tp{"traceparent", trace.header()};
        svc_->outbox().enqueue(w, saas::topic("invoice.issued"), std::to_string(req->tenant_id()),
                               ev.dump(), {&tp, 1});
        inserted = true;
        return Status::OK;
      });
      if (s.ok() && inserted) {
        issued_->add();
        saas::log(svc_->name(), "info", trace, "invoice issued",
                  {{"tenant_id", req->tenant_id()},
                   {"invoice_id", out->id()},
                   {"period", req->period()},
                   {"total_cents", req->total_cents()}});
      }
      return s;
    });
  }

  Status Get(ServerContext *ctx, const v1::GetInvoiceRequest *req, v1::Invoice *out) override {
    return rpc_.run("Get", *ctx, [&](const saas::trace_context &) {
      return saas::in_tenant(retry_, svc_->db(), req->tenant_id(), [&](pqxx::work &w) {
        // Row-level security hides another tenant's invoice: it is NOT_FOUND like a missing one.
        auto r = w.exec_params(std::string("SELECT ") + invoice_columns +
                                   " FROM invoicing.invoices WHERE id = $1",
                               req->invoice_id());
        if (r.empty()) {
          return Status(StatusCode::NOT_FOUND,
                        "invoice " + std::to_string(req->invoice_id()) + " not found");
        }
        fill(*out, req->tenant_id(), r[0]);
        return Status::OK;
      });
    });
  }

private:
  saas::service *svc_;
  saas::rpc_server rpc_;
  lakh::counter *issued_;
  lakh::pg::retrier retry_;
};

/// The payment.captured handler: marks the invoice paid, once per event, in the event's tenant
/// transaction. The counter and the log line follow the commit (a rolled-back or retried
/// transaction counts nothing). An event that names no invoice of the tenant is logged and
/// acknowledged: a redelivery would find the same.
class payment_captured_handler {
public:
  explicit payment_captured_handler(saas::service &s)
      : paid_(&s.metrics().make_counter("saas_invoicing_paid_total", "invoices marked paid")),
        once_(saas::once_per_event(
            s.db(), s.inbox(), "invoicing-payments",
            [this](pqxx::work &w, const saas::event &ev) { mark_paid(w, ev); })) {}

  void operator()(const saas::event &ev) {
    const auto &b = ev.body;
    if (!b.contains("invoice_id") || !b["invoice_id"].is_number_integer()) {
      saas::log("invoicing", "error", ev.trace, "dropped a malformed payment.captured event",
                {{"event", ev.id}, {"payload", b}});
      return;
    }
    pending_.reset();
    once_(ev);      // throws: not acknowledged, redelivered
    if (pending_) { // marked paid by this event, committed
      paid_->add();
      saas::log("invoicing", "info", ev.trace, "invoice paid", *pending_);
    }
  }

private:
  void mark_paid(pqxx::work &w, const saas::event &ev) {
    pending_.reset(); // a retried transaction starts over
    const auto invoice = ev.body["invoice_id"].get<std::int64_t>();
    const auto r = w.exec_params("UPDATE invoicing.invoices SET status = 'paid', paid_at = now() "
                                 "WHERE id = $1 AND status = 'issued' RETURNING total_cents",
                                 invoice);
    if (!r.empty()) {
      pending_ = saas::json{{"tenant_id", ev.tenant_id},
                            {"invoice_id", invoice},
                            {"total_cents", r[0][0].as<std::int64_t>()},
                            {"amount_cents", ev.body.value("amount_cents", saas::json())}};
    } else if (w.exec_params("SELECT 1 FROM invoicing.invoices WHERE id = $1", invoice).empty()) {
      saas::log("invoicing", "error", ev.trace, "payment for an unknown invoice",
                {{"tenant_id", ev.tenant_id}, {"invoice_id", invoice}, {"event", ev.id}});
    }
  }

  lakh::counter *paid_;
  saas::event_handler once_;
  std::optional<saas::json> pending_; ///< set by a transaction that marked the invoice paid
};

} // namespace

int main(int argc, char **argv) {
  return saas::service_main(
      {"invoicing", "invoicing", saas::schema_sql, 15054, 9104, true, true},
      [](saas::service &s) {
        auto handler = std::make_shared<payment_captured_handler>(s);
        s.consume("payment.captured", "invoicing-payments",
                  [handler](const saas::event &ev) { (*handler)(ev); });
        return std::make_unique<invoicing_service>(s);
      },
      argc, argv);
}
