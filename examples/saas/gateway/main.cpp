// saas_gateway: the public HTTP/JSON API (examples/saas/README.md), the only service a client
// talks to. For every request: API key (Authorization: Bearer, stored as SHA-256 only) ->
// per-tenant rate limit (token bucket) and concurrency limit (lakh::semaphore), 429 past
// either -> validation (400 naming the field; 413 over 1 MiB) -> gRPC to the service that owns
// the data, with a deadline and the caller's W3C traceparent in metadata (answered in the
// response's traceparent header and written in the logs). POSTs that create or charge need an
// Idempotency-Key: lakh::idempotency_guard over lakh::pg::idempotency_store runs them once
// per (tenant, key); a replay returns the stored response, the key with another body is 422.
// Answers that depend on the moment (409 conflicts, 500, 503, 504) are not stored: the key is
// released and a retry runs again.
//
// API keys: a signup mints "lakh_" + HMAC-SHA256(GATEWAY_KEY_SECRET, random salt). The
// database holds only the key's SHA-256 (gateway.api_keys) and the salt (the signup's stored
// idempotent response), so a replayed signup returns the same key while neither table gives
// one away without the secret. Lookups are cached for API_KEY_CACHE_MS: a key deleted from
// gateway.api_keys stops working within that time.
//
// Config (environment or .env): DATABASE_URL and GATEWAY_KEY_SECRET (at least 32 characters)
// required; API_KEY_CACHE_MS (60000); GATEWAY_ADDR (127.0.0.1),
// GATEWAY_PORT (8080), GATEWAY_THREADS (16), GRPC_DEADLINE_MS (2000), TENANT_RATE (requests
// per second, 1000), TENANT_BURST (2000), TENANT_CONCURRENCY (in-flight requests, 64), and
// <SERVICE>_GRPC_ADDR for USER (127.0.0.1:15051), SUBSCRIPTION (:15052), BILLING (:15053),
// INVOICING (:15054), PAYMENT (:15055), NOTIFICATION (:15056).
#include "../common/runtime.hpp"
#include "saas.grpc.pb.h"

#include <lakh/idempotency.hpp>
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/semaphore.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <variant>

namespace {

namespace v1 = lakh::saas::v1;
using json = nlohmann::json;
using saas::trace_context;
constexpr const char *service = "gateway";

std::string to_hex(const unsigned char *p, std::size_t n) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += hex[p[i] >> 4U];
    out += hex[p[i] & 15U];
  }
  return out;
}

std::string sha256_hex(const std::string &s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  return to_hex(md, n);
}

/// 16 random bytes from OpenSSL's CSPRNG, in hex. @throws std::runtime_error if it fails.
std::string new_salt() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  return to_hex(b, sizeof b);
}

/// The API key of `salt` under `secret`: "lakh_" and 40 hex digits of HMAC-SHA256.
std::string api_key_for(const std::string &secret, const std::string &salt) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char *>(salt.data()), salt.size(), md, &n);
  return "lakh_" + to_hex(md, 20);
}

/// GATEWAY_KEY_SECRET. @throws saas::config_error when missing or shorter than 32 characters.
std::string key_secret(const saas::config &cfg) {
  auto s = cfg.require("GATEWAY_KEY_SECRET");
  if (s.size() < 32) {
    throw saas::config_error("GATEWAY_KEY_SECRET must be at least 32 characters (e.g. the "
                             "output of `openssl rand -hex 32`), got " +
                             std::to_string(s.size()));
  }
  return s;
}

/// An HTTP answer: status and JSON body.
struct reply {
  int status = 200;
  json body;
  const char *replayed = nullptr; ///< Idempotent-Replayed header: "true", "false" or none
};

reply fail(int status, std::string message) {
  return {status, {{"error", std::move(message)}}};
}

/// The HTTP status of a gRPC status.
int http_status(const grpc::Status &s) {
  switch (s.error_code()) {
  case grpc::StatusCode::OK:
    return 200;
  case grpc::StatusCode::INVALID_ARGUMENT:
    return 400;
  case grpc::StatusCode::NOT_FOUND:
    return 404;
  case grpc::StatusCode::ALREADY_EXISTS:
  case grpc::StatusCode::FAILED_PRECONDITION:
  case grpc::StatusCode::ABORTED:
    return 409;
  case grpc::StatusCode::DEADLINE_EXCEEDED:
    return 504;
  case grpc::StatusCode::INTERNAL:
    return 500;
  default:
    return 503;
  }
}

