// lakh::pg::idempotency_store; the operation is an INSERT in the guard's transaction, and
// bare the same INSERT in its own transaction.
#include "common.hpp"

#include <lakh/pg/idempotency_store.hpp>

#include <pqxx/pqxx>

#include <cstddef>
#include <string>
#include <vector>

namespace {

using lakh_bench::guarded_new_key;
using lakh_bench::guarded_replay;

struct pg_env {
  lakh::pg::pool pool{lakh_bench::env("DATABASE_URL"),
                      static_cast<std::size_t>(lakh_bench::max_threads)};
  std::string table = lakh_bench::unique("bench_idem_");
  lakh::pg::idempotency_store store{pool, {table}};
  // Creates the tables, and opens a connection per benchmark thread now (the pool connects
  // lazily), so that no iteration pays for a connect.
  pg_env() {
    store.create_schema();
    std::vector<lakh::pg::pooled_connection> open;
    for (int i = 0; i < lakh_bench::max_threads; ++i) {
      open.push_back(pool.acquire());
      pqxx::nontransaction tx(*open.back());
      if (i == 0) {
        tx.exec("CREATE TABLE " + table + "_business (id bigserial PRIMARY KEY, note text)");
      }
    }
  }
};

pg_env *pg(benchmark::State &state) {
  return lakh_bench::require_fixture<pg_env>(state, "DATABASE_URL", "PostgreSQL");
}

void pg_new_key(benchmark::State &state) {
  auto *e = pg(state);
  if (e == nullptr) {
    return;
  }
  const std::string insert = "INSERT INTO " + e->table + "_business (note) VALUES ('charge')";
  guarded_new_key(state, e->store, "k", [&insert](pqxx::work &w) {
    w.exec(insert);
    return lakh::stored_response{201, "ok"};
  });
}

void pg_replay(benchmark::State &state) {
  auto *e = pg(state);
  if (e == nullptr) {
    return;
  }
  guarded_replay(state, e->store, "r", [](pqxx::work &) {
    return lakh::stored_response{201, "ok"};
  });
}

void pg_bare(benchmark::State &state) {
  auto *e = pg(state);
  if (e == nullptr) {
    return;
  }
  const std::string insert = "INSERT INTO " + e->table + "_business (note) VALUES ('charge')";
  for (auto _ : state) {
    auto c = e->pool.acquire();
    pqxx::work w(*c);
    w.exec(insert);
    w.commit();
  }
  state.SetItemsProcessed(state.iterations());
}

} // namespace

BENCHMARK(pg_new_key)->Name("pg/new_key")->Apply(lakh_bench::thread_counts);
BENCHMARK(pg_replay)->Name("pg/replay")->Apply(lakh_bench::thread_counts);
BENCHMARK(pg_bare)->Name("pg/bare")->Apply(lakh_bench::thread_counts);
