// saas_billing: the Billing service (examples/saas/README.md). Owns schema `billing`, every
// table with row-level security by app.tenant_id:
//   - accounts: each tenant's plan, from `saas.subscription.changed` (durable
//     "billing-subscriptions", once per event through the inbox; a version never goes back);
//   - usage: rated usage rows (the spec's arithmetic, lakh::fake::charge_cents), unique per
//     (tenant, id), so a re-sent row is a duplicate and is not charged twice;
//   - closed_periods: the periods invoiced, with their invoice.
// gRPC: IngestUsage (validates every row, then writes all in one statement, or nothing),
// ClosePeriod (sums the period and issues its invoice through InvoicingService.Issue, which is
// idempotent on (tenant, period)). Both take a per-tenant transaction-scoped advisory lock, so
// no row lands in a period while it is being closed, and none after.
// Config: DATABASE_URL, NATS_URL (required); BILLING_GRPC_ADDR (127.0.0.1:15053),
// BILLING_METRICS_PORT (9103), INVOICING_GRPC_ADDR (127.0.0.1:15054), GRPC_DEADLINE_MS (2000);
// environment or .env. SIGTERM/SIGINT: drain and exit 0.
#include "../common/runtime.hpp"
#include "saas.grpc.pb.h"

#include <lakh/fake/usage.hpp>

#include <algorithm>

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;
constexpr const char *service = "billing";

constexpr int max_rows = 10000;
constexpr std::int64_t max_quantity = 1'000'000'000;
constexpr std::int64_t min_ts = 946684800;  // 2000-01-01T00:00:00Z
constexpr std::int64_t max_ts = 4102444800; // 2100-01-01T00:00:00Z

/// The UTC month of a unix time, "YYYY-MM".
std::string period_of(std::int64_t unix_seconds) {
  using namespace std::chrono;
  const year_month_day d{floor<days>(sys_seconds(seconds(unix_seconds)))};
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02u", static_cast<int>(d.year()),
                static_cast<unsigned>(d.month()));
  return buf;
}

/// Appends `v` to a PostgreSQL array literal being built in `out` ("{" and the elements so
/// far); close it with '}'. For `$n::bigint[]` / `$n::text[]` parameters (libpqxx 6.4 has no
/// array parameters). Only for values that need no quoting: integers and "YYYY-MM".
void append_element(std::string &out, std::string_view v) {
  if (out.size() > 1) {
    out += ',';
  }
  out += v;
}

/// Serializes a tenant's IngestUsage and ClosePeriod until the transaction ends. Takes the
/// tenant as $1.
constexpr const char *lock_tenant =
    "SELECT pg_advisory_xact_lock(hashtextextended('saas billing tenant ' || $1::text, 0))";

/// The first problem of a request's rows ("rows[3].metric must be 0..3, got 7"), or "".
std::string invalid_rows(const v1::IngestUsageRequest &req) {
  if (req.rows_size() < 1 || req.rows_size() > max_rows) {
    return "rows must hold 1.." + std::to_string(max_rows) + " rows, got " +
           std::to_string(req.rows_size());
  }
  for (int i = 0; i < req.rows_size(); ++i) {
    const auto &r = req.rows(i);
    const auto field = "rows[" + std::to_string(i) + "].";
    if (r.id() < 1) {
      return field + "id must be >= 1, got " + std::to_string(r.id());
    }
    if (r.user_id() < 0) {
      return field + "user_id must be >= 0, got " + std::to_string(r.user_id());
    }
    if (r.metric() < 0 || r.metric() >= static_cast<int>(lakh::fake::metric_count)) {
      return field + "metric must be 0.." + std::to_string(lakh::fake::metric_count - 1) +
             ", got " + std::to_string(r.metric());
    }
    if (r.quantity() < 1 || r.quantity() > max_quantity) {
      return field + "quantity must be 1.." + std::to_string(max_quantity) + ", got " +
             std::to_string(r.quantity());
    }
    if (r.ts_unix() < min_ts || r.ts_unix() >= max_ts) {
      return field + "ts_unix must be within 2000-01-01..2100-01-01 (" + std::to_string(min_ts) +
             ".." + std::to_string(max_ts - 1) + "), got " + std::to_string(r.ts_unix());
    }
  }
  return "";
}

