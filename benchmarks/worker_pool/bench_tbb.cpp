// tbb::task_group in a tbb::task_arena of the same concurrency. TBB's producer thread joins
// the arena and also runs tasks in wait(); its queues are unbounded and work-stealing.
#include "common.hpp"

#include <benchmark/benchmark.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

namespace {

void BM_tbb_task_group_stream_1M(benchmark::State &state) {
  tbb::task_arena arena(static_cast<int>(lakh_bench::hardware_threads()));
  for (auto _ : state) {
    arena.execute([] {
      tbb::task_group group;
      for (std::int64_t i = 0; i < lakh_bench::stream_tasks; ++i) {
        group.run(lakh_bench::tiny_task);
      }
      group.wait();
    });
  }
  state.SetItemsProcessed(state.iterations() * lakh_bench::stream_tasks);
}
BENCHMARK(BM_tbb_task_group_stream_1M)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_tbb_task_group_batch(benchmark::State &state) {
  tbb::task_arena arena(static_cast<int>(lakh_bench::hardware_threads()));
  std::int64_t const n = state.range(0);
  for (auto _ : state) {
    arena.execute([n] {
      tbb::task_group group;
      for (std::int64_t i = 0; i < n; ++i) {
        group.run(lakh_bench::tiny_task);
      }
      group.wait();
    });
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_tbb_task_group_batch)->Apply(lakh_bench::batch_sizes);

} // namespace
