#pragma once
// What the benchmark programs share (each folder's common.hpp adds its area's workload):
// the machine's thread count, a per-thread seed, an object shared by the threads of one run,
// and the loop of a futures benchmark. Results and commands: docs/benchmarks.md.
#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>
#include <future>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

namespace lakh_bench {

/// std::thread::hardware_concurrency(), at least 1.
inline std::size_t hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<std::size_t>(n);
}

/// A seed that differs per benchmark thread: thread_index() + 1.
inline std::uint64_t thread_seed(const benchmark::State &state) {
  return static_cast<std::uint64_t>(state.thread_index()) + 1;
}

/// One T shared by every thread of a run, made anew by thread 0 for each run from `args`.
/// Returns the owner: dereference it inside the timed loop only, which starts once every
/// thread has arrived (so after thread 0 made the object).
template <class T, class... Args>
std::unique_ptr<T> &shared_per_run(const benchmark::State &state, Args &&...args) {
  static std::unique_ptr<T> object;
  if (state.thread_index() == 0) {
    object = std::make_unique<T>(std::forward<Args>(args)...);
  }
  return object;
}

/// The loop of a *_future_batch benchmark: per iteration, state.range(0) futures from
/// `submit()` (each a std::future<void>), then a wait on every one; items are tasks.
template <class Submit> void future_batches(benchmark::State &state, Submit submit) {
  const std::int64_t n = state.range(0);
  std::vector<std::future<void>> futures;
  futures.reserve(static_cast<std::size_t>(n));
  for (auto _ : state) {
    for (std::int64_t i = 0; i < n; ++i) {
      futures.push_back(submit());
    }
    for (auto &f : futures) {
      f.get();
    }
    futures.clear();
  }
  state.SetItemsProcessed(state.iterations() * n);
}

} // namespace lakh_bench
