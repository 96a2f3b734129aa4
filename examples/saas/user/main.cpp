// saas_user: the User service (examples/saas/README.md). Owns schema `users`: tenants (global)
// and users (row-level security by app.tenant_id). gRPC: CreateTenant, CreateUser, GetUser.
// Config: DATABASE_URL (required), USER_GRPC_ADDR (127.0.0.1:15051), USER_METRICS_PORT
// (9101), from the environment or .env. SIGTERM/SIGINT: stop accepting, finish in-flight
// calls (5 s), exit 0.
#include "../common/runtime.hpp"
#include "saas.grpc.pb.h"

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;
constexpr const char *service = "user";

void create_schema(lakh::pg::pool &admin) {
  saas::setup_schema(admin, "users", [](pqxx::work &w) {
    w.exec("CREATE TABLE IF NOT EXISTS users.tenants (id bigserial PRIMARY KEY, name text NOT "
           "NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200), created_at timestamptz NOT "
           "NULL DEFAULT now())");
    w.exec("GRANT SELECT, INSERT ON users.tenants TO saas_app");
    w.exec("CREATE TABLE IF NOT EXISTS users.users (tenant_id bigint NOT NULL REFERENCES "
           "users.tenants, id bigserial PRIMARY KEY, email text NOT NULL CHECK (length(email) "
           "BETWEEN 3 AND 320), UNIQUE (tenant_id, email))");
    saas::tenant_policy(w, "users.users");
  });
}

class user_service final : public v1::UserService::Service {
public:
  user_service(lakh::pg::pool &p, lakh::registry &r)
      : pool_(&p), stats_(r, service, {"CreateTenant", "CreateUser", "GetUser"}) {}

  Status CreateTenant(ServerContext *ctx, const v1::CreateTenantRequest *req,
                      v1::CreateTenantResponse *out) override {
    if (req->name().empty() || req->name().size() > 200) {
      return {StatusCode::INVALID_ARGUMENT, "name must be 1..200 bytes"};
    }
    return stats_.run("CreateTenant", *ctx, [&](const saas::trace_context &) {
      return retry_.run(*pool_, [&](pqxx::work &w) {
        auto r = w.exec_params("INSERT INTO users.tenants (name) VALUES ($1) ON CONFLICT (name) "
                               "DO NOTHING RETURNING id",
                               req->name());
        if (r.empty()) {
          return Status(StatusCode::ALREADY_EXISTS,
                        "a tenant named \"" + req->name() + "\" exists");
        }
        out->mutable_tenant()->set_id(r[0][0].as<std::int64_t>());
        out->mutable_tenant()->set_name(req->name());
        return Status::OK;
      });
    });
  }

  Status CreateUser(ServerContext *ctx, const v1::CreateUserRequest *req, v1::User *out) override {
    if (req->email().size() < 3 || req->email().size() > 320 ||
        req->email().find('@') == std::string::npos) {
      return {StatusCode::INVALID_ARGUMENT, "email must be 3..320 bytes and contain '@'"};
    }
    return stats_.run("CreateUser", *ctx, [&](const saas::trace_context &) {
      return saas::in_tenant(retry_, *pool_, req->tenant_id(), [&](pqxx::work &w) {
        if (w.exec_params("SELECT 1 FROM users.tenants WHERE id = $1", req->tenant_id()).empty()) {
          return Status(StatusCode::NOT_FOUND, "no tenant " + std::to_string(req->tenant_id()));
        }
        auto r = w.exec_params("INSERT INTO users.users (tenant_id, email) VALUES ($1, $2) ON "
                               "CONFLICT (tenant_id, email) DO NOTHING RETURNING id",
                               req->tenant_id(), req->email());
        if (r.empty()) {
          return Status(StatusCode::ALREADY_EXISTS, "user " + req->email() + " exists");
        }
        out->set_tenant_id(req->tenant_id());
        out->set_id(r[0][0].as<std::int64_t>());
        out->set_email(req->email());
        return Status::OK;
      });
    });
  }

  Status GetUser(ServerContext *ctx, const v1::GetUserRequest *req, v1::User *out) override {
    return stats_.run("GetUser", *ctx, [&](const saas::trace_context &) {
      // The read path: one round trip. Row-level security hides another tenant's user: it is
      // NOT_FOUND, not forbidden.
      auto r = saas::tenant_read(*pool_, req->tenant_id(),
                                 "SELECT email FROM users.users WHERE id = " +
                                     std::to_string(req->user_id()));
      if (r.empty()) {
        return Status(StatusCode::NOT_FOUND, "no user " + std::to_string(req->user_id()));
      }
      out->set_tenant_id(req->tenant_id());
      out->set_id(req->user_id());
      out->set_email(r[0][0].as<std::string>());
      return Status::OK;
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
    {
      lakh::pg::pool admin(url, 1);
      create_schema(admin);
    }
    lakh::pg::pool pool(saas::service_pool(url, 8));
    lakh::registry metrics;
    saas::metrics_endpoint http(metrics, "127.0.0.1", cfg.port("USER_METRICS_PORT", 9101));
    user_service svc(pool, metrics);
    return saas::serve(service, sigs, cfg, cfg.get("USER_GRPC_ADDR", "127.0.0.1:15051"), {&svc});
  });
}
