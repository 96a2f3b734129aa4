// std::counting_semaphore: acquire + release of one unit, and three acquire() calls for 3
// units of 4 (it has no weights; single-threaded only).
#include "common.hpp"

#include <semaphore>

namespace {

void bm_std(benchmark::State &state) {
  auto &s = lakh_bench::shared_per_run<std::counting_semaphore<>>(state, state.range(0));
  for (auto _ : state) {
    s->acquire();
    s->release();
  }
  state.SetItemsProcessed(state.iterations());
}

void bm_std_three_units(benchmark::State &state) {
  std::counting_semaphore<> s(4);
  for (auto _ : state) {
    s.acquire();
    s.acquire();
    s.acquire();
    s.release(3);
  }
  state.SetItemsProcessed(state.iterations());
}

} // namespace

BENCHMARK(bm_std)->Name("std")->Apply(lakh_bench::capacity_arg);
BENCHMARK(bm_std_three_units)->Name("weighted/std_three_acquires");
