#pragma once
// The lock-heavy workload shared by bench_lock_order's peers (bench_std.cpp, bench_lakh.cpp):
// each thread repeatedly locks A, then B (a consistent order), does `work` dependent
// arithmetic steps on data guarded by both, and unlocks. Run with 1, 2 and 4 threads and
// work 1 (an almost empty critical section: the worst case for any per-lock overhead) and
// 32 (a short but real one). The lock type and the checker mode vary per peer.
#include "../common.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>

namespace lakh_bench {

/// Data touched with both locks held.
struct alignas(64) guarded_counters {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
};

/// `steps` dependent arithmetic steps and two stores, with both locks held.
inline void small_work(guarded_counters &c, std::uint64_t &local, std::int64_t steps) {
  for (std::int64_t i = 0; i < steps; ++i) {
    local = local * 6364136223846793005ULL + 1442695040888963407ULL;
  }
  c.a += local >> 60;
  c.b += c.a ^ (local >> 7);
  benchmark::DoNotOptimize(c);
}

/// A peer's loop: `locked(work)` takes the peer's locks, calls work() (small_work on
/// `counters`, state.range(0) steps) and releases them, once per iteration.
template <class Locked>
void run_locked(benchmark::State &state, guarded_counters &counters, Locked locked) {
  std::uint64_t local = thread_seed(state);
  const std::int64_t steps = state.range(0);
  for (auto _ : state) {
    locked([&] { small_work(counters, local, steps); });
  }
  state.SetItemsProcessed(state.iterations());
}

/// The critical-section sizes every peer runs.
inline void work_sizes(benchmark::internal::Benchmark *b) {
  b->ArgName("work")->Arg(1)->Arg(32)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
}

/// The same, with the checker mode as a second argument (0 = ignore, 1 = report).
inline void work_sizes_and_checker(benchmark::internal::Benchmark *b) {
  b->ArgNames({"work", "checker_on"})
      ->ArgsProduct({{1, 32}, {0, 1}})
      ->Threads(1)
      ->Threads(2)
      ->Threads(4)
      ->UseRealTime();
}

} // namespace lakh_bench
