// saas_payment: the Payment service (examples/saas/README.md). Owns schema `payments`:
// payments (one per invoice) and provider_charges (the fake provider's own ledger), both with
// row-level security by app.tenant_id (schema.sql). gRPC: Capture, GetByInvoice. Consumes
// `saas.invoice.issued` (durable "payment-invoices") and captures each invoice; every payment
// emits `saas.payment.captured` through the outbox, in the transaction that records it.
// Settings: service_main.hpp; REDIS_URL (required).
//
// One charge per invoice, whoever asks (the gateway's Capture, the invoice.issued event, any
// retry or redelivery of either) and whatever crashes. Three layers, each keyed by the invoice
// within its tenant:
//   1. lakh::idempotency_guard on Redis (key "<namespace>:payment:<tenant>:invoice-<id>"):
//      concurrent and repeated captures of an invoice run the capture once and replay its stored
//      answer. It is an optimisation of the common case, not the proof: its record lives outside
//      the database, so a crash (or a lost Redis record) lets the capture run again.
//   2. The provider's idempotency key "invoice-<id>" (as Stripe's Idempotency-Key): charging
//      again with the key returns the first charge; the money moves at most once.
//   3. payments.payments is UNIQUE per (tenant, invoice) and the capture first returns an
//      existing payment, so a second run records nothing and emits no second event.
// Crash analysis (kill -9 anywhere): before the charge, nothing happened; after the charge but
// before the payment commits, the invoice event is unacknowledged (or the caller got no
// answer), so it is redelivered; once the guard's lease ends (Redis expires the in-progress
// record), the capture runs again, the provider returns the SAME charge for "invoice-<id>",
// and the payment and its event commit once; after the commit but before the guard records the
// answer, the rerun finds the payment and returns it. The event is acknowledged only after
// capture() returned a payment, and the outbox relays what committed: no event is lost.
#include "../common/service_main.hpp"
#include "payment_schema.hpp"
#include "saas.grpc.pb.h"

#include <lakh/idempotency.hpp>
#include <lakh/redis/connection.hpp>
#include <lakh/redis/idempotency_store.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;

/// A payment provider (Stripe, Adyen...): charges a tenant's payment method.
class payment_provider {
public:
  virtual ~payment_provider() = default;
  /// Charges amount_cents once per idempotency key: the same key again returns the first
  /// charge's reference and moves no money. Returns the provider's reference ("ch_...").
  /// @throws provider_conflict if the key was used for another amount; anything else if the
  ///         provider cannot be reached (then the charge may or may not have happened: charge
  ///         again with the same key to find out).
  virtual std::string charge(std::int64_t tenant, std::int64_t amount_cents,
                             const std::string &idempotency_key) = 0;

protected:
  payment_provider() = default;
  payment_provider(const payment_provider &) = default;
  payment_provider &operator=(const payment_provider &) = default;
};

/// The provider refused a reused idempotency key with other parameters (Stripe's 400
/// idempotency_error). Retrying cannot help.
struct provider_conflict : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A provider over its own ledger table, payments.provider_charges, that behaves like a real
/// one: a key is charged once, and every later charge with the key returns that charge. Each
/// charge commits in its own transaction, separate from the payment's (the provider is another
/// system: its charge survives our rollback or crash).
class fake_provider final : public payment_provider {
public:
  fake_provider(lakh::pg::pool &p, lakh::registry &r)
      : pool_(&p), charges_(&r.make_counter("saas_payment_provider_charges_total",
                                            "charges the (fake) provider made (money moved)")) {}

  std::string charge(std::int64_t tenant, std::int64_t amount_cents,
                     const std::string &idempotency_key) override {
    struct outcome {
      std::int64_t id;
      std::int64_t amount;
      bool fresh;
    };
    const auto o = saas::in_tenant(retry_, *pool_, tenant, [&](pqxx::work &w) {
      auto r = w.exec_params("INSERT INTO payments.provider_charges (tenant_id, idempotency_key, "
                             "amount_cents) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, "
                             "idempotency_key) DO NOTHING RETURNING id",
                             tenant, idempotency_key, amount_cents);
      if (!r.empty()) {
        return outcome{r[0][0].as<std::int64_t>(), amount_cents, true};
      }
      r = w.exec_params("SELECT id, amount_cents FROM payments.provider_charges WHERE "
                        "idempotency_key = $1",
                        idempotency_key);
      return outcome{r.at(0)[0].as<std::int64_t>(), r[0][1].as<std::int64_t>(), false};
    });
    if (o.fresh) {
      charges_->add();
    } else if (o.amount != amount_cents) {
      throw provider_conflict("provider: idempotency key " + idempotency_key + " charged " +
                              std::to_string(o.amount) + " cents, not " +
                              std::to_string(amount_cents));
    }
    return "ch_" + std::to_string(o.id);
  }

private:
  lakh::pg::pool *pool_;
  lakh::counter *charges_;
  lakh::pg::retrier retry_;
};

