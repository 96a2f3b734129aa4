// lakh's metrics: lakh::counter::add, lakh::latency_histogram::record_ns and quantile.
#include "common.hpp"

#include <lakh/metrics.hpp>

#include <cstddef>
#include <cstdint>

namespace {

using lakh_bench::samples;

void counter_add(benchmark::State &state) {
  static lakh::counter c;
  for (auto _ : state) {
    c.add();
  }
  benchmark::DoNotOptimize(c.value());
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

} // namespace

BENCHMARK(counter_add)->Apply(lakh_bench::threads_1_4);
BENCHMARK(histogram_record)->Apply(lakh_bench::threads_1_4);
BENCHMARK(histogram_quantile);
