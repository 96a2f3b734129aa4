// bench_idempotency: one operation per iteration, through lakh::idempotency_guard and bare.
//   new_key   every iteration a fresh key: the guard takes it, runs the operation, stores
//             the response (the executed path, what a first request costs)
//   replay    the same key every iteration: the stored response comes back, nothing runs
//   bare      the operation alone, without the guard (the baseline for the overhead)
// Stores: memory (sharded, in process), redis (SET NX PX + Lua completion; the operation is
// an INCR), pg (the operation is an INSERT in the guard's transaction; bare: the same INSERT
// in its own transaction). Threads 1 and 4.
#include <lakh/idempotency.hpp>
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/redis/idempotency_store.hpp>

#include <benchmark/benchmark.h>
#include <pqxx/pqxx>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

const auto fp = lakh::fingerprint("POST", "/v1/charges", "amount=4200");
constexpr int max_threads = 4; // the most threads any benchmark below runs

std::string env(const char *name) {
  const char *v = std::getenv(name);
  return v != nullptr ? v : "";
}

std::string unique(const std::string &prefix) {
  static std::atomic<long> n{0};
  return prefix + std::to_string(::getpid()) + "_" + std::to_string(n.fetch_add(1));
}

lakh::idempotency_options opts() {
  lakh::idempotency_options o;
  o.wait = std::chrono::milliseconds(0);
  return o;
}

