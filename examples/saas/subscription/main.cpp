// saas_subscription: the Subscription service (examples/saas/README.md). Owns schema
// `subscriptions` (schema.sql): plans (the catalog) and subscriptions (one per tenant,
// row-level security by app.tenant_id). gRPC: Subscribe creates or changes the plan; the
// change, its `subscription.changed` event (outbox) and the caller's idempotency key commit in
// one transaction. Get reads it. Settings: service_main.hpp.
#include "../common/service_main.hpp"
#include "saas.grpc.pb.h"
#include "subscription_schema.hpp"

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;

class subscription_service final : public v1::SubscriptionService::Service {
public:
  explicit subscription_service(saas::service &s)
      : svc_(&s), rpc_(s.metrics(), s.name(), s.auth(), {"Subscribe", "Get"}) {}

  Status Subscribe(ServerContext *ctx, const v1::SubscribeRequest *req,
                   v1::Subscription *out) override {
    return rpc_.run("Subscribe", *ctx, [&](const saas::trace_context &trace) {
      const auto tenant = req->tenant_id();
      return saas::idempotent(
          *ctx, svc_->keys(), std::to_string(tenant), out,
          [&](auto body) { return saas::in_tenant(retry_, svc_->db(), tenant, body); },
          [&](pqxx::work &w) { return subscribe(w, *req, trace, *out); });
    });
  }

  Status Get(ServerContext *ctx, const v1::GetSubscriptionRequest *req,
             v1::Subscription *out) override {
    return rpc_.run("Get", *ctx, [&](const saas::trace_context &) {
      auto r = saas::tenant_read(svc_->db(), req->tenant_id(),
                                 "SELECT plan, version, extract(epoch FROM started_at)::bigint "
                                 "FROM subscriptions.subscriptions");
      if (r.empty()) {
        return Status(StatusCode::NOT_FOUND, "no subscription");
      }
      out->set_tenant_id(req->tenant_id());
      out->set_plan(r[0][0].as<std::string>());
      out->set_version(r[0][1].as<std::int64_t>());
      out->set_started_unix(r[0][2].as<std::int64_t>());
      return Status::OK;
    });
  }

private:
  Status subscribe(pqxx::work &w, const v1::SubscribeRequest &req, const saas::trace_context &trace,
                   v1::Subscription &out) {
    if (w.exec_params("SELECT 1 FROM subscriptions.plans WHERE name = $1", req.plan()).empty()) {
      return {StatusCode::INVALID_ARGUMENT, "unknown plan \"" + req.plan() + "\" (starter or pro)"};
    }
    // The row lock of the upsert serializes a tenant's changes, so their events get ids in
    // commit order and the relay publishes them in that order.
    auto r = w.exec_params(
        "INSERT INTO subscriptions.subscriptions AS s (tenant_id, plan) VALUES ($1, $2) "
        "ON CONFLICT (tenant_id) DO UPDATE SET plan = excluded.plan, version = s.version + 1, "
        "changed_at = now() WHERE s.plan <> excluded.plan "
        "RETURNING version, extract(epoch FROM started_at)::bigint",
        req.tenant_id(), req.plan());
    if (r.empty()) { // the same plan again: nothing changed, no event
      r = w.exec("SELECT version, extract(epoch FROM started_at)::bigint FROM "
                 "subscriptions.subscriptions");
    } else {
      const saas::json ev = {{"tenant_id", req.tenant_id()},
                             {"plan", req.plan()},
                             {"version", r[0][0].as<std::int64_t>()}};
      const lakh::pg::outbox_header tp{"traceparent", trace.header()};
      svc_->outbox().enqueue(w, saas::topic("subscription.changed"),
                             std::to_string(req.tenant_id()), ev.dump(), {&tp, 1});
    }
    out.set_tenant_id(req.tenant_id());
    out.set_plan(req.plan());
    out.set_version(r[0][0].as<std::int64_t>());
    out.set_started_unix(r[0][1].as<std::int64_t>());
    return Status::OK;
  }

  saas::service *svc_;
  saas::rpc_server rpc_;
  lakh::pg::retrier retry_;
};

} // namespace

int main(int argc, char **argv) {
  return saas::service_main(
      {"subscription", "subscriptions", saas::schema_sql, 15052, 9102, true},
      [](saas::service &s) { return std::make_unique<subscription_service>(s); }, argc, argv);
}
