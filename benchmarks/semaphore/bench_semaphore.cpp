// bench_semaphore: one acquire + release per iteration.
//   lakh  lakh::semaphore (mutex + FIFO queue of waiters, weights)
//   std   std::counting_semaphore (libstdc++: an atomic counter and futex wait, no order)
// Threads(1) is uncontended; Threads(2, 4) share one semaphore of capacity 1 (every
// acquisition hands off) or of capacity = threads (rarely waits).
#include <lakh/semaphore.hpp>

#include <benchmark/benchmark.h>

#include <cstddef>
#include <memory>
#include <semaphore>

namespace {

void capacity_arg(benchmark::internal::Benchmark *b) {
  b->ArgName("capacity")->Arg(1)->Arg(4)->ThreadRange(1, 4)->UseRealTime();
}

void bm_lakh(benchmark::State &state) {
  static lakh::semaphore *s = nullptr;
  static std::unique_ptr<lakh::semaphore> owner;
  if (state.thread_index() == 0) {
    owner = std::make_unique<lakh::semaphore>(state.range(0));
    s = owner.get();
  }
  for (auto _ : state) {
    s->acquire();
    s->release();
  }
  state.SetItemsProcessed(state.iterations());
}

void bm_std(benchmark::State &state) {
  static std::counting_semaphore<> *s = nullptr;
  static std::unique_ptr<std::counting_semaphore<>> owner;
  if (state.thread_index() == 0) {
    owner = std::make_unique<std::counting_semaphore<>>(state.range(0));
    s = owner.get();
  }
  for (auto _ : state) {
    s->acquire();
    s->release();
  }
  state.SetItemsProcessed(state.iterations());
}

// Weighted: acquire 3 of 4 units, 1, 2 or 4 threads on one semaphore (two holders never
// fit at once, so with 2+ threads every acquisition hands off). std has no weights: three
// acquire() calls, which deadlock between threads that each hold some units, so std runs
// single-threaded only.
void bm_lakh_weighted(benchmark::State &state) {
  static lakh::semaphore *s = nullptr;
  static std::unique_ptr<lakh::semaphore> owner;
  if (state.thread_index() == 0) {
    owner = std::make_unique<lakh::semaphore>(4);
    s = owner.get();
  }
  for (auto _ : state) {
    s->acquire(3);
    s->release(3);
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

BENCHMARK(bm_lakh)->Name("lakh")->Apply(capacity_arg);
BENCHMARK(bm_std)->Name("std")->Apply(capacity_arg);
BENCHMARK(bm_lakh_weighted)->Name("weighted/lakh_acquire_3")->ThreadRange(1, 4)->UseRealTime();
BENCHMARK(bm_std_three_units)->Name("weighted/std_three_acquires");
