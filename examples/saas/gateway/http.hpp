#pragma once
// examples/saas/gateway/http.hpp: the gateway's HTTP answers: JSON bodies checked field by
// field (400 naming the field), usage rows, and gRPC outcomes turned into HTTP statuses with
// messages fit for a client (4xx: the owning service's own words; 5xx: a generic message and
// the trace id, never internal error text).
#include "saas.grpc.pb.h"

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <variant>

namespace gateway {

namespace v1 = lakh::saas::v1;
using json = nlohmann::json;

/// An HTTP answer: status and JSON body.
struct reply {
  int status = 200;
  json body;
  const char *replayed = nullptr; ///< Idempotent-Replayed header: "true", "false" or none
  int retry_after = 0;            ///< seconds, for 429 and 503; 0: no header
};

inline reply fail(int status, std::string message) {
  return {status, {{"error", std::move(message)}}};
}

/// An answer for a failure the client can only retry: 503 (Retry-After) or 504, or 500 for a
/// bug; the body names the trace, so that the logs can be found.
inline reply unavailable(int status, const std::string &trace_id) {
  reply r = fail(status, status == 504   ? "the request timed out; retry it with the same "
                                           "Idempotency-Key"
                         : status == 503 ? "temporarily unavailable; retry it with the same "
                                           "Idempotency-Key"
                                         : "internal error");
  r.body["trace_id"] = trace_id;
  r.retry_after = status == 503 ? 1 : 0;
  return r;
}

/// The answer to a failed gRPC call (`ctx` after the call: its trailing metadata says whether
/// the owning service found the idempotency key bound to another request).
inline reply from_grpc(const grpc::ClientContext &ctx, const grpc::Status &s,
                       const std::string &trace_id) {
  const auto &trailing = ctx.GetServerTrailingMetadata();
  if (auto it = trailing.find("idempotency-outcome");
      it != trailing.end() && it->second == "mismatch") {
    return fail(422, "Idempotency-Key reused with a different request");
  }
  switch (s.error_code()) {
  case grpc::StatusCode::INVALID_ARGUMENT:
    return fail(400, s.error_message());
  case grpc::StatusCode::NOT_FOUND:
    return fail(404, s.error_message());
  case grpc::StatusCode::ALREADY_EXISTS:
  case grpc::StatusCode::FAILED_PRECONDITION:
  case grpc::StatusCode::ABORTED:
    return fail(409, s.error_message());
  case grpc::StatusCode::DEADLINE_EXCEEDED:
    return unavailable(504, trace_id);
  case grpc::StatusCode::UNAVAILABLE:
  case grpc::StatusCode::RESOURCE_EXHAUSTED:
    return unavailable(503, trace_id);
  default: // INTERNAL, UNAUTHENTICATED (a misconfigured secret), UNKNOWN...
    return unavailable(500, trace_id);
  }
}

/// Whether the owning service answered from its record of the key.
inline const char *replayed(const grpc::ClientContext &ctx) {
  const auto &md = ctx.GetServerInitialMetadata();
  auto it = md.find("idempotent-replayed");
  return it != md.end() && it->second == "true" ? "true" : "false";
}

/// What a JSON body field must be.
enum class kind : std::uint8_t { string, integer, array };

/// The body as a JSON object with exactly `fields` of their kinds, or the 400 message naming
/// what was wrong.
inline std::variant<json, std::string>
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
inline std::variant<v1::IngestUsageRequest, std::string> usage_rows(const json &rows) {
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
    const auto m = r["metric"].get<std::int64_t>();
    if (m < 0 || m > 3) {
      return where + ".metric must be 0..3, got " + std::to_string(m);
    }
    auto *row = in.add_rows();
    row->set_id(r["id"].get<std::int64_t>());
    row->set_user_id(r["user_id"].get<std::int64_t>());
    row->set_metric(static_cast<std::int32_t>(m));
    row->set_quantity(r["quantity"].get<std::int64_t>());
    row->set_ts_unix(r["ts"].get<std::int64_t>());
  }
  return in;
}

inline json to_json(const v1::Invoice &i) {
  return {{"id", i.id()},
          {"period", i.period()},
          {"total_cents", i.total_cents()},
          {"status", i.status()},
          {"issued_unix", i.issued_unix()}};
}
inline json to_json(const v1::Payment &p) {
  return {{"id", p.id()},
          {"invoice_id", p.invoice_id()},
          {"amount_cents", p.amount_cents()},
          {"provider_ref", p.provider_ref()}};
}
inline json to_json(const v1::Subscription &s) {
  return {{"plan", s.plan()}, {"version", s.version()}, {"started_unix", s.started_unix()}};
}

} // namespace gateway