// One guarded operation per iteration on a fresh key (the executed path).
template <class Store, class Op>
void guarded_new_key(benchmark::State &state, Store &store, const std::string &tag, Op op) {
  lakh::idempotency_guard g(store, opts());
  const std::string prefix = unique(tag) + "_" + std::to_string(state.thread_index()) + "_";
  long i = 0;
  for (auto _ : state) {
    auto r = g.run("t", prefix + std::to_string(i++), fp, op);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}

// The stored response of one key, every iteration (nothing runs).
template <class Store, class Op>
void guarded_replay(benchmark::State &state, Store &store, const std::string &tag, Op op) {
  lakh::idempotency_guard g(store, opts());
  const std::string key = unique(tag) + "_" + std::to_string(state.thread_index());
  (void)g.run("t", key, fp, op);
  for (auto _ : state) {
    auto r = g.run("t", key, fp, op);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- memory -------------------------------------------------------------------------------

lakh::memory_idempotency_store &memory_store() {
  static lakh::memory_idempotency_store s;
  return s;
}

std::atomic<long> memory_business{0};

void memory_new_key(benchmark::State &state) {
  guarded_new_key(state, memory_store(), "m", [] {
    memory_business.fetch_add(1, std::memory_order_relaxed);
    return lakh::stored_response{201, "ok"};
  });
}

void memory_replay(benchmark::State &state) {
  guarded_replay(state, memory_store(), "mr", [] { return lakh::stored_response{201, "ok"}; });
}

void memory_bare(benchmark::State &state) {
  for (auto _ : state) {
    memory_business.fetch_add(1, std::memory_order_relaxed);
    lakh::stored_response r{201, "ok"};
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- redis --------------------------------------------------------------------------------

struct redis_env {
  lakh::redis::connection_pool pool{env("REDIS_URL")};
  std::string prefix = unique("lakh:bench:idem:") + ":";
  lakh::redis::idempotency_store store{pool, {prefix}};
  // The pool connects lazily: open a connection per benchmark thread now (an unreachable
  // server fails here), so that no iteration pays for a connect.
  redis_env() {
    std::vector<lakh::redis::connection_pool::lease> open;
    for (int i = 0; i < max_threads; ++i) {
      open.push_back(pool.acquire());
      (void)open.back()->command({"PING"});
    }
  }
};

// A server-backed fixture, made once on first use (a magic static: safe when the first use
// is from several benchmark threads at once). Null, with `error` saying why, when the URL
// variable is unset or the server cannot be used: every benchmark then reports that error.
template <class Env> struct fixture {
  std::unique_ptr<Env> env;
  std::string error;
};

template <class Env> const fixture<Env> &get_fixture(const char *url_var, const char *server) {
  static const fixture<Env> f = [&] {
    fixture<Env> r;
    if (env(url_var).empty()) {
      r.error = std::string(url_var) + " is not set (run scripts/bench-idempotency, which "
                                       "starts the servers)";
      return r;
    }
    try {
      r.env = std::make_unique<Env>();
    } catch (const std::exception &e) {
      r.error = std::string(server) + " (" + url_var + ") is not usable: " + e.what();
    }
    return r;
  }();
  return f;
}

// The fixture, or null after reporting its error on `state`.
template <class Env>
Env *require_fixture(benchmark::State &state, const char *url_var, const char *server) {
  const auto &f = get_fixture<Env>(url_var, server);
  if (!f.env) {
    state.SkipWithError(f.error.c_str());
  }
  return f.env.get();
}

redis_env *redis(benchmark::State &state) {
  return require_fixture<redis_env>(state, "REDIS_URL", "Redis");
}

void redis_new_key(benchmark::State &state) {
  auto *e = redis(state);
  if (e == nullptr) {
    return;
  }
  guarded_new_key(state, e->store, "k", [e] {
    (void)e->pool.command({"INCR", e->prefix + "business"});
    return lakh::stored_response{201, "ok"};
  });
}

void redis_replay(benchmark::State &state) {
  auto *e = redis(state);
  if (e == nullptr) {
    return;
  }
  guarded_replay(state, e->store, "r", [] { return lakh::stored_response{201, "ok"}; });
}

void redis_bare(benchmark::State &state) {
  auto *e = redis(state);
  if (e == nullptr) {
    return;
  }
  for (auto _ : state) {
    auto r = e->pool.command({"INCR", e->prefix + "business"});
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- PostgreSQL ---------------------------------------------------------------------------

struct pg_env {
  lakh::pg::pool pool{env("DATABASE_URL"), static_cast<std::size_t>(max_threads)};
  std::string table = unique("bench_idem_");
  lakh::pg::idempotency_store store{pool, {table}};
  // Creates the tables, and opens a connection per benchmark thread now (the pool connects
  // lazily), so that no iteration pays for a connect.
  pg_env() {
    store.create_schema();
    std::vector<lakh::pg::pooled_connection> open;
    for (int i = 0; i < max_threads; ++i) {
      open.push_back(pool.acquire());
      pqxx::nontransaction tx(*open.back());
      if (i == 0) {
        tx.exec("CREATE TABLE " + table + "_business (id bigserial PRIMARY KEY, note text)");
      }
    }
  }
};

pg_env *pg(benchmark::State &state) {
  return require_fixture<pg_env>(state, "DATABASE_URL", "PostgreSQL");
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

BENCHMARK(memory_new_key)->Name("memory/new_key")->Threads(1)->Threads(max_threads)->UseRealTime();
BENCHMARK(memory_replay)->Name("memory/replay")->Threads(1)->Threads(max_threads)->UseRealTime();
BENCHMARK(memory_bare)->Name("memory/bare")->Threads(1)->Threads(max_threads)->UseRealTime();
BENCHMARK(redis_new_key)->Name("redis/new_key")->Threads(1)->Threads(max_threads)->UseRealTime();
BENCHMARK(redis_replay)->Name("redis/replay")->Threads(1)->Threads(max_threads)->UseRealTime();
BENCHMARK(redis_bare)->Name("redis/bare")->Threads(1)->Threads(max_threads)->UseRealTime();
BENCHMARK(pg_new_key)->Name("pg/new_key")->Threads(1)->Threads(max_threads)->UseRealTime();
BENCHMARK(pg_replay)->Name("pg/replay")->Threads(1)->Threads(max_threads)->UseRealTime();
BENCHMARK(pg_bare)->Name("pg/bare")->Threads(1)->Threads(max_threads)->UseRealTime();
