// Idempotency across a service hop (docs/idempotency.md): the service that owns the effect
// records the caller's Idempotency-Key in its own transaction (idempotency_store::run_in), so
// the user and the record of its key commit together, or neither does.
// Needs DATABASE_URL (scripts/services run). Checks: a transaction rolled back leaves no
// record, so the retry runs; a second retry replays the first answer; one user exists.
#include <lakh/pg/idempotency_store.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>

int main() {
  if (std::getenv("DATABASE_URL") == nullptr) {
    std::fprintf(stderr, "DATABASE_URL is not set: run under scripts/services run\n");
    return 2;
  }
  lakh::pg::pool pool(std::getenv("DATABASE_URL"), 2);
  lakh::pg::idempotency_store store(pool, {"example_hop_keys"});
  store.create_schema();
  auto lease = pool.acquire();
  pqxx::connection &conn = *lease;
  pqxx::nontransaction(conn).exec(
      "TRUNCATE example_hop_keys; DROP TABLE IF EXISTS example_users;"
      "CREATE TABLE example_users (id serial, tenant_id text, email text)");
  const std::string tenant = "t1", tenant_id = tenant, key = "signup-1", email = "a@example.com";
  const std::uint64_t fingerprint = lakh::fingerprint("POST", "/v1/users", email);
  auto create_user = [&](bool crash_before_commit) {
    // [doc:run_in]
    // In the owning service's handler: (tenant, key, fingerprint) came as call metadata.
    pqxx::work w(conn);
    auto r = store.run_in(w, tenant, key, fingerprint, [&](pqxx::transaction_base &tx) {
      const auto row = tx.exec_params1("INSERT INTO example_users (tenant_id, email) "
                                       "VALUES ($1, $2) RETURNING id",
                                       tenant_id, email);
      return lakh::stored_response{201, row[0].as<std::string>()};
    });
    // [doc:run_in]
    if (crash_before_commit) {
      return lakh::idempotency_result{}; // w rolls back: no user, no record of the key
    }
    // [doc:run_in]
    w.commit(); // the user and the record of its key commit together, or neither does
    // r.outcome: executed | replayed (r.response is the first answer) | mismatch | in_progress
    // [doc:run_in]
    return r;
  };
  (void)create_user(true); // rolled back: as if the service had crashed before COMMIT
  const auto first = create_user(false), retry = create_user(false);
  const long users =
      pqxx::nontransaction(conn).exec1("SELECT count(*) FROM example_users")[0].as<long>();
  std::printf("first %s %s, retry %s %s, %ld user(s)\n", lakh::to_string(first.outcome).data(),
              first.response.body.c_str(), lakh::to_string(retry.outcome).data(),
              retry.response.body.c_str(), users);
  return first.outcome == lakh::idempotency_outcome::executed &&
                 retry.outcome == lakh::idempotency_outcome::replayed &&
                 retry.response == first.response && users == 1
             ? 0
             : 1;
}