class billing_service final : public v1::BillingService::Service {
public:
  billing_service(lakh::pg::pool &p, std::shared_ptr<grpc::Channel> invoicing,
                  std::chrono::milliseconds deadline, lakh::registry &r)
      : pool_(&p), invoicing_(v1::InvoicingService::NewStub(std::move(invoicing))),
        deadline_(deadline), stats_(r, service, {"IngestUsage", "ClosePeriod"}),
        rows_(&r.make_counter("saas_billing_rows_ingested_total",
                              "usage rows accepted (duplicates not counted)")),
        cents_(&r.make_counter("saas_billing_cents_rated_total",
                               "cents charged for the accepted usage rows")) {}

  Status IngestUsage(ServerContext *ctx, const v1::IngestUsageRequest *req,
                     v1::IngestUsageResponse *out) override {
    return stats_.run("IngestUsage", *ctx, [&](const saas::trace_context &trace) {
      if (auto problem = invalid_rows(*req); !problem.empty()) {
        return Status(StatusCode::INVALID_ARGUMENT, problem);
      }
      // Rate the rows and build the columns (arrays for unnest) before the transaction.
      std::string ids = "{", users = "{", metrics = "{", quantities = "{", tss = "{", periods = "{",
                  cents = "{";
      std::vector<std::string> distinct_periods;
      for (const auto &r : req->rows()) {
        const auto charge = lakh::fake::charge_cents(static_cast<lakh::fake::metric>(r.metric()),
                                                     static_cast<std::uint64_t>(r.quantity()));
        const auto period = period_of(r.ts_unix());
        append_element(ids, std::to_string(r.id()));
        append_element(users, std::to_string(r.user_id()));
        append_element(metrics, std::to_string(r.metric()));
        append_element(quantities, std::to_string(r.quantity()));
        append_element(tss, std::to_string(r.ts_unix()));
        append_element(periods, period);
        append_element(cents, std::to_string(charge));
        if (std::find(distinct_periods.begin(), distinct_periods.end(), period) ==
            distinct_periods.end()) {
          distinct_periods.push_back(period);
        }
      }
      std::string period_set = "{";
      for (const auto &p : distinct_periods) {
        append_element(period_set, p);
      }
      for (auto *a : {&ids, &users, &metrics, &quantities, &tss, &periods, &cents, &period_set}) {
        *a += '}';
      }
      std::int64_t accepted = 0;
      std::int64_t charged = 0;
      const auto tenant = req->tenant_id();
      auto s = saas::in_tenant(retry_, *pool_, tenant, [&](pqxx::work &w) {
        w.exec_params(lock_tenant, tenant);
        if (auto closed = w.exec_params("SELECT period FROM billing.closed_periods WHERE "
                                        "period = ANY($1::text[]) ORDER BY period LIMIT 1",
                                        period_set);
            !closed.empty()) {
          return Status(StatusCode::FAILED_PRECONDITION,
                        "period " + closed[0][0].as<std::string>() + " is closed for tenant " +
                            std::to_string(tenant));
        }
        const auto r = w.exec_params(
            "INSERT INTO billing.usage (tenant_id, id, user_id, metric, quantity, ts, period, "
            "cents) SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::smallint[], "
            "$5::bigint[], $6::bigint[], $7::text[], $8::bigint[]) "
            "ON CONFLICT (tenant_id, id) DO NOTHING RETURNING cents",
            tenant, ids, users, metrics, quantities, tss, periods, cents);
        accepted = static_cast<std::int64_t>(r.size());
        charged = 0;
        for (const auto &row : r) {
          charged += row[0].as<std::int64_t>();
        }
        return Status::OK;
      });
      if (!s.ok()) {
        return s;
      }
      rows_->add(static_cast<std::uint64_t>(accepted));
      cents_->add(static_cast<std::uint64_t>(charged));
      out->set_accepted(accepted);
      out->set_duplicates(req->rows_size() - accepted);
      out->set_charge_cents(charged);
      saas::log(service, "info", trace.trace_id, "usage ingested",
                {{"tenant_id", tenant},
                 {"rows", req->rows_size()},
                 {"accepted", accepted},
                 {"charge_cents", charged}});
      return s;
    });
  }

