// lakh::redis::idempotency_store (SET NX PX + Lua completion); the operation is an INCR,
// which bare runs alone.
#include "common.hpp"

#include <lakh/redis/idempotency_store.hpp>

#include <string>
#include <vector>

namespace {

using lakh_bench::guarded_new_key;
using lakh_bench::guarded_replay;

struct redis_env {
  lakh::redis::connection_pool pool{lakh_bench::env("REDIS_URL")};
  std::string prefix = lakh_bench::unique("lakh:bench:idem:") + ":";
  lakh::redis::idempotency_store store{pool, {prefix}};
  // The pool connects lazily: open a connection per benchmark thread now (an unreachable
  // server fails here), so that no iteration pays for a connect.
  redis_env() {
    std::vector<lakh::redis::connection_pool::lease> open;
    for (int i = 0; i < lakh_bench::max_threads; ++i) {
      open.push_back(pool.acquire());
      (void)open.back()->command({"PING"});
    }
  }
};

redis_env *redis(benchmark::State &state) {
  return lakh_bench::require_fixture<redis_env>(state, "REDIS_URL", "Redis");
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

} // namespace

BENCHMARK(redis_new_key)->Name("redis/new_key")->Apply(lakh_bench::thread_counts);
BENCHMARK(redis_replay)->Name("redis/replay")->Apply(lakh_bench::thread_counts);
BENCHMARK(redis_bare)->Name("redis/bare")->Apply(lakh_bench::thread_counts);