/// Thrown inside an idempotent operation for a transient failure: the key is released (a retry
/// runs again) and the reply is sent as is.
struct transient : std::runtime_error {
  reply r;
  explicit transient(reply x) : std::runtime_error("transient"), r(std::move(x)) {}
};

/// What a JSON body field must be.
enum class kind : std::uint8_t { string, integer, array };

/// The body as a JSON object with exactly `fields` of their kinds, or the 400 message naming
/// what was wrong.
std::variant<json, std::string>
parse_body(const std::string &body, std::initializer_list<std::pair<const char *, kind>> fields) {
  auto j = json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return std::string("the body must be a JSON object");
  }
  for (const auto &item : j.items()) {
    const std::string &k = item.key(); // not a structured binding: Clang 14 cannot capture one
    const json &v = item.value();
    const auto *f =
        std::find_if(fields.begin(), fields.end(), [&](const auto &p) { return k == p.first; });
    if (f == fields.end()) {
      return "unknown field \"" + k + "\"";
    }
    const bool ok = f->second == kind::string    ? v.is_string()
                    : f->second == kind::integer ? v.is_number_integer()
                                                 : v.is_array();
    if (!ok) {
      static constexpr const char *names[] = {"a string", "an integer", "an array"};
      return "field \"" + k + "\" must be " + names[static_cast<int>(f->second)];
    }
  }
  for (const auto &[name, _] : fields) {
    if (!j.contains(name)) {
      return "missing field \"" + std::string(name) + "\"";
    }
  }
  return j;
}

/// Usage rows from JSON ({"id","user_id","metric","quantity","ts"}, all integers), or the 400
/// message naming the row and field. Ranges are the billing service's to check.
std::variant<v1::IngestUsageRequest, std::string> usage_rows(const json &rows) {
  v1::IngestUsageRequest in;
  if (rows.empty() || rows.size() > 10000) {
    return "rows must hold 1..10000 rows, got " + std::to_string(rows.size());
  }
  static constexpr const char *fields[] = {"id", "user_id", "metric", "quantity", "ts"};
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const auto &r = rows[i];
    const auto where = "rows[" + std::to_string(i) + "]";
    if (!r.is_object() || r.size() != 5) {
      return where + " must be an object with exactly id, user_id, metric, quantity, ts";
    }
    for (const char *f : fields) {
      if (!r.contains(f) || !r[f].is_number_integer()) {
        return where + "." + f + " must be an integer";
      }
    }
    auto *row = in.add_rows();
    row->set_id(r["id"].get<std::int64_t>());
    row->set_user_id(r["user_id"].get<std::int64_t>());
    const auto m = r["metric"].get<std::int64_t>();
    if (m < 0 || m > 3) {
      return where + ".metric must be 0..3, got " + std::to_string(m);
    }
    row->set_metric(static_cast<std::int32_t>(m));
    row->set_quantity(r["quantity"].get<std::int64_t>());
    row->set_ts_unix(r["ts"].get<std::int64_t>());
  }
  return in;
}

json to_json(const v1::Invoice &i) {
  return {{"id", i.id()},
          {"period", i.period()},
          {"total_cents", i.total_cents()},
          {"status", i.status()},
          {"issued_unix", i.issued_unix()}};
}
json to_json(const v1::Payment &p) {
  return {{"id", p.id()},
          {"invoice_id", p.invoice_id()},
          {"amount_cents", p.amount_cents()},
          {"provider_ref", p.provider_ref()}};
}
json to_json(const v1::Subscription &s) {
  return {{"plan", s.plan()}, {"version", s.version()}, {"started_unix", s.started_unix()}};
}

/// Per-tenant limits: a token bucket for the rate, a semaphore for requests in flight.
class tenant_limits {
public:
  tenant_limits(double rate, double burst, std::ptrdiff_t concurrency)
      : rate_(rate), burst_(burst), tokens_(burst), in_flight_(concurrency) {}

