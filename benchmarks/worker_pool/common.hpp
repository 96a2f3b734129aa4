#pragma once
// Shared by the worker_pool benchmarks: the task every peer runs and the sizes.
//
// Two shapes, the same for every peer:
//   *_stream_1M : one producer posts 1,000,000 tiny tasks, then waits for all of them;
//   *_batch/N   : post N tiny tasks, wait for them, repeat (a fork-join round of N).
// The task bumps a relaxed atomic counter: "empty-ish", so the figures measure the cost of
// handing a task to a worker and back, not the task. Every peer uses the same number of
// worker threads, `hardware_threads()` (the machine's hardware concurrency).
#include "../common.hpp"

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace lakh_bench {

inline constexpr std::int64_t stream_tasks = 1'000'000;

/// The tiny task: one relaxed increment of a counter the producer can check.
inline std::atomic<std::int64_t> &counter() {
  static std::atomic<std::int64_t> c{0};
  return c;
}

inline void tiny_task() noexcept {
  counter().fetch_add(1, std::memory_order_relaxed);
}

/// The batch sizes every peer's *_batch benchmark runs: `BENCHMARK(x)->Apply(batch_sizes)`.
inline void batch_sizes(benchmark::internal::Benchmark *b) {
  b->Arg(64)->Arg(1024)->Arg(16384)->UseRealTime();
}

} // namespace lakh_bench
