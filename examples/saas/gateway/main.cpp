// saas_gateway: the public HTTP/JSON API (examples/saas/README.md). First slice: signup,
// users, metrics. API keys are stored as SHA-256 only; POSTs that create need an
// Idempotency-Key (lakh::idempotency_guard over lakh::pg::idempotency_store: a replay returns
// the stored response, the same key with another body is 422); calls the user service over
// gRPC with a deadline and the caller's traceparent in metadata.
// Config: DATABASE_URL (required), GATEWAY_ADDR (127.0.0.1), GATEWAY_PORT (8080),
// USER_GRPC_ADDR (127.0.0.1:50051), GRPC_DEADLINE_MS (2000).
#include "../common/config.hpp"
#include "../common/db.hpp"
#include "../common/signals.hpp"
#include "../common/trace.hpp"
#include "saas.grpc.pb.h"

#include <lakh/idempotency.hpp>
#include <lakh/metrics.hpp>
#include <lakh/pg/idempotency_store.hpp>

#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include <csignal>
#include <cstdio>
#include <random>
#include <set>
#include <thread>
#include <variant>

namespace {

namespace v1 = lakh::saas::v1;
using json = nlohmann::json;

std::string sha256_hex(const std::string &s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) {
    out += hex[md[i] >> 4U];
    out += hex[md[i] & 15U];
  }
  return out;
}

std::string new_api_key() {
  std::random_device rd;
  static constexpr char hex[] = "0123456789abcdef";
  std::string k = "lakh_";
  for (int i = 0; i < 40; ++i) {
    k += hex[rd() & 15U];
  }
  return k;
}

void error(httplib::Response &res, int status, const std::string &message) {
  res.status = status;
  res.set_content(json{{"error", message}}.dump(), "application/json");
}

/// The JSON object body with exactly the allowed fields, each a non-empty string; or an error
/// message (400) naming what was wrong.
std::variant<json, std::string> parse_body(const std::string &body,
                                           const std::set<std::string> &fields) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return std::string("the body must be a JSON object");
  }
  for (const auto &[k, v] : j.items()) {
    if (fields.count(k) == 0) {
      return "unknown field \"" + k + "\"";
    }
    if (!v.is_string()) {
      return "field \"" + k + "\" must be a string";
    }
  }
  for (const auto &f : fields) {
    if (!j.contains(f)) {
      return "missing field \"" + f + "\"";
    }
  }
  return j;
}

grpc::Status to_http(const grpc::Status &s, httplib::Response &res) {
  switch (s.error_code()) {
  case grpc::StatusCode::OK:
    break;
  case grpc::StatusCode::INVALID_ARGUMENT:
    error(res, 400, s.error_message());
    break;
  case grpc::StatusCode::NOT_FOUND:
    error(res, 404, s.error_message());
    break;
  case grpc::StatusCode::ALREADY_EXISTS:
    error(res, 409, s.error_message());
    break;
  case grpc::StatusCode::DEADLINE_EXCEEDED:
    error(res, 504, s.error_message());
    break;
  default:
    error(res, 503, s.error_message());
  }
  return s;
}

} // namespace