  /// A permit for one request, or an empty permit and the reason (rate or concurrency).
  std::pair<lakh::permit, const char *> admit() {
    {
      std::lock_guard lk(mu_);
      const auto now = std::chrono::steady_clock::now();
      tokens_ =
          std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - last_).count());
      last_ = now;
      if (tokens_ < 1) {
        return {lakh::permit(), "rate limit exceeded"};
      }
      tokens_ -= 1;
    }
    auto p = in_flight_.try_acquire_permit();
    return {std::move(p), p.owns() ? nullptr : "too many requests in flight"};
  }

private:
  std::mutex mu_;
  double rate_, burst_, tokens_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  lakh::semaphore in_flight_;
};

class gateway {
public:
  explicit gateway(const saas::config &cfg)
      : key_secret_(key_secret(cfg)),
        key_cache_ttl_(cfg.millis("API_KEY_CACHE_MS", std::chrono::milliseconds(60000))),
        deadline_(cfg.millis("GRPC_DEADLINE_MS", std::chrono::milliseconds(2000))),
        rate_(static_cast<double>(cfg.integer("TENANT_RATE", 1000, 1, 10'000'000))),
        burst_(static_cast<double>(cfg.integer("TENANT_BURST", 2000, 1, 10'000'000))),
        concurrency_(cfg.integer("TENANT_CONCURRENCY", 64, 1, 100'000)),
        pool_(cfg.require("DATABASE_URL"), 8), store_(pool_, {"gateway.idempotency_keys"}),
        guard_(store_), users_(v1::UserService::NewStub(channel(cfg, "USER", 15051))),
        subscriptions_(v1::SubscriptionService::NewStub(channel(cfg, "SUBSCRIPTION", 15052))),
        billing_(v1::BillingService::NewStub(channel(cfg, "BILLING", 15053))),
        invoicing_(v1::InvoicingService::NewStub(channel(cfg, "INVOICING", 15054))),
        payments_(v1::PaymentService::NewStub(channel(cfg, "PAYMENT", 15055))),
        notifications_(v1::NotificationService::NewStub(channel(cfg, "NOTIFICATION", 15056))),
        requests_(metrics_.make_counter("saas_gateway_requests_total", "HTTP requests")),
        limited_(metrics_.make_counter("saas_gateway_limited_total",
                                       "requests refused by a per-tenant limit (429)")),
        latency_(metrics_.make_histogram("saas_gateway_request_seconds", "request latency")) {
    lakh::pg::with_connection(pool_, [](pqxx::connection &c) {
      pqxx::work w(c);
      w.exec("SELECT pg_advisory_xact_lock(hashtext('saas gateway schema'))");
      w.exec("CREATE SCHEMA IF NOT EXISTS gateway");
      w.exec("CREATE TABLE IF NOT EXISTS gateway.api_keys (key_sha256 text PRIMARY KEY, "
             "tenant_id bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now())");
      w.commit();
    });
    store_.create_schema();
    routes();
  }

  /// Serves until stop() (from another thread); in-flight requests finish first.
  bool listen(const std::string &host, int port, int threads) {
    http_.new_task_queue = [threads] {
      return new httplib::ThreadPool(static_cast<size_t>(threads));
    };
    return http_.listen(host, port);
  }
  void stop() { http_.stop(); }

private:
  static std::shared_ptr<grpc::Channel> channel(const saas::config &cfg, const std::string &name,
                                                int port) {
    return grpc::CreateChannel(cfg.get(name + "_GRPC_ADDR", "127.0.0.1:" + std::to_string(port)),
                               grpc::InsecureChannelCredentials());
  }

  /// The tenant of the request's API key, or 0. A key found in gateway.api_keys is cached for
  /// API_KEY_CACHE_MS; a wrong key is looked up every time (it costs that client a query).
  std::int64_t authenticate(const httplib::Request &req) {
    const auto h = req.get_header_value("Authorization");
    if (h.rfind("Bearer ", 0) != 0 || h.size() > 7 + 200) {
      return 0;
    }
    const auto digest = sha256_hex(h.substr(7));
    const auto now = std::chrono::steady_clock::now();
    {
      std::shared_lock lk(keys_mu_);
      if (auto it = keys_.find(digest); it != keys_.end() && it->second.expires > now) {
        return it->second.tenant;
      }
    }
    const auto tenant = lakh::pg::with_connection(pool_, [&](pqxx::connection &c) -> std::int64_t {
      pqxx::nontransaction n(c);
      auto r =
          n.exec_params("SELECT tenant_id FROM gateway.api_keys WHERE key_sha256 = $1", digest);
      return r.empty() ? 0 : r[0][0].as<std::int64_t>();
    });
    std::unique_lock lk(keys_mu_);
    if (tenant != 0) {
      keys_[digest] = {tenant, now + key_cache_ttl_};
    } else {
      keys_.erase(digest); // deleted since it was cached
    }
    return tenant;
  }

  tenant_limits &limits_of(std::int64_t tenant) {
    {
      std::shared_lock lk(limits_mu_);
      if (auto it = limits_.find(tenant); it != limits_.end()) {
        return *it->second;
      }
    }
    std::unique_lock lk(limits_mu_);
    auto &l = limits_[tenant];
    if (!l) {
      l = std::make_unique<tenant_limits>(rate_, burst_, concurrency_);
    }
    return *l;
  }

  /// Calls a gRPC method with the deadline and the trace.
  template <class Call> grpc::Status call(const trace_context &t, Call &&f) {
    grpc::ClientContext ctx;
    saas::outgoing(ctx, t, deadline_);
    return f(ctx);
  }

  /// Runs op (-> reply) once per (tenant, Idempotency-Key); replays and mismatches answered
  /// here. op throws `transient` for a failure that must not be stored.
  template <class Op>
  reply idempotent(const httplib::Request &req, const std::string &scope, Op &&op) {
    const auto key = req.get_header_value("Idempotency-Key");
    if (key.empty()) {
      return fail(400, "Idempotency-Key header required");
    }
    if (key.size() > 255) {
      return fail(400, "Idempotency-Key must be at most 255 bytes");
    }
    try {
      auto r = guard_.run(scope, key, lakh::fingerprint(req.method, req.path, req.body),
                          [&](pqxx::work &w) -> lakh::stored_response {
                            reply x = op(w);
                            return {x.status, x.body.dump()};
                          });
      switch (r.outcome) {
      case lakh::idempotency_outcome::executed:
      case lakh::idempotency_outcome::replayed: {
        const bool replayed = r.outcome == lakh::idempotency_outcome::replayed;
        return reply{r.response.status, json::parse(r.response.body), replayed ? "true" : "false"};
      }
      case lakh::idempotency_outcome::mismatch:
        return fail(422, "Idempotency-Key reused with a different request");
      default:
        return fail(409, "a request with this Idempotency-Key is in progress; retry later");
      }
    } catch (const transient &t) {
      return t.r;
    }
  }

  /// A reply from a gRPC status: the status's HTTP code and message. When `in_idempotent`, the
  /// answers that depend on the moment are thrown (so the key is not spent on them and a retry
  /// runs again): 5xx, and 409 (in progress elsewhere, no subscription known to billing yet).
  static reply from(const grpc::Status &s, bool in_idempotent = false) {
    reply r = fail(http_status(s), s.error_message());
    if (in_idempotent && (r.status >= 500 || r.status == 409)) {
      throw transient(r);
    }
    return r;
  }

  using handler =
      std::function<reply(std::int64_t tenant, const trace_context &, const httplib::Request &)>;

  /// Registers a route: authentication (unless public), limits, trace, metrics, logs.
  void route(const char *method, const std::string &pattern, bool authenticated, handler h) {
    auto wrapped = [this, h = std::move(h), authenticated, method](const httplib::Request &req,
                                                                   httplib::Response &res) {
      const auto t0 = std::chrono::steady_clock::now();
      auto parsed = trace_context::parse(req.get_header_value("traceparent"));
      const auto trace = parsed ? parsed->child() : trace_context::root();
      reply r;
      std::int64_t tenant = 0;
      try {
        tenant = authenticated ? authenticate(req) : 0;
        if (authenticated && tenant == 0) {
          r = fail(401, "missing or wrong API key");
        } else if (authenticated) {
          auto [permit, why] = limits_of(tenant).admit();
          if (!permit.owns()) {
            limited_.add();
            res.set_header("Retry-After", "1");
            r = fail(429, why);
          } else {
            r = h(tenant, trace, req);
          }
        } else {
          r = h(tenant, trace, req);
        }
      } catch (const std::exception &e) {
        r = fail(503, e.what()); // the database is unreachable, for example
      }
      res.status = r.status;
      res.set_header("traceparent", trace.header());
      if (r.replayed != nullptr) {
        res.set_header("Idempotent-Replayed", r.replayed);
      }
      res.set_content(r.body.dump(), "application/json");
      latency_.record(std::chrono::steady_clock::now() - t0);
      // Reads are not logged one by one (the hot path); writes and failures are.
      if (std::string_view(method) == "POST" || r.status >= 400) {
        saas::log(
            service, r.status >= 500 ? "error" : "info", trace.trace_id, "request",
            {{"method", method}, {"path", req.path}, {"status", r.status}, {"tenant", tenant}});
      }
    };
    if (std::string_view(method) == "POST") {
      http_.Post(pattern, wrapped);
    } else {
      http_.Get(pattern, wrapped);
    }
  }

  void routes() {
    http_.set_tcp_nodelay(true);
    http_.set_keep_alive_max_count(1000000);
    http_.set_payload_max_length(1 << 20); // larger bodies: 413
    http_.set_pre_routing_handler([this](const httplib::Request &, httplib::Response &) {
      requests_.add();
      return httplib::Server::HandlerResponse::Unhandled;
    });
    http_.Get("/metrics", [this](const httplib::Request &, httplib::Response &res) {
      res.set_content(metrics_.prometheus_text(), "text/plain; version=0.0.4; charset=utf-8");
    });
    http_.Get("/healthz", [](const httplib::Request &, httplib::Response &res) {
      res.set_content("ok\n", "text/plain");
    });

    route("POST", "/v1/signup", false, [this](auto, const auto &t, const auto &req) {
      auto body = parse_body(req.body, {{"name", kind::string}});
      if (auto *msg = std::get_if<std::string>(&body)) {
        return fail(400, *msg);
      }
      const auto name = std::get<json>(body)["name"].template get<std::string>();
      auto r = idempotent(req, "signup", [&](pqxx::work &w) {
        v1::CreateTenantRequest in;
        in.set_name(name);
        v1::CreateTenantResponse out;
        auto s = call(t, [&](auto &ctx) { return users_->CreateTenant(&ctx, in, &out); });
        if (!s.ok()) {
          return from(s, true);
        }
        const auto salt = new_salt();
        w.exec_params("INSERT INTO gateway.api_keys (key_sha256, tenant_id) VALUES ($1, $2)",
                      sha256_hex(api_key_for(key_secret_, salt)), out.tenant().id());
        return reply{201, {{"tenant_id", out.tenant().id()}, {"key_salt", salt}}};
      });
      // Stored with the salt only; the key is derived again for every answer, replays too.
      if (auto it = r.body.find("key_salt"); r.status == 201 && it != r.body.end()) {
        r.body["api_key"] = api_key_for(key_secret_, it->template get<std::string>());
        r.body.erase("key_salt");
      }
      return r;
    });

    route("POST", "/v1/users", true, [this](auto tenant, const auto &t, const auto &req) {
      auto body = parse_body(req.body, {{"email", kind::string}});
      if (auto *msg = std::get_if<std::string>(&body)) {
        return fail(400, *msg);
      }
      v1::CreateUserRequest in;
      in.set_tenant_id(tenant);
      in.set_email(std::get<json>(body)["email"].template get<std::string>());
      return idempotent(req, std::to_string(tenant), [&](pqxx::work &) {
        v1::User out;
        auto s = call(t, [&](auto &ctx) { return users_->CreateUser(&ctx, in, &out); });
        return s.ok() ? reply{201, {{"id", out.id()}, {"email", out.email()}}} : from(s, true);
      });
    });

    route("GET", R"(/v1/users/(\d{1,18}))", true,
          [this](auto tenant, const auto &t, const auto &req) {
            v1::GetUserRequest in;
            in.set_tenant_id(tenant);
            in.set_user_id(std::stoll(req.matches[1]));
            v1::User out;
            auto s = call(t, [&](auto &ctx) { return users_->GetUser(&ctx, in, &out); });
            return s.ok() ? reply{200, {{"id", out.id()}, {"email", out.email()}}} : from(s);
          });

    route("POST", "/v1/subscriptions", true, [this](auto tenant, const auto &t, const auto &req) {
      auto body = parse_body(req.body, {{"plan", kind::string}});
      if (auto *msg = std::get_if<std::string>(&body)) {
        return fail(400, *msg);
      }
      v1::SubscribeRequest in;
      in.set_tenant_id(tenant);
      in.set_plan(std::get<json>(body)["plan"].template get<std::string>());
      return idempotent(req, std::to_string(tenant), [&](pqxx::work &) {
        v1::Subscription out;
        auto s = call(t, [&](auto &ctx) { return subscriptions_->Subscribe(&ctx, in, &out); });
        return s.ok() ? reply{201, to_json(out)} : from(s, true);
      });
    });

    route("GET", "/v1/subscription", true, [this](auto tenant, const auto &t, const auto &) {
      v1::GetSubscriptionRequest in;
      in.set_tenant_id(tenant);
      v1::Subscription out;
      auto s = call(t, [&](auto &ctx) { return subscriptions_->Get(&ctx, in, &out); });
      return s.ok() ? reply{200, to_json(out)} : from(s);
    });

    route("POST", "/v1/usage", true, [this](auto tenant, const auto &t, const auto &req) {
      auto body = parse_body(req.body, {{"rows", kind::array}});
      if (auto *msg = std::get_if<std::string>(&body)) {
        return fail(400, *msg);
      }
      auto rows = usage_rows(std::get<json>(body)["rows"]);
      if (auto *msg = std::get_if<std::string>(&rows)) {
        return fail(400, *msg);
      }
      auto &in = std::get<v1::IngestUsageRequest>(rows);
      in.set_tenant_id(tenant);
      return idempotent(req, std::to_string(tenant), [&](pqxx::work &) {
        v1::IngestUsageResponse out;
        auto s = call(t, [&](auto &ctx) { return billing_->IngestUsage(&ctx, in, &out); });
        return s.ok() ? reply{200,
                              {{"accepted", out.accepted()},
                               {"duplicates", out.duplicates()},
                               {"charge_cents", out.charge_cents()}}}
                      : from(s, true);
      });
    });

    route("POST", "/v1/invoices", true, [this](auto tenant, const auto &t, const auto &req) {
      auto body = parse_body(req.body, {{"period", kind::string}});
      if (auto *msg = std::get_if<std::string>(&body)) {
        return fail(400, *msg);
      }
      v1::ClosePeriodRequest in;
      in.set_tenant_id(tenant);
      in.set_period(std::get<json>(body)["period"].template get<std::string>());
      return idempotent(req, std::to_string(tenant), [&](pqxx::work &) {
        v1::ClosePeriodResponse out;
        auto s = call(t, [&](auto &ctx) { return billing_->ClosePeriod(&ctx, in, &out); });
        if (!s.ok()) {
          return from(s, true);
        }
        auto j = to_json(out.invoice());
        j["rows"] = out.rows();
        return reply{201, j};
      });
    });

    route("GET", R"(/v1/invoices/(\d{1,18}))", true,
          [this](auto tenant, const auto &t, const auto &req) {
            v1::GetInvoiceRequest in;
            in.set_tenant_id(tenant);
            in.set_invoice_id(std::stoll(req.matches[1]));
            v1::Invoice out;
            auto s = call(t, [&](auto &ctx) { return invoicing_->Get(&ctx, in, &out); });
            return s.ok() ? reply{200, to_json(out)} : from(s);
          });

    route("GET", R"(/v1/invoices/(\d{1,18})/payment)", true,
          [this](auto tenant, const auto &t, const auto &req) {
            v1::GetPaymentRequest in;
            in.set_tenant_id(tenant);
            in.set_invoice_id(std::stoll(req.matches[1]));
            v1::Payment out;
            auto s = call(t, [&](auto &ctx) { return payments_->GetByInvoice(&ctx, in, &out); });
            return s.ok() ? reply{200, to_json(out)} : from(s);
          });

    // Pays an invoice now (payments otherwise follow invoice.issued on their own): one charge
    // per invoice however many requests, keys or retries.
    route("POST", "/v1/payments", true, [this](auto tenant, const auto &t, const auto &req) {
      auto body = parse_body(req.body, {{"invoice_id", kind::integer}});
      if (auto *msg = std::get_if<std::string>(&body)) {
        return fail(400, *msg);
      }
      const auto invoice_id = std::get<json>(body)["invoice_id"].template get<std::int64_t>();
      return idempotent(req, std::to_string(tenant), [&](pqxx::work &) {
        v1::GetInvoiceRequest get;
        get.set_tenant_id(tenant);
        get.set_invoice_id(invoice_id);
        v1::Invoice invoice;
        auto s = call(t, [&](auto &ctx) { return invoicing_->Get(&ctx, get, &invoice); });
        if (!s.ok()) {
          return from(s, true);
        }
        v1::CaptureRequest in;
        in.set_tenant_id(tenant);
        in.set_invoice_id(invoice_id);
        in.set_amount_cents(invoice.total_cents());
        in.set_idempotency_key(req.get_header_value("Idempotency-Key"));
        v1::Payment out;
        s = call(t, [&](auto &ctx) { return payments_->Capture(&ctx, in, &out); });
        return s.ok() ? reply{201, to_json(out)} : from(s, true);
      });
    });

    route("GET", "/v1/notifications", true, [this](auto tenant, const auto &t, const auto &) {
      v1::ListNotificationsRequest in;
      in.set_tenant_id(tenant);
      v1::NotificationList out;
      auto s = call(t, [&](auto &ctx) { return notifications_->List(&ctx, in, &out); });
      if (!s.ok()) {
        return from(s);
      }
      json list = json::array();
      for (const auto &n : out.notifications()) {
        list.push_back({{"id", n.id()},
                        {"kind", n.kind()},
                        {"invoice_id", n.invoice_id()},
                        {"amount_cents", n.amount_cents()},
                        {"text", n.text()},
                        {"traceparent", n.traceparent()}});
      }
      return reply{200, {{"notifications", list}}};
    });
  }

  std::string key_secret_;
  std::chrono::milliseconds key_cache_ttl_;
  std::chrono::milliseconds deadline_;
  double rate_, burst_;
  std::ptrdiff_t concurrency_;
  lakh::pg::pool pool_;
  lakh::pg::idempotency_store store_;
  lakh::idempotency_guard<lakh::pg::idempotency_store> guard_;
  std::unique_ptr<v1::UserService::Stub> users_;
  std::unique_ptr<v1::SubscriptionService::Stub> subscriptions_;
  std::unique_ptr<v1::BillingService::Stub> billing_;
  std::unique_ptr<v1::InvoicingService::Stub> invoicing_;
  std::unique_ptr<v1::PaymentService::Stub> payments_;
  std::unique_ptr<v1::NotificationService::Stub> notifications_;
  lakh::registry metrics_;
  lakh::counter &requests_;
  lakh::counter &limited_;
  lakh::latency_histogram &latency_;
  std::shared_mutex keys_mu_;
  struct cached_key {
    std::int64_t tenant;
    std::chrono::steady_clock::time_point expires;
  };
  std::unordered_map<std::string, cached_key> keys_; ///< SHA-256 of a key -> its tenant
  std::shared_mutex limits_mu_;
  std::unordered_map<std::int64_t, std::unique_ptr<tenant_limits>> limits_;
  httplib::Server http_;
};

} // namespace

int main() {
  const sigset_t sigs = saas::block_stop_signals();
  return saas::guarded_main(service, [&] {
    const auto cfg = saas::config::load();
    const auto host = cfg.get("GATEWAY_ADDR", "127.0.0.1");
    const int port = cfg.port("GATEWAY_PORT", 8080);
    const auto threads = static_cast<int>(cfg.integer("GATEWAY_THREADS", 16, 1, 1024));
    gateway g(cfg);
    std::thread stopper([&] {
      const int sig = saas::wait_stop_signal(sigs);
      saas::log(service, "info", "", "draining", {{"signal", sig}});
      g.stop(); // in-flight requests finish
    });
    saas::log(service, "info", "", "listening", {{"http", host + ":" + std::to_string(port)}});
    const bool ok = g.listen(host, port, threads);
    if (!ok) {
      saas::log(service, "error", "", "cannot listen on " + host + ":" + std::to_string(port));
      ::kill(::getpid(), SIGTERM); // ends the stopper thread
    }
    stopper.join();
    saas::log(service, "info", "", "stopped");
    return ok ? 0 : 1;
  });
}
