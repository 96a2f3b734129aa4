// An idempotent HTTP handler (docs/idempotency.md): POST /v1/charges with an Idempotency-Key
// charges once however often the client retries. Needs DATABASE_URL (scripts/services run).
// Checks: a retry replays the first response; the key reused for another body gets 422.
// [doc:guard]
#include <lakh/pg/idempotency_store.hpp>
// [doc:guard]

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

struct request { // what a server hands the handler; examples/saas/gateway parses real ones
  std::map<std::string, std::string> headers;
  std::string body;
  [[nodiscard]] std::string header(const std::string &name) const { return headers.at(name); }
};
struct response {
  int status;
  std::string body;
};
response reply(int status, std::string body) {
  return {status, std::move(body)};
}

int main() {
  if (std::getenv("DATABASE_URL") == nullptr) {
    std::fprintf(stderr, "DATABASE_URL is not set: run under scripts/services run\n");
    return 2;
  }
  // [doc:guard]
  lakh::pg::pool pool(std::getenv("DATABASE_URL"), 16);
  lakh::pg::idempotency_store store(pool, {"example_idempotency_keys"});
  store.create_schema();                // CREATE TABLE IF NOT EXISTS
  lakh::idempotency_guard guard(store); // ttl 24 h, lease 30 s, wait 2 s
  // [doc:guard]
  lakh::pg::with_connection(pool, [](pqxx::connection &c) {
    pqxx::nontransaction(c).exec("TRUNCATE example_idempotency_keys; CREATE TABLE IF NOT EXISTS "
                                 "example_charges (id serial, tenant text, amount int);"
                                 "TRUNCATE example_charges");
  });
  auto post_charge = [&](const request &req) { // POST /v1/charges
    const std::string tenant_id = req.header("X-Tenant");
    const long amount = std::stol(req.body);
    // [doc:guard]
    auto charge = [&](pqxx::work &tx) { // the business transaction
      const auto row = tx.exec_params1("INSERT INTO example_charges (tenant, amount) "
                                       "VALUES ($1, $2) RETURNING id",
                                       tenant_id, amount);
      return lakh::stored_response{201, R"({"id":)" + row[0].as<std::string>() + "}"};
    };
    auto r = guard.run(tenant_id, req.header("Idempotency-Key"),
                       lakh::fingerprint("POST", "/v1/charges", req.body),
                       charge); // runs charge, records the response in its tx, then COMMIT
    switch (r.outcome) {
    case lakh::idempotency_outcome::executed:
    case lakh::idempotency_outcome::replayed:
      return reply(r.response.status, r.response.body);
    case lakh::idempotency_outcome::mismatch:
      return reply(422, "Idempotency-Key reused");
    case lakh::idempotency_outcome::in_progress:
      return reply(409, "request in progress");
    case lakh::idempotency_outcome::lease_lost:
      return reply(409, "retry later");
    }
    // [doc:guard]
    return reply(500, "unknown outcome");
  };
  const request first{{{"X-Tenant", "t1"}, {"Idempotency-Key", "order-17"}}, "1500"};
  const request other{{{"X-Tenant", "t1"}, {"Idempotency-Key", "order-17"}}, "99"};
  const response a = post_charge(first), b = post_charge(first), c = post_charge(other);
  const auto charges = lakh::pg::with_connection(pool, [](pqxx::connection &conn) {
    return pqxx::nontransaction(conn).exec1("SELECT count(*) FROM example_charges")[0].as<long>();
  });
  std::printf("first %d %s, retry %d %s, other body %d; %ld charge(s)\n", a.status, a.body.c_str(),
              b.status, b.body.c_str(), c.status, charges);
  const bool once = a.status == 201 && b.status == 201 && a.body == b.body && charges == 1;
  return once && c.status == 422 ? 0 : 1;
}