int main() {
  const sigset_t sigs = saas::block_stop_signals();
  try {
    const auto cfg = saas::config::load();
    const auto url = cfg.require("DATABASE_URL");
    const auto host = cfg.get("GATEWAY_ADDR", "127.0.0.1");
    const int port = cfg.port("GATEWAY_PORT", 8080);
    const auto deadline = cfg.millis("GRPC_DEADLINE_MS", std::chrono::milliseconds(2000));
    auto channel = grpc::CreateChannel(cfg.get("USER_GRPC_ADDR", "127.0.0.1:50051"),
                                       grpc::InsecureChannelCredentials());
    auto users = v1::UserService::NewStub(channel);

    lakh::pg::pool pool(url, 8);
    lakh::pg::with_connection(pool, [](pqxx::connection &c) {
      pqxx::work w(c);
      w.exec("SELECT pg_advisory_xact_lock(hashtext('saas gateway schema'))");
      w.exec("CREATE SCHEMA IF NOT EXISTS gateway");
      w.exec("CREATE TABLE IF NOT EXISTS gateway.api_keys (key_sha256 text PRIMARY KEY, "
             "tenant_id bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())");
      w.commit();
    });
    lakh::pg::idempotency_store store(pool, {"gateway.idempotency_keys"});
    store.create_schema();
    lakh::idempotency_guard guard(store);

    lakh::registry metrics;
    auto &requests = metrics.make_counter("saas_gateway_requests_total", "HTTP requests");
    auto &latency = metrics.make_histogram("saas_gateway_request_seconds", "request latency");

    // The tenant of a valid Authorization: Bearer key, or 0.
    auto authenticate = [&](const httplib::Request &req) -> std::int64_t {
      const auto h = req.get_header_value("Authorization");
      if (h.rfind("Bearer ", 0) != 0) {
        return 0;
      }
      return lakh::pg::with_connection(pool, [&](pqxx::connection &c) -> std::int64_t {
        pqxx::nontransaction n(c);
        auto r = n.exec_params("SELECT tenant_id FROM gateway.api_keys WHERE key_sha256 = $1",
                               sha256_hex(h.substr(7)));
        return r.empty() ? 0 : r[0][0].as<std::int64_t>();
      });
    };
    auto trace_of = [](const httplib::Request &req) {
      auto t = saas::trace_context::parse(req.get_header_value("traceparent"));
      return t ? t->child() : saas::trace_context::root();
    };
    auto call_context = [&](grpc::ClientContext &ctx, const saas::trace_context &t) {
      ctx.set_deadline(std::chrono::system_clock::now() + deadline);
      ctx.AddMetadata("traceparent", t.header());
    };
    // Runs `op` once per (tenant, Idempotency-Key); replays and mismatches answered here.
    auto idempotent = [&](const httplib::Request &req, httplib::Response &res,
                          const std::string &tenant, auto op) {
      const auto key = req.get_header_value("Idempotency-Key");
      if (key.empty()) {
        return error(res, 400, "Idempotency-Key header required");
      }
      const auto fp = lakh::fingerprint(req.method, req.path, req.body);
      auto r = guard.run(tenant, key, fp, [&](pqxx::work &w) { return op(w); });
      switch (r.outcome) {
      case lakh::idempotency_outcome::executed:
      case lakh::idempotency_outcome::replayed:
        res.status = r.response.status;
        res.set_content(r.response.body, "application/json");
        res.set_header("Idempotent-Replayed",
                       r.outcome == lakh::idempotency_outcome::replayed ? "true" : "false");
        return;
      case lakh::idempotency_outcome::mismatch:
        return error(res, 422, "Idempotency-Key reused with a different request");
      default:
        return error(res, 409, "a request with this Idempotency-Key is in progress");
      }
    };

    httplib::Server http;
    http.set_tcp_nodelay(true);
    http.set_keep_alive_max_count(100000);
    http.set_payload_max_length(1 << 20); // larger bodies: 413
    http.set_pre_routing_handler([&](const httplib::Request &, httplib::Response &) {
      requests.add();
      return httplib::Server::HandlerResponse::Unhandled;
    });

    http.Post("/v1/signup", [&](const httplib::Request &req, httplib::Response &res) {
      const auto t0 = std::chrono::steady_clock::now();
      auto body = parse_body(req.body, {"name"});
      if (auto *msg = std::get_if<std::string>(&body)) {
        return error(res, 400, *msg);
      }
      const auto name = std::get<json>(body)["name"].get<std::string>();
      idempotent(req, res, "signup", [&](pqxx::work &w) -> lakh::stored_response {
        grpc::ClientContext ctx;
        call_context(ctx, trace_of(req));
        v1::CreateTenantRequest in;
        in.set_name(name);
        v1::CreateTenantResponse out;
        httplib::Response tmp;
        if (!to_http(users->CreateTenant(&ctx, in, &out), tmp).ok()) {
          return {tmp.status, tmp.body};
        }
        const auto key = new_api_key();
        w.exec_params("INSERT INTO gateway.api_keys (key_sha256, tenant_id) VALUES ($1, $2)",
                      sha256_hex(key), out.tenant().id());
        return {201, json{{"tenant_id", out.tenant().id()}, {"api_key", key}}.dump()};
      });
      latency.record(std::chrono::steady_clock::now() - t0);
    });

    http.Post("/v1/users", [&](const httplib::Request &req, httplib::Response &res) {
      const auto tenant = authenticate(req);
      if (tenant == 0) {
        return error(res, 401, "missing or wrong API key");
      }
      auto body = parse_body(req.body, {"email"});
      if (auto *msg = std::get_if<std::string>(&body)) {
        return error(res, 400, *msg);
      }
      const auto email = std::get<json>(body)["email"].get<std::string>();
      idempotent(req, res, std::to_string(tenant), [&](pqxx::work &) -> lakh::stored_response {
        grpc::ClientContext ctx;
        call_context(ctx, trace_of(req));
        v1::CreateUserRequest in;
        in.set_tenant_id(tenant);
        in.set_email(email);
        v1::User out;
        httplib::Response tmp;
        if (!to_http(users->CreateUser(&ctx, in, &out), tmp).ok()) {
          return {tmp.status, tmp.body};
        }
        return {201, json{{"id", out.id()}, {"email", out.email()}}.dump()};
      });
    });

    http.Get(R"(/v1/users/(\d{1,18}))", [&](const httplib::Request &req, httplib::Response &res) {
      const auto tenant = authenticate(req);
      if (tenant == 0) {
        return error(res, 401, "missing or wrong API key");
      }
      grpc::ClientContext ctx;
      call_context(ctx, trace_of(req));
      v1::GetUserRequest in;
      in.set_tenant_id(tenant);
      in.set_user_id(std::stoll(req.matches[1]));
      v1::User out;
      if (to_http(users->GetUser(&ctx, in, &out), res).ok()) {
        res.set_content(json{{"id", out.id()}, {"email", out.email()}}.dump(), "application/json");
      }
    });

    http.Get("/metrics", [&](const httplib::Request &, httplib::Response &res) {
      res.set_content(metrics.prometheus_text(), "text/plain; version=0.0.4");
    });

    std::thread stopper([&] {
      (void)saas::wait_stop_signal(sigs);
      http.stop(); // finishes in-flight requests
    });
    std::printf("saas_gateway: listening on %s:%d\n", host.c_str(), port);
    std::fflush(stdout);
    const bool ok = http.listen(host, port);
    stopper.join();
    return ok ? 0 : 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "saas_gateway: %s\n", e.what());
    return 1;
  }
}
