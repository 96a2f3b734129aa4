// saas_subscription: the Subscription service (examples/saas/README.md). Owns schema
// `subscriptions`: plans (the catalog, global) and subscriptions (one per tenant, row-level
// security by app.tenant_id). gRPC: Subscribe (creates or changes the plan; the change and
// its `saas.subscription.changed` event commit together through the outbox), Get.
// Config: DATABASE_URL, NATS_URL (required); SUBSCRIPTION_GRPC_ADDR (127.0.0.1:15052),
// SUBSCRIPTION_METRICS_PORT (9102); environment or .env. SIGTERM/SIGINT: drain and exit 0.
#include "../common/runtime.hpp"
#include "saas.grpc.pb.h"

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;
constexpr const char *service = "subscription";

class subscription_service final : public v1::SubscriptionService::Service {
public:
  subscription_service(lakh::pg::pool &p, lakh::pg::outbox &box, lakh::registry &r)
      : pool_(&p), box_(&box), stats_(r, service, {"Subscribe", "Get"}) {}

  Status Subscribe(ServerContext *ctx, const v1::SubscribeRequest *req,
                   v1::Subscription *out) override {
    return stats_.run("Subscribe", *ctx, [&](const saas::trace_context &trace) {
      return saas::in_tenant(retry_, *pool_, req->tenant_id(), [&](pqxx::work &w) {
        if (w.exec_params("SELECT 1 FROM subscriptions.plans WHERE name = $1", req->plan())
                .empty()) {
          return Status(StatusCode::INVALID_ARGUMENT,
                        "unknown plan \"" + req->plan() + "\" (starter or pro)");
        }
        // The row lock of the upsert serializes a tenant's changes, so their events get ids
        // in commit order and the relay publishes them in that order (outbox.hpp).
        auto r = w.exec_params(
            "INSERT INTO subscriptions.subscriptions AS s (tenant_id, plan) VALUES ($1, $2) "
            "ON CONFLICT (tenant_id) DO UPDATE SET plan = excluded.plan, version = s.version + 1, "
            "changed_at = now() WHERE s.plan <> excluded.plan "
            "RETURNING version, extract(epoch FROM started_at)::bigint",
            req->tenant_id(), req->plan());
        if (r.empty()) { // the same plan again: nothing changed, no event
          r = w.exec_params("SELECT version, extract(epoch FROM started_at)::bigint FROM "
                            "subscriptions.subscriptions WHERE tenant_id = $1",
                            req->tenant_id());
        } else {
          const saas::json ev = {{"tenant_id", req->tenant_id()},
                                 {"plan", req->plan()},
                                 {"version", r[0][0].as<std::int64_t>()}};
          const lakh::pg::outbox_header tp{"traceparent", trace.header()};
          box_->enqueue(w, saas::topic("subscription.changed"), std::to_string(req->tenant_id()),
                        ev.dump(), {&tp, 1});
          saas::log(service, "info", trace.trace_id, "subscription changed", ev);
        }
        out->set_tenant_id(req->tenant_id());
        out->set_plan(req->plan());
        out->set_version(r[0][0].as<std::int64_t>());
        out->set_started_unix(r[0][1].as<std::int64_t>());
        return Status::OK;
      });
    });
  }

  Status Get(ServerContext *ctx, const v1::GetSubscriptionRequest *req,
             v1::Subscription *out) override {
    return stats_.run("Get", *ctx, [&](const saas::trace_context &) {
      return saas::in_tenant(retry_, *pool_, req->tenant_id(), [&](pqxx::work &w) {
        auto r = w.exec("SELECT plan, version, extract(epoch FROM started_at)::bigint FROM "
                        "subscriptions.subscriptions");
        if (r.empty()) {
          return Status(StatusCode::NOT_FOUND, "no subscription");
        }
        out->set_tenant_id(req->tenant_id());
        out->set_plan(r[0][0].as<std::string>());
        out->set_version(r[0][1].as<std::int64_t>());
        out->set_started_unix(r[0][2].as<std::int64_t>());
        return Status::OK;
      });
    });
  }

private:
  lakh::pg::pool *pool_;
  lakh::pg::outbox *box_;
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
    saas::event_relay relay(pool, js, "subscriptions");
    {
      lakh::pg::pool admin(url, 1);
      saas::setup_schema(admin, "subscriptions", [](pqxx::work &w) {
        w.exec("CREATE TABLE IF NOT EXISTS subscriptions.plans (name text PRIMARY KEY)");
        w.exec("INSERT INTO subscriptions.plans VALUES ('starter'), ('pro') ON CONFLICT DO "
               "NOTHING");
        w.exec("GRANT SELECT ON subscriptions.plans TO saas_app");
        w.exec("CREATE TABLE IF NOT EXISTS subscriptions.subscriptions (tenant_id bigint "
               "PRIMARY KEY, plan text NOT NULL REFERENCES subscriptions.plans, version bigint "
               "NOT NULL DEFAULT 1, started_at timestamptz NOT NULL DEFAULT now(), changed_at "
               "timestamptz NOT NULL DEFAULT now())");
        saas::tenant_policy(w, "subscriptions.subscriptions");
      });
      relay.create_schema(admin);
    }
    lakh::registry metrics;
    saas::metrics_endpoint http(metrics, "127.0.0.1", cfg.port("SUBSCRIPTION_METRICS_PORT", 9102));
    subscription_service svc(pool, relay.box(), metrics);
    relay.start();
    return saas::serve(service, sigs, cfg, cfg.get("SUBSCRIPTION_GRPC_ADDR", "127.0.0.1:15052"),
                       {&svc}, [&] { relay.stop(); });
  });
}
