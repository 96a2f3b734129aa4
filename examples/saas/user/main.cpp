// saas_user: the User service (examples/saas/README.md). Owns schema `users`: tenants (global)
// and users (row-level security by app.tenant_id). gRPC: CreateTenant, CreateUser, GetUser.
// Config: DATABASE_URL (required), USER_GRPC_ADDR (default 127.0.0.1:50051), from the
// environment or .env. SIGTERM/SIGINT: stop accepting, finish in-flight calls (5 s), exit 0.
#include "../common/config.hpp"
#include "../common/db.hpp"
#include "../common/signals.hpp"
#include "saas.grpc.pb.h"

#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <thread>

namespace {

using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;

void create_schema(lakh::pg::pool &admin) {
  saas::ensure_app_role(admin);
  lakh::pg::with_connection(admin, [](pqxx::connection &c) {
    pqxx::work w(c);
    w.exec("SELECT pg_advisory_xact_lock(hashtext('saas users schema'))");
    w.exec("CREATE SCHEMA IF NOT EXISTS users");
    w.exec("GRANT USAGE ON SCHEMA users TO saas_app");
    w.exec("CREATE TABLE IF NOT EXISTS users.tenants (id bigserial PRIMARY KEY, name text NOT "
           "NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200), created_at timestamptz NOT "
           "NULL DEFAULT now())");
    w.exec("GRANT SELECT, INSERT ON users.tenants TO saas_app");
    w.exec("GRANT USAGE ON SEQUENCE users.tenants_id_seq TO saas_app");
    w.exec("CREATE TABLE IF NOT EXISTS users.users (tenant_id bigint NOT NULL REFERENCES "
           "users.tenants, id bigserial PRIMARY KEY, email text NOT NULL CHECK (length(email) "
           "BETWEEN 3 AND 320), UNIQUE (tenant_id, email))");
    w.exec("GRANT USAGE ON SEQUENCE users.users_id_seq TO saas_app");
    saas::tenant_policy(w, "users.users");
    w.commit();
  });
}

class user_service final : public v1::UserService::Service {
public:
  explicit user_service(lakh::pg::pool &p) : pool_(&p) {}

  Status CreateTenant(ServerContext *, const v1::CreateTenantRequest *req,
                      v1::CreateTenantResponse *out) override {
    if (req->name().empty() || req->name().size() > 200) {
      return {StatusCode::INVALID_ARGUMENT, "name must be 1..200 bytes"};
    }
    try {
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
    } catch (const std::exception &e) {
      return {StatusCode::UNAVAILABLE, e.what()};
    }
  }

  Status CreateUser(ServerContext *, const v1::CreateUserRequest *req, v1::User *out) override {
    if (req->email().size() < 3 || req->email().size() > 320 ||
        req->email().find('@') == std::string::npos) {
      return {StatusCode::INVALID_ARGUMENT, "email must be 3..320 bytes and contain '@'"};
    }
    try {
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
    } catch (const std::exception &e) {
      return {StatusCode::UNAVAILABLE, e.what()};
    }
  }

  Status GetUser(ServerContext *, const v1::GetUserRequest *req, v1::User *out) override {
    try {
      return saas::in_tenant(retry_, *pool_, req->tenant_id(), [&](pqxx::work &w) {
        // Row-level security hides another tenant's user: it is NOT_FOUND, not forbidden.
        auto r = w.exec_params("SELECT email FROM users.users WHERE id = $1", req->user_id());
        if (r.empty()) {
          return Status(StatusCode::NOT_FOUND, "no user " + std::to_string(req->user_id()));
        }
        out->set_tenant_id(req->tenant_id());
        out->set_id(req->user_id());
        out->set_email(r[0][0].as<std::string>());
        return Status::OK;
      });
    } catch (const std::exception &e) {
      return {StatusCode::UNAVAILABLE, e.what()};
    }
  }

private:
  lakh::pg::pool *pool_;
  lakh::pg::retrier retry_;
};

} // namespace

int main() {
  const sigset_t sigs = saas::block_stop_signals();
  try {
    const auto cfg = saas::config::load();
    const auto url = cfg.require("DATABASE_URL");
    const auto addr = cfg.get("USER_GRPC_ADDR", "127.0.0.1:50051");
    {
      lakh::pg::pool admin(url, 1);
      create_schema(admin);
    }
    lakh::pg::pool pool(saas::service_pool(url, 8));
    user_service svc(pool);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
    b.RegisterService(&svc);
    auto server = b.BuildAndStart();
    if (!server || port == 0) {
      std::fprintf(stderr, "saas_user: cannot listen on %s\n", addr.c_str());
      return 1;
    }
    std::printf("saas_user: listening on %s\n", addr.c_str());
    std::fflush(stdout);
    const int sig = saas::wait_stop_signal(sigs);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    std::printf("saas_user: stopped (signal %d)\n", sig);
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "saas_user: %s\n", e.what());
    return 1;
  }
}