/// What capture() did: status OK with the payment, or the error to answer.
struct capture_result {
  Status status;
  v1::Payment payment;
  lakh::idempotency_outcome outcome = lakh::idempotency_outcome::in_progress;
};

saas::json to_json(const v1::Payment &p) {
  return {{"tenant_id", p.tenant_id()},
          {"payment_id", p.id()},
          {"invoice_id", p.invoice_id()},
          {"amount_cents", p.amount_cents()},
          {"provider_ref", p.provider_ref()}};
}

v1::Payment payment_of(const saas::json &j) {
  v1::Payment p;
  p.set_tenant_id(j.at("tenant_id").get<std::int64_t>());
  p.set_id(j.at("payment_id").get<std::int64_t>());
  p.set_invoice_id(j.at("invoice_id").get<std::int64_t>());
  p.set_amount_cents(j.at("amount_cents").get<std::int64_t>());
  p.set_provider_ref(j.at("provider_ref").get<std::string>());
  return p;
}

v1::Payment payment_of(std::int64_t tenant, const pqxx::row &r) {
  v1::Payment p;
  p.set_tenant_id(tenant);
  p.set_id(r[0].as<std::int64_t>());
  p.set_invoice_id(r[1].as<std::int64_t>());
  p.set_amount_cents(r[2].as<std::int64_t>());
  p.set_provider_ref(r[3].as<std::string>());
  return p;
}

/// Captures invoices: the guard, the provider and the payments table (see the file comment).
class capturer {
public:
  capturer(lakh::pg::pool &p, lakh::pg::outbox &box, payment_provider &provider,
           lakh::redis::idempotency_store &store, lakh::registry &r)
      : pool_(&p), box_(&box), provider_(&provider), guard_(store, guard_options()),
        captured_(&r.make_counter("saas_payments_captured_total",
                                  "payments recorded (one per invoice)")) {}

  /// Captures `amount` for the tenant's invoice once, however often and by whomever asked.
  /// Thread-safety: safe. Blocks: on Redis, PostgreSQL and the provider; up to the guard's
  /// wait while another capture of the invoice runs.
  /// @throws lakh::redis::redis_error, pqxx errors, the provider's errors: nothing was decided (the
  ///         guard released the key): retry.
  capture_result capture(std::int64_t tenant, std::int64_t invoice_id, std::int64_t amount,
                         const std::string &caller_key, const saas::trace_context &trace) {
    const std::string key = "invoice-" + std::to_string(invoice_id);
    capture_result out;
    try {
      const auto g = guard_.run(
          std::to_string(tenant), key,
          lakh::fingerprint("capture", std::to_string(invoice_id), std::to_string(amount)),
          [&] { return run_capture(tenant, invoice_id, amount, key, caller_key, trace); });
      out.outcome = g.outcome;
      if (g.has_response() && g.response.status == 200) {
        out.payment = payment_of(saas::json::parse(g.response.body));
        out.status = Status::OK;
      } else if (g.has_response()) {
        out.status = Status(StatusCode::FAILED_PRECONDITION, g.response.body);
      } else if (g.outcome == lakh::idempotency_outcome::mismatch) {
        out.status =
            Status(StatusCode::FAILED_PRECONDITION,
                   "invoice " + std::to_string(invoice_id) + " was captured for another amount");
      } else if (g.outcome == lakh::idempotency_outcome::in_progress) {
        out.status =
            Status(StatusCode::ABORTED,
                   "a capture of invoice " + std::to_string(invoice_id) + " is in progress; retry");
      } else { // lease_lost: the capture ran (its payment committed) but outlived its lease
        out.status =
            Status(StatusCode::ABORTED, "the capture of invoice " + std::to_string(invoice_id) +
                                            " outlived its lease; retry");
      }
    } catch (const provider_conflict &e) {
      // Not stored under the key (the guard released it): the request with the charged
      // amount can still complete the payment.
      out.status = Status(StatusCode::FAILED_PRECONDITION, e.what());
      out.outcome = lakh::idempotency_outcome::mismatch;
    }
    saas::log("payment", "info", trace, "capture",
              {{"tenant_id", tenant},
               {"invoice_id", invoice_id},
               {"amount_cents", amount},
               {"provider_ref", out.payment.provider_ref()},
               {"outcome", std::string(lakh::to_string(out.outcome))},
               {"code", static_cast<int>(out.status.error_code())}});
    return out;
  }

private:
  static lakh::idempotency_options guard_options() {
    lakh::idempotency_options o;
    o.lease = std::chrono::seconds(10); // a charge plus two transactions, with a wide margin
    o.wait = std::chrono::seconds(4);   // concurrent duplicates wait for the first's answer
    o.poll = lakh::backoff{std::chrono::milliseconds(5), std::chrono::milliseconds(100)};
    return o;
  }

