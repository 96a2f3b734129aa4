#pragma once
// bench_semaphore (one file per peer, bench_<peer>.cpp): one acquire + release per iteration.
//   lakh  lakh::semaphore (mutex + FIFO queue of waiters, weights)
//   std   std::counting_semaphore (libstdc++: an atomic counter and futex wait, no order)
// Threads(1) is uncontended; Threads(2, 4) share one semaphore of capacity 1 (every
// acquisition hands off) or of capacity = threads (rarely waits). Weighted: acquire 3 of 4
// units, 1, 2 or 4 threads on one semaphore (two holders never fit at once, so with 2+
// threads every acquisition hands off); std has no weights: three acquire() calls, which
// deadlock between threads that each hold some units, so std runs single-threaded only.
#include "../common.hpp"

#include <benchmark/benchmark.h>

namespace lakh_bench {

/// The capacities and thread counts of the plain acquire + release runs.
inline void capacity_arg(benchmark::internal::Benchmark *b) {
  b->ArgName("capacity")->Arg(1)->Arg(4)->ThreadRange(1, 4)->UseRealTime();
}

} // namespace lakh_bench
