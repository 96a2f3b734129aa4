#pragma once
// The lock-heavy workload shared by bench_lock_order's peers (bench_std.cpp, bench_lakh.cpp): each
// thread repeatedly locks A, then B (a consistent order), does a little work on data guarded by
// both, and unlocks. Run with 1, 2 and 4 threads; the lock type and the checker mode vary per peer.
#include <benchmark/benchmark.h>

#include <cstdint>

namespace lakh_bench {

/// Data touched with both locks held (one cache line per lock's data, as a real program would).
struct alignas(64) guarded_counters {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
};

/// A little work with both locks held: a few dependent arithmetic steps and two stores.
inline void small_work(guarded_counters &c, std::uint64_t &local) {
  local = local * 6364136223846793005ULL + 1442695040888963407ULL;
  c.a += local >> 60;
  c.b += c.a ^ (local >> 7);
  benchmark::DoNotOptimize(c);
}

} // namespace lakh_bench
