// saas_user: the User service (examples/saas/README.md). Owns schema `users` (schema.sql):
// tenants (global) and users (row-level security by app.tenant_id). gRPC: CreateTenant and
// CreateUser, each idempotent on the caller's key in the transaction that creates the row
// (a repeat answers the original tenant or user), batched into three round trips with the
// commit, on DB_WORKERS threads (default 8); and GetUser, the read path in one round trip,
// bounded by the caller's deadline. All on gRPC's callback API (docs/architecture.md#load). Its
// statements are prepared on each connection (spec.prepared). Settings: service_main.hpp and
// docs/architecture.md#configuration.
#include "../common/service_main.hpp"
#include "saas.grpc.pb.h"
#include "user_schema.hpp"

namespace {

using grpc::Status;
using grpc::StatusCode;
namespace v1 = lakh::saas::v1;

// Every method on gRPC's callback API: the read runs on gRPC's thread (bounded by the deadline),
// the writes on the service's workers() (their transactions may retry and wait).
class user_service final : public v1::UserService::CallbackService {
public:
  explicit user_service(saas::service &s)
      : svc_(&s), rpc_(s.metrics(), s.name(), s.auth(), {"CreateTenant", "CreateUser", "GetUser"}),
        workers_(&s.workers()) {}

  grpc::ServerUnaryReactor *CreateTenant(grpc::CallbackServerContext *ctx,
                                         const v1::CreateTenantRequest *req,
                                         v1::CreateTenantResponse *out) override {
    return rpc_.run_on(*workers_, "CreateTenant", *ctx,
                       [this, ctx, req, out](const saas::trace_context &) {
                         if (req->name().empty() || req->name().size() > 200) {
                           return Status(StatusCode::INVALID_ARGUMENT, "name must be 1..200 bytes");
                         }
                         // Signups have no tenant yet: their keys share the scope "signup".
                         return saas::idempotent(
                             *ctx, svc_->keys(), "signup", out,
                             [&](auto body) { return retry_.run_batched(svc_->db(), body); },
                             [&](lakh::pg::batched_transaction &tx) {
                               auto r = tx.exec("INSERT INTO users.tenants (name) VALUES (" +
                                                tx.quote(req->name()) +
                                                ") ON CONFLICT (name) DO NOTHING RETURNING id");
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

  grpc::ServerUnaryReactor *CreateUser(grpc::CallbackServerContext *ctx,
                                       const v1::CreateUserRequest *req, v1::User *out) override {
    return rpc_.run_on(
        *workers_, "CreateUser", *ctx, [this, ctx, req, out](const saas::trace_context &) {
          if (req->email().size() < 3 || req->email().size() > 320 ||
              req->email().find('@') == std::string::npos) {
            return Status(StatusCode::INVALID_ARGUMENT,
                          "email must be 3..320 bytes and contain '@'");
          }
          const auto tenant = req->tenant_id();
          return saas::idempotent(
              *ctx, svc_->keys(), std::to_string(tenant), out,
              [&](auto body) { return saas::in_tenant_batched(retry_, svc_->db(), tenant, body); },
              [&](lakh::pg::batched_transaction &tx) {
                auto r = tx.exec("EXECUTE create_user(" + tx.quote(tenant) + ", " +
                                 tx.quote(req->email()) + ")");
                if (r.empty()) {
                  return Status(StatusCode::ALREADY_EXISTS, "user " + req->email() + " exists");
                }
                out->set_tenant_id(tenant);
                out->set_id(r[0][0].as<std::int64_t>());
                out->set_email(req->email());
                return Status::OK;
              });
        });
  }

  grpc::ServerUnaryReactor *GetUser(grpc::CallbackServerContext *ctx, const v1::GetUserRequest *req,
                                    v1::User *out) override {
    return rpc_.run_inline("GetUser", *ctx, [&](const saas::trace_context &) {
      // Row-level security hides another tenant's user: it is NOT_FOUND, not forbidden.
      auto r = saas::tenant_read(svc_->db(), req->tenant_id(),
                                 "EXECUTE get_user(" + std::to_string(req->user_id()) + ")",
                                 ctx->deadline());
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
  saas::service *svc_;
  saas::rpc_server rpc_;
  lakh::pg::retrier retry_;
  lakh::worker_pool *workers_;
};

} // namespace

int main(int argc, char **argv) {
  saas::service_spec spec{"user", "users", saas::schema_sql, 15051, 9101};
  spec.prepared = {{"get_user", "SELECT email FROM users.users WHERE id = $1"},
                   {"create_user", "INSERT INTO users.users (tenant_id, email) VALUES ($1, $2) "
                                   "ON CONFLICT (tenant_id, email) DO NOTHING RETURNING id"}};
  return saas::service_main(
      spec, [](saas::service &s) { return std::make_unique<user_service>(s); }, argc, argv);
}
