// lakh::semaphore: acquire + release of one unit, and of 3 units of 4 (weighted).
#include "common.hpp"

#include <lakh/semaphore.hpp>

namespace {

void bm_lakh(benchmark::State &state) {
  auto &s = lakh_bench::shared_per_run<lakh::semaphore>(state, state.range(0));
  for (auto _ : state) {
    s->acquire();
    s->release();
  }
  state.SetItemsProcessed(state.iterations());
}

void bm_lakh_weighted(benchmark::State &state) {
  auto &s = lakh_bench::shared_per_run<lakh::semaphore>(state, 4);
  for (auto _ : state) {
    s->acquire(3);
    s->release(3);
  }
  state.SetItemsProcessed(state.iterations());
}

} // namespace

BENCHMARK(bm_lakh)->Name("lakh")->Apply(lakh_bench::capacity_arg);
BENCHMARK(bm_lakh_weighted)->Name("weighted/lakh_acquire_3")->ThreadRange(1, 4)->UseRealTime();
