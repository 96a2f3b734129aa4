#pragma once
// bench_metrics (one file per peer: bench_lakh.cpp, bench_std.cpp): the cost of recording one
// measurement, and of reading a quantile back.
//   counter_add              lakh::counter::add(1): one relaxed fetch_add on a shared line
//   atomic_fetch_add         std::atomic<uint64_t>::fetch_add(seq_cst): what a hand-rolled
//                            counter usually is
//   histogram_record         lakh::latency_histogram::record_ns: three relaxed fetch_adds
//                            (bucket, count, sum) and the min/max loads
//   mutex_vector_push_back   the baseline: every sample push_back'ed into a
//                            std::vector<uint64_t> under a std::mutex (capacity reserved,
//                            cleared every 2^20 samples so that memory stays bounded)
// Threads(1) is uncontended; Threads(4) share one metric (on a 2-core machine 4 threads
// also contend for the cores). Items/s is recordings per second over all threads.
//   histogram_quantile       p99 of a histogram holding 1M samples (one bucket pass)
//   vector_nth_element_p99   p99 of the same 1M samples kept in a vector (copy + nth_element)
#include "../common.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

namespace lakh_bench {

// 4096 latencies, log-normal around 50 us with a long tail, recycled by every benchmark so
// that random-number generation is not what is measured.
inline const std::vector<std::uint64_t> &samples() {
  static const std::vector<std::uint64_t> s = [] {
    std::mt19937_64 rng(42);
    std::lognormal_distribution<double> d(10.8, 1.2); // e^10.8 ns ~ 49 us
    std::vector<std::uint64_t> v(4096);
    for (auto &x : v) {
      x = static_cast<std::uint64_t>(d(rng)) + 1;
    }
    return v;
  }();
  return s;
}

inline void threads_1_4(benchmark::internal::Benchmark *b) {
  b->Threads(1)->Threads(4)->UseRealTime();
}

} // namespace lakh_bench
