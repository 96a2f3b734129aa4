// The hand-rolled alternatives: a seq_cst std::atomic counter, samples pushed into a
// std::vector under a std::mutex, and p99 by nth_element over a copy of them.
#include "common.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace {

using lakh_bench::samples;

void atomic_fetch_add(benchmark::State &state) {
  static std::atomic<std::uint64_t> c{0};
  for (auto _ : state) {
    c.fetch_add(1);
  }
  benchmark::DoNotOptimize(c.load());
  state.SetItemsProcessed(state.iterations());
}

struct locked_samples {
  std::mutex mu;
  std::vector<std::uint64_t> v;
  locked_samples() { v.reserve(std::size_t{1} << 20); }
};

void mutex_vector_push_back(benchmark::State &state) {
  static locked_samples ls;
  const auto &s = samples();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 1024;
  for (auto _ : state) {
    std::scoped_lock lock(ls.mu);
    if (ls.v.size() == ls.v.capacity()) {
      ls.v.clear();
    }
    ls.v.push_back(s[i++ & 4095]);
  }
  state.SetItemsProcessed(state.iterations());
}

void vector_nth_element_p99(benchmark::State &state) {
  std::vector<std::uint64_t> v(std::size_t{1} << 20);
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i] = samples()[i & 4095] + (i >> 12);
  }
  std::vector<std::uint64_t> work(v.size());
  for (auto _ : state) {
    std::copy(v.begin(), v.end(), work.begin()); // the samples must survive for the next read
    auto nth = work.begin() + static_cast<std::ptrdiff_t>(work.size() * 99 / 100);
    std::nth_element(work.begin(), nth, work.end());
    benchmark::DoNotOptimize(*nth);
  }
  state.SetItemsProcessed(state.iterations());
}

} // namespace

BENCHMARK(atomic_fetch_add)->Apply(lakh_bench::threads_1_4);
BENCHMARK(mutex_vector_push_back)->Apply(lakh_bench::threads_1_4);
BENCHMARK(vector_nth_element_p99)->Unit(benchmark::kMillisecond);
