// lakh::worker_pool: post (fire and forget) and submit (a std::future per task).
#include "common.hpp"

#include <lakh/worker_pool.hpp>

#include <benchmark/benchmark.h>

namespace {

// range(0): queue capacity; 0 means the default (256 slots per worker).
std::size_t capacity_arg(const benchmark::State &state) {
  const auto cap = static_cast<std::size_t>(state.range(0));
  return cap == 0 ? lakh::worker_pool::default_queue_capacity(lakh_bench::hardware_threads()) : cap;
}

void BM_lakh_pool_post_stream_1M(benchmark::State &state) {
  lakh::worker_pool pool(lakh_bench::hardware_threads(), capacity_arg(state));
  for (auto _ : state) {
    for (std::int64_t i = 0; i < lakh_bench::stream_tasks; ++i) {
      pool.post(lakh_bench::tiny_task);
    }
    pool.wait_idle();
  }
  state.SetItemsProcessed(state.iterations() * lakh_bench::stream_tasks);
  state.counters["capacity"] = static_cast<double>(pool.capacity());
}
BENCHMARK(BM_lakh_pool_post_stream_1M)
    ->Arg(0)
    ->Arg(128)
    ->Arg(65536)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_lakh_pool_post_batch(benchmark::State &state) {
  lakh::worker_pool pool(lakh_bench::hardware_threads(), 65536);
  std::int64_t const n = state.range(0);
  for (auto _ : state) {
    for (std::int64_t i = 0; i < n; ++i) {
      pool.post(lakh_bench::tiny_task);
    }
    pool.wait_idle();
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_lakh_pool_post_batch)->Apply(lakh_bench::batch_sizes);

void BM_lakh_pool_submit_future_batch(benchmark::State &state) {
  lakh::worker_pool pool(lakh_bench::hardware_threads(), 65536);
  lakh_bench::future_batches(state, [&pool] { return pool.submit(lakh_bench::tiny_task); });
}
BENCHMARK(BM_lakh_pool_submit_future_batch)->Apply(lakh_bench::batch_sizes);

} // namespace
