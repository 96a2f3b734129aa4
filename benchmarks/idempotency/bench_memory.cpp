// The in-process store, lakh::memory_idempotency_store (sharded); bare: the operation, a
// relaxed atomic increment, alone.
#include "common.hpp"

#include <lakh/idempotency.hpp>

#include <atomic>

namespace {

using lakh_bench::guarded_new_key;
using lakh_bench::guarded_replay;

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

} // namespace

BENCHMARK(memory_new_key)->Name("memory/new_key")->Apply(lakh_bench::thread_counts);
BENCHMARK(memory_replay)->Name("memory/replay")->Apply(lakh_bench::thread_counts);
BENCHMARK(memory_bare)->Name("memory/bare")->Apply(lakh_bench::thread_counts);
