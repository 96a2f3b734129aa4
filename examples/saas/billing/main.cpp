// saas_billing: the Billing service (examples/saas/README.md). Owns schema `billing`
// (schema.sql): accounts (each tenant's plan, from `subscription.changed`), usage (rated rows,
// unique per tenant and id) and periods (the close of a period as a state machine).
// gRPC:
//   - IngestUsage validates every row, then, under the tenant's lock, refuses a closing or
//     closed period and inserts the rows with the caller's idempotency key, in one
//     transaction: a repeat answers the original counts.
//   - ClosePeriod commits `closing` with the period's total first (from then on the period
//     refuses usage) together with a `billing.period.closing` event (outbox), then issues the
//     invoice with InvoicingService.Issue (idempotent on tenant and period) OUTSIDE any
//     transaction and records `closed`. If the call fails or this process dies, billing's own
//     consumer of the event drives the same steps until the period is closed. The answer says
//     "closing" until then; a repeat of the request answers the period as it is now.
// Settings: service_main.hpp; INVOICING_GRPC_ADDR (127.0.0.1:15054).
#include "../common/period.hpp"
#include "../common/service_main.hpp"
#include "billing_schema.hpp"
#include "saas.grpc.pb.h"
#include "usage.hpp"

#include <algorithm>
#include <chrono>
#include <optional>

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;

/// Serializes a tenant's IngestUsage and ClosePeriod until the transaction ends ($1: tenant).
constexpr const char *lock_tenant =
    "SELECT pg_advisory_xact_lock(hashtextextended('saas billing tenant ' || $1::text, 0))";

class billing_service final : public v1::BillingService::Service {
public:
  explicit billing_service(saas::service &s)
      : svc_(&s), invoicing_(v1::InvoicingService::NewStub(s.channel_to("invoicing", 15054))),
        rpc_(s.metrics(), s.name(), s.auth(), {"IngestUsage", "ClosePeriod"}),
        rows_(&s.metrics().make_counter("saas_billing_rows_ingested_total",
                                        "usage rows accepted (duplicates not counted)")),
        closed_(&s.metrics().make_counter("saas_billing_periods_closed_total",
                                          "periods closed with their invoice")) {}

  Status IngestUsage(ServerContext *ctx, const v1::IngestUsageRequest *req,
                     v1::IngestUsageResponse *out) override {
    return rpc_.run("IngestUsage", *ctx, [&](const saas::trace_context &) {
      if (auto problem = billing::invalid_rows(*req); !problem.empty()) {
        return Status(StatusCode::INVALID_ARGUMENT, problem);
      }
      const auto cols = billing::columns_of(*req); // rated before the transaction
      const auto tenant = req->tenant_id();
      bool inserted = false;
      auto s = saas::idempotent(
          *ctx, svc_->keys(), std::to_string(tenant), out,
          [&](auto body) { return saas::in_tenant(retry_, svc_->db(), tenant, body); },
          [&](pqxx::work &w) {
            inserted = false;
            w.exec_params(lock_tenant, tenant);
            if (auto closed = w.exec_params("SELECT period FROM billing.periods WHERE period = "
                                            "ANY($1::text[]) ORDER BY period LIMIT 1",
                                            cols.period_set);
                !closed.empty()) {
              return Status(StatusCode::FAILED_PRECONDITION,
                            "period " + closed[0][0].as<std::string>() + " is closed");
            }
            const auto r = billing::insert_usage(w, tenant, cols);
            out->set_accepted(static_cast<std::int64_t>(r.size()));
            out->set_duplicates(req->rows_size() - out->accepted());
            std::int64_t cents = 0;
            for (const auto &row : r) {
              cents += row[0].as<std::int64_t>();
            }
            out->set_charge_cents(cents);
            inserted = true;
            return Status::OK;
          });
      if (s.ok() && inserted) {
        rows_->add(static_cast<std::uint64_t>(out->accepted()));
      }
      return s;
    });
  }

  Status ClosePeriod(ServerContext *ctx, const v1::ClosePeriodRequest *req,
                     v1::ClosePeriodResponse *out) override {
    return rpc_.run("ClosePeriod", *ctx, [&](const saas::trace_context &trace) {
      if (!saas::valid_period(req->period())) {
        return Status(StatusCode::INVALID_ARGUMENT,
                      "period must be YYYY-MM, got \"" + req->period() + "\"");
      }
      const auto tenant = req->tenant_id();
      auto s = saas::idempotent(
          *ctx, svc_->keys(), std::to_string(tenant), out,
          [&](auto body) { return saas::in_tenant(retry_, svc_->db(), tenant, body); },
          [&](pqxx::work &w) { return begin_close(w, tenant, req->period(), trace); });
      if (!s.ok()) {
        return s;
      }
      out->Clear(); // the answer is the period as it is now, however often it is asked
      drive(tenant, req->period(), trace, *out, ctx->deadline());
      return Status::OK;
    });
  }