  Status ClosePeriod(ServerContext *ctx, const v1::ClosePeriodRequest *req,
                     v1::ClosePeriodResponse *out) override {
    return stats_.run("ClosePeriod", *ctx, [&](const saas::trace_context &trace) {
      if (!saas::valid_period(req->period())) {
        return Status(StatusCode::INVALID_ARGUMENT,
                      "period must be YYYY-MM, got \"" + req->period() + "\"");
      }
      const auto tenant = req->tenant_id();
      std::int64_t closed_invoice = 0; // set when the period was closed before
      auto s = saas::in_tenant(retry_, *pool_, tenant, [&](pqxx::work &w) {
        closed_invoice = 0;
        w.exec_params(lock_tenant, tenant);
        if (w.exec("SELECT 1 FROM billing.accounts").empty()) {
          return Status(StatusCode::FAILED_PRECONDITION,
                        "tenant " + std::to_string(tenant) +
                            " has no subscription known to billing");
        }
        if (auto r = w.exec_params("SELECT invoice_id, rows FROM billing.closed_periods WHERE "
                                   "period = $1",
                                   req->period());
            !r.empty()) {
          closed_invoice = r[0][0].as<std::int64_t>();
          out->set_rows(r[0][1].as<std::int64_t>());
          return Status::OK;
        }
        const auto sum = w.exec_params("SELECT coalesce(sum(cents), 0)::bigint, count(*) FROM "
                                       "billing.usage WHERE period = $1",
                                       req->period());
        const auto total = sum[0][0].as<std::int64_t>();
        const auto rows = sum[0][1].as<std::int64_t>();
        // Issue is idempotent on (tenant, period): if this transaction is retried, or commits
        // nothing, the next attempt gets the same invoice.
        v1::IssueInvoiceRequest issue;
        issue.set_tenant_id(tenant);
        issue.set_period(req->period());
        issue.set_total_cents(total);
        grpc::ClientContext call;
        saas::outgoing(call, trace, deadline_);
        if (auto st = invoicing_->Issue(&call, issue, out->mutable_invoice()); !st.ok()) {
          return Status(st.error_code(), "InvoicingService.Issue: " + st.error_message());
        }
        w.exec_params("INSERT INTO billing.closed_periods (tenant_id, period, invoice_id, "
                      "total_cents, rows) VALUES ($1, $2, $3, $4, $5)",
                      tenant, req->period(), out->invoice().id(), total, rows);
        out->set_rows(rows);
        return Status::OK;
      });
      if (!s.ok()) {
        return s;
      }
      if (closed_invoice != 0) { // closed before: the invoice as it is now (it may be paid)
        v1::GetInvoiceRequest get;
        get.set_tenant_id(tenant);
        get.set_invoice_id(closed_invoice);
        grpc::ClientContext call;
        saas::outgoing(call, trace, deadline_);
        if (auto st = invoicing_->Get(&call, get, out->mutable_invoice()); !st.ok()) {
          return Status(st.error_code(), "InvoicingService.Get: " + st.error_message());
        }
        return Status::OK;
      }
      saas::log(service, "info", trace.trace_id, "period closed",
                {{"tenant_id", tenant},
                 {"period", req->period()},
                 {"invoice_id", out->invoice().id()},
                 {"total_cents", out->invoice().total_cents()},
                 {"rows", out->rows()}});
      return s;
    });
  }

private:
  lakh::pg::pool *pool_;
  std::unique_ptr<v1::InvoicingService::Stub> invoicing_;
  std::chrono::milliseconds deadline_;
  saas::rpc_stats stats_;
  lakh::counter *rows_;
  lakh::counter *cents_;
  lakh::pg::retrier retry_;
};

