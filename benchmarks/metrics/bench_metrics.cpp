// bench_metrics: the cost of recording one measurement, and of reading a quantile back.
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
#include <lakh/metrics.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <random>
#include <vector>

namespace {

// 4096 latencies, log-normal around 50 us with a long tail, recycled by every benchmark so
// that random-number generation is not what is measured.
const std::vector<std::uint64_t> &samples() {
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

void threads_1_4(benchmark::internal::Benchmark *b) {
  b->Threads(1)->Threads(4)->UseRealTime();
}

void counter_add(benchmark::State &state) {
  static lakh::counter c;
  for (auto _ : state) {
    c.add();
  }
  benchmark::DoNotOptimize(c.value());
  state.SetItemsProcessed(state.iterations());
}

void atomic_fetch_add(benchmark::State &state) {
  static std::atomic<std::uint64_t> c{0};
  for (auto _ : state) {
    c.fetch_add(1);
  }
  benchmark::DoNotOptimize(c.load());
  state.SetItemsProcessed(state.iterations());
}

void histogram_record(benchmark::State &state) {
  static lakh::latency_histogram h;
  const auto &s = samples();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 1024;
  for (auto _ : state) {
    h.record_ns(s[i++ & 4095]);
  }
  benchmark::DoNotOptimize(h.count());
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

void histogram_quantile(benchmark::State &state) {
  lakh::latency_histogram h;
  for (std::size_t i = 0; i < (std::size_t{1} << 20); ++i) {
    h.record_ns(samples()[i & 4095] + (i >> 12)); // 1M distinct-ish values
  }
  for (auto _ : state) {
    benchmark::DoNotOptimize(h.quantile(0.99));
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

BENCHMARK(counter_add)->Apply(threads_1_4);
BENCHMARK(atomic_fetch_add)->Apply(threads_1_4);
BENCHMARK(histogram_record)->Apply(threads_1_4);
BENCHMARK(mutex_vector_push_back)->Apply(threads_1_4);
BENCHMARK(histogram_quantile);
BENCHMARK(vector_nth_element_p99)->Unit(benchmark::kMillisecond);