  /// The `billing.period.closing` consumer: drives the close to `closed`; throws (the event
  /// is redelivered) while Issue fails.
  void on_closing(const saas::event &ev) {
    const auto period = ev.body.value("period", std::string());
    if (!saas::valid_period(period)) {
      saas::log(svc_->name(), "error", ev.trace, "dropped a malformed closing event",
                {{"event", ev.id}});
      return;
    }
    v1::ClosePeriodResponse out;
    if (drive(ev.tenant_id, period, ev.trace, out, std::nullopt) != "closed") {
      throw std::runtime_error("period " + period + " of tenant " + std::to_string(ev.tenant_id) +
                               " is still closing");
    }
  }

private:
  /// Step 1, in the caller's transaction: the period becomes `closing` with its total, and its
  /// event is enqueued; a period already closing or closed is left as it is.
  Status begin_close(pqxx::work &w, std::int64_t tenant, const std::string &period,
                     const saas::trace_context &trace) {
    w.exec_params(lock_tenant, tenant);
    if (w.exec("SELECT 1 FROM billing.accounts").empty()) {
      return {StatusCode::FAILED_PRECONDITION, "no subscription known to billing yet; retry"};
    }
    const auto r = w.exec_params(
        "INSERT INTO billing.periods (tenant_id, period, state, total_cents, rows) "
        "SELECT $1, $2, 'closing', coalesce(sum(cents), 0), count(*) FROM billing.usage "
        "WHERE period = $2 ON CONFLICT (tenant_id, period) DO NOTHING RETURNING 1",
        tenant, period);
    if (!r.empty()) {
      const saas::json ev = {{"tenant_id", tenant}, {"period", period}};
      const lakh::pg::outbox_header tp{"traceparent", trace.header()};
      svc_->outbox().enqueue(w, saas::topic("billing.period.closing"), std::to_string(tenant),
                             ev.dump(), {&tp, 1});
    }
    return Status::OK;
  }

  /// Steps 2 and 3, outside any transaction: issues the invoice of a closing period and
  /// records `closed`. Fills `out` with the period as it is; returns its state. On a
  /// caller's behalf the call to invoicing gets at most half the caller's remaining time, so
  /// the caller hears "closing" before its own deadline when invoicing is slow or down.
  std::string drive(std::int64_t tenant, const std::string &period,
                    const saas::trace_context &trace, v1::ClosePeriodResponse &out,
                    std::optional<std::chrono::system_clock::time_point> caller_deadline) {
    auto budget = svc_->deadline();
    if (caller_deadline) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          *caller_deadline - std::chrono::system_clock::now());
      budget = std::clamp(left / 2, std::chrono::milliseconds(1), budget);
    }
    auto p = saas::tenant_read(svc_->db(), tenant,
                               "SELECT state, total_cents, rows, coalesce(invoice_id, 0) FROM "
                               "billing.periods WHERE period = '" +
                                   period + "'"); // a valid_period(): digits and '-'

    if (p.empty()) {
      return "";
    }
    std::string state = p[0][0].as<std::string>();
    out.set_rows(p[0][2].as<std::int64_t>());
    out.set_state(state);
    grpc::Status s;
    if (state == "closing") {
      v1::IssueInvoiceRequest issue;
      issue.set_tenant_id(tenant);
      issue.set_period(period);
      issue.set_total_cents(p[0][1].as<std::int64_t>());
      grpc::ClientContext call;
      saas::prepare_call(call, svc_->auth(), trace, budget);
      call.set_wait_for_ready(true); // invoicing restarting: wait for it, up to the deadline
      s = invoicing_->Issue(&call, issue, out.mutable_invoice());
      if (s.ok() && mark_closed(tenant, period, out.invoice().id())) {
        closed_->add();
        saas::log(svc_->name(), "info", trace, "period closed",
                  {{"tenant_id", tenant}, {"period", period}, {"invoice_id", out.invoice().id()}});
      }
    } else {
      v1::GetInvoiceRequest get;
      get.set_tenant_id(tenant);
      get.set_invoice_id(p[0][3].as<std::int64_t>());
      grpc::ClientContext call;
      saas::prepare_call(call, svc_->auth(), trace, budget);
      call.set_wait_for_ready(true); // invoicing restarting: wait for it, up to the deadline
      s = invoicing_->Get(&call, get, out.mutable_invoice());
    }
    if (!s.ok()) { // the invoice follows (the consumer keeps driving): say "closing"
      saas::log(
          svc_->name(), "info", trace, "invoice not issued yet",
          {{"tenant_id", tenant}, {"period", period}, {"code", static_cast<int>(s.error_code())}});
      out.clear_invoice();
      out.set_state("closing");
      return "closing";
    }
    out.set_state("closed");
    return "closed";
  }

  /// Records `closed` with the invoice; false if it was recorded before.
  bool mark_closed(std::int64_t tenant, const std::string &period, std::int64_t invoice) {
    return saas::in_tenant(retry_, svc_->db(), tenant, [&](pqxx::work &w) {
      return !w.exec_params("UPDATE billing.periods SET state = 'closed', invoice_id = $2, "
                            "closed_at = now() WHERE period = $1 AND state = 'closing' RETURNING 1",
                            period, invoice)
                  .empty();
    });
  }

  saas::service *svc_;
  std::unique_ptr<v1::InvoicingService::Stub> invoicing_;
  saas::rpc_server rpc_;
  lakh::counter *rows_;
  lakh::counter *closed_;
  lakh::pg::retrier retry_;
};

} // namespace

int main(int argc, char **argv) {
  return saas::service_main(
      {"billing", "billing", saas::schema_sql, 15053, 9103, true, true},
      [](saas::service &s) {
        auto svc = std::make_unique<billing_service>(s);
        s.on_event("subscription.changed", "billing-subscriptions",
                   billing::on_subscription_changed);
        s.consume(
            "billing.period.closing", "billing-closing",
            [p = svc.get()](const saas::event &ev) { p->on_closing(ev); }, 1);
        return svc;
      },
      argc, argv);
}
