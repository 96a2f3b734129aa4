#pragma once
// bench_idempotency (one file per store: bench_memory.cpp, bench_redis.cpp, bench_pg.cpp):
// one operation per iteration, through lakh::idempotency_guard and bare.
//   new_key   every iteration a fresh key: the guard takes it, runs the operation, stores
//             the response (the executed path, what a first request costs)
//   replay    the same key every iteration: the stored response comes back, nothing runs
//   bare      the operation alone, without the guard (the baseline for the overhead)
// Stores: memory (sharded, in process), redis (SET NX PX + Lua completion; the operation is
// an INCR), pg (the operation is an INSERT in the guard's transaction; bare: the same INSERT
// in its own transaction). Threads 1 and 4.
//
// This header: the guarded loops every store runs and the server-backed fixture.
#include "../common.hpp"

#include <lakh/idempotency.hpp>

#include <benchmark/benchmark.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

namespace lakh_bench {

inline const auto fp = lakh::fingerprint("POST", "/v1/charges", "amount=4200");
inline constexpr int max_threads = 4; // the most threads any benchmark below runs

/// Threads 1 and max_threads, real time: every benchmark of bench_idempotency.
inline void thread_counts(benchmark::internal::Benchmark *b) {
  b->Threads(1)->Threads(max_threads)->UseRealTime();
}

inline std::string env(const char *name) {
  const char *v = std::getenv(name);
  return v != nullptr ? v : "";
}

inline std::string unique(const std::string &prefix) {
  static std::atomic<long> n{0};
  return prefix + std::to_string(::getpid()) + "_" + std::to_string(n.fetch_add(1));
}

inline lakh::idempotency_options opts() {
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

} // namespace lakh_bench