  // The guarded operation: runs at most once at a time per invoice while the lease holds, and
  // is safe to run again after a crash (file comment).
  lakh::stored_response run_capture(std::int64_t tenant, std::int64_t invoice_id,
                                    std::int64_t amount, const std::string &key,
                                    const std::string &caller_key,
                                    const saas::trace_context &trace) {
    static constexpr const char *select = "SELECT id, invoice_id, amount_cents, provider_ref "
                                          "FROM payments.payments WHERE invoice_id = $1";
    auto existing = [&](pqxx::work &w) -> std::optional<lakh::stored_response> {
      auto r = w.exec_params(select, invoice_id);
      if (r.empty()) {
        return std::nullopt;
      }
      const auto p = payment_of(tenant, r[0]);
      if (p.amount_cents() != amount) { // captured before, for another amount
        return lakh::stored_response{409, "invoice " + std::to_string(invoice_id) +
                                              " was captured for " +
                                              std::to_string(p.amount_cents()) + " cents"};
      }
      return lakh::stored_response{200, to_json(p).dump()};
    };
    if (auto found = saas::in_tenant(retry_, *pool_, tenant, existing)) {
      return *found;
    }
    const auto ref = provider_->charge(tenant, amount, key);
    bool inserted = false;
    auto resp = saas::in_tenant(retry_, *pool_, tenant, [&](pqxx::work &w) {
      inserted = false;
      auto r = w.exec_params(
          "INSERT INTO payments.payments (tenant_id, invoice_id, amount_cents, provider_ref, "
          "idempotency_key) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, invoice_id) DO "
          "NOTHING RETURNING id, invoice_id, amount_cents, provider_ref",
          tenant, invoice_id, amount, ref, caller_key);
      if (r.empty()) { // another run (after a lease expired) recorded it: answer with that
        return existing(w).value();
      }
      inserted = true;
      const auto ev = to_json(payment_of(tenant, r[0]));
      const lakh::pg::outbox_header tp{"traceparent", trace.header()};
      box_->enqueue(w, saas::topic("payment.captured"), std::to_string(tenant), ev.dump(),
                    {&tp, 1});
      return lakh::stored_response{200, ev.dump()};
    });
    if (inserted) {
      captured_->add();
    }
    return resp;
  }

  lakh::pg::pool *pool_;
  lakh::pg::outbox *box_;
  payment_provider *provider_;
  lakh::idempotency_guard<lakh::redis::idempotency_store> guard_;
  lakh::counter *captured_;
  lakh::pg::retrier retry_;
};

class payment_service : public v1::PaymentService::Service {
public:
  payment_service(saas::service &s, capturer &c)
      : svc_(&s), capturer_(&c),
        rpc_(s.metrics(), s.name(), s.auth(), {"Capture", "GetByInvoice"}) {}