/// The subscription.changed handler (run once per event, in the event's tenant transaction):
/// records the plan unless the account already has this version or a later one (events of a
/// tenant may be redelivered, or arrive late across restarts).
void on_subscription_changed(pqxx::work &w, const saas::event &ev) {
  const auto &b = ev.body;
  if (!b.contains("plan") || !b["plan"].is_string() || !b.contains("version") ||
      !b["version"].is_number_integer()) {
    saas::log(service, "error", ev.trace.trace_id, "dropped a malformed subscription.changed event",
              {{"event", ev.id}, {"payload", b}});
    return;
  }
  const auto plan = b["plan"].get<std::string>();
  const auto version = b["version"].get<std::int64_t>();
  const auto r = w.exec_params(
      "INSERT INTO billing.accounts AS a (tenant_id, plan, version) VALUES ($1, $2, $3) "
      "ON CONFLICT (tenant_id) DO UPDATE SET plan = excluded.plan, version = excluded.version "
      "WHERE a.version < excluded.version RETURNING 1",
      ev.tenant_id, plan, version);
  saas::log(service, "info", ev.trace.trace_id,
            r.empty() ? "stale subscription change ignored" : "account plan recorded",
            {{"tenant_id", ev.tenant_id}, {"plan", plan}, {"version", version}});
}

} // namespace

int main() {
  const sigset_t sigs = saas::block_stop_signals();
  return saas::guarded_main(service, [&] {
    const auto cfg = saas::config::load();
    const auto url = cfg.require("DATABASE_URL");
    lakh::nats::jetstream js(cfg.require("NATS_URL"));
    saas::ensure_stream(js);
    lakh::pg::pool pool(saas::service_pool(url, 8));
    std::optional<lakh::pg::inbox> inbox;
    {
      lakh::pg::pool admin(url, 1);
      saas::setup_schema(admin, "billing", [](pqxx::work &w) {
        w.exec("CREATE TABLE IF NOT EXISTS billing.accounts (tenant_id bigint PRIMARY KEY, plan "
               "text NOT NULL, version bigint NOT NULL)");
        saas::tenant_policy(w, "billing.accounts");
        w.exec("CREATE TABLE IF NOT EXISTS billing.usage (tenant_id bigint NOT NULL, id bigint "
               "NOT NULL, user_id bigint NOT NULL, metric smallint NOT NULL CHECK (metric "
               "BETWEEN 0 AND 3), quantity bigint NOT NULL CHECK (quantity > 0), ts bigint NOT "
               "NULL, period text NOT NULL, cents bigint NOT NULL CHECK (cents >= 0), PRIMARY "
               "KEY (tenant_id, id))");
        w.exec("CREATE INDEX IF NOT EXISTS usage_period ON billing.usage (tenant_id, period)");
        saas::tenant_policy(w, "billing.usage");
        w.exec("CREATE TABLE IF NOT EXISTS billing.closed_periods (tenant_id bigint NOT NULL, "
               "period text NOT NULL, invoice_id bigint NOT NULL, total_cents bigint NOT NULL, "
               "rows bigint NOT NULL, closed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY "
               "(tenant_id, period))");
        saas::tenant_policy(w, "billing.closed_periods");
      });
      inbox.emplace(saas::make_inbox(admin, pool, "billing"));
    }
    lakh::registry metrics;
    saas::metrics_endpoint http(metrics, "127.0.0.1", cfg.port("BILLING_METRICS_PORT", 9103));
    billing_service svc(pool,
                        grpc::CreateChannel(cfg.get("INVOICING_GRPC_ADDR", "127.0.0.1:15054"),
                                            grpc::InsecureChannelCredentials()),
                        cfg.millis("GRPC_DEADLINE_MS", std::chrono::milliseconds(2000)), metrics);
    saas::event_consumer consumer(
        service, js, saas::topic("subscription.changed"), "billing-subscriptions",
        saas::once_per_event(pool, *inbox, "billing-subscriptions", on_subscription_changed),
        metrics);
    consumer.start();
    return saas::serve(service, sigs, cfg, cfg.get("BILLING_GRPC_ADDR", "127.0.0.1:15053"), {&svc},
                       [&] { consumer.stop(); });
  });
}