  Status Capture(ServerContext *ctx, const v1::CaptureRequest *req, v1::Payment *out) override {
    return rpc_.run("Capture", *ctx, [&](const saas::trace_context &trace) {
      if (req->tenant_id() < 1 || req->invoice_id() < 1) {
        return Status(StatusCode::INVALID_ARGUMENT, "tenant_id and invoice_id must be >= 1");
      }
      if (req->amount_cents() < 0) {
        return Status(StatusCode::INVALID_ARGUMENT, "amount_cents must be >= 0");
      }
      try {
        lakh::validate_idempotency_key(req->idempotency_key(), "idempotency_key");
      } catch (const std::invalid_argument &e) {
        return Status(StatusCode::INVALID_ARGUMENT, e.what());
      }
      auto r = capturer_->capture(req->tenant_id(), req->invoice_id(), req->amount_cents(),
                                  req->idempotency_key(), trace);
      if (r.status.ok()) {
        *out = std::move(r.payment);
      }
      return r.status;
    });
  }

  Status GetByInvoice(ServerContext *ctx, const v1::GetPaymentRequest *req,
                      v1::Payment *out) override {
    return rpc_.run("GetByInvoice", *ctx, [&](const saas::trace_context &) {
      return saas::in_tenant(retry_, svc_->db(), req->tenant_id(), [&](pqxx::work &w) {
        auto r = w.exec_params("SELECT id, invoice_id, amount_cents, provider_ref FROM "
                               "payments.payments WHERE invoice_id = $1",
                               req->invoice_id());
        if (r.empty()) {
          return Status(StatusCode::NOT_FOUND,
                        "no payment for invoice " + std::to_string(req->invoice_id()));
        }
        *out = payment_of(req->tenant_id(), r[0]);
        return Status::OK;
      });
    });
  }

private:
  saas::service *svc_;
  capturer *capturer_;
  saas::rpc_server rpc_;
  lakh::pg::retrier retry_;
};

/// The invoice.issued handler: captures the invoice, and throws (the event is redelivered)
/// unless the invoice is paid or can never be (another amount was captured for it).
saas::event_handler on_invoice_issued(capturer &c) {
  return [&c](const saas::event &ev) {
    const auto &b = ev.body;
    if (!b.contains("invoice_id") || !b["invoice_id"].is_number_integer() ||
        !b.contains("total_cents") || !b["total_cents"].is_number_integer() ||
        b["invoice_id"].get<std::int64_t>() < 1 || b["total_cents"].get<std::int64_t>() < 0) {
      saas::log("payment", "error", ev.trace, "dropped a malformed invoice.issued event",
                {{"event", ev.id}, {"payload", b}});
      return;
    }
    const auto r = c.capture(ev.tenant_id, b["invoice_id"].get<std::int64_t>(),
                             b["total_cents"].get<std::int64_t>(), "event-" + ev.id, ev.trace);
    if (r.status.error_code() == StatusCode::FAILED_PRECONDITION) {
      // Another amount was captured (or charged) for this invoice: a redelivery would get the
      // same answer, so acknowledge it and leave it to an operator.
      saas::log("payment", "error", ev.trace, "invoice not captured",
                {{"event", ev.id}, {"error", r.status.error_message()}});
      return;
    }
    if (!r.status.ok()) {
      throw std::runtime_error(r.status.error_message());
    }
  };
}

/// What the payment service holds beside its gRPC service.
struct payment_parts {
  explicit payment_parts(saas::service &s)
      : redis(s.cfg().require("REDIS_URL")), store(redis, {saas::event_namespace() + ":payment:"}),
        provider(s.db(), s.metrics()), cap(s.db(), s.outbox(), provider, store, s.metrics()) {
    (void)redis.command({"PING"}); // fail at start, naming the server, if Redis is unreachable
  }
  lakh::redis::connection_pool redis;
  lakh::redis::idempotency_store store;
  fake_provider provider;
  capturer cap;
};

/// The gRPC service and what it uses, destroyed together.
class payment_server final : public payment_service {
public:
  explicit payment_server(saas::service &s, std::unique_ptr<payment_parts> parts)
      : payment_service(s, parts->cap), parts_(std::move(parts)) {}

private:
  std::unique_ptr<payment_parts> parts_;
};

} // namespace

int main(int argc, char **argv) {
  return saas::service_main(
      {"payment", "payments", saas::schema_sql, 15055, 9105, true},
      [](saas::service &s) {
        auto parts = std::make_unique<payment_parts>(s);
        // One event at a time: a capture may wait up to 4 s for a duplicate in flight.
        s.consume("invoice.issued", "payment-invoices", on_invoice_issued(parts->cap), 1);
        return std::make_unique<payment_server>(s, std::move(parts));
      },
      argc, argv);
}
