// lakh::ranked_mutex under the same workload, with the lock-order checker off (ignore) and
// on (report; no report is ever made, since the order is consistent), nested and via
// lakh::lock_all.
#include "common.hpp"

#include <lakh/lock_order.hpp>

namespace {

lakh::ranked_mutex a_mu(1, "bench.A");
lakh::ranked_mutex b_mu(2, "bench.B");
lakh_bench::guarded_counters counters;

void BM_ranked_mutex_nested(benchmark::State &state) {
  // Every thread sets the same mode before its loop (idempotent), so no iteration runs in
  // another mode.
  lakh::lock_order::set_mode(static_cast<lakh::lock_order::mode>(state.range(0)));
  std::uint64_t local = static_cast<std::uint64_t>(state.thread_index()) + 1;
  for (auto _ : state) {
    const lakh::lock_guard ga(a_mu);
    const lakh::lock_guard gb(b_mu);
    lakh_bench::small_work(counters, local);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["reports"] = static_cast<double>(lakh::lock_order::report_count());
}

void BM_ranked_mutex_lock_all(benchmark::State &state) {
  lakh::lock_order::set_mode(static_cast<lakh::lock_order::mode>(state.range(0)));
  std::uint64_t local = static_cast<std::uint64_t>(state.thread_index()) + 1;
  for (auto _ : state) {
    const auto g = lakh::lock_all(b_mu, a_mu);
    lakh_bench::small_work(counters, local);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["reports"] = static_cast<double>(lakh::lock_order::report_count());
}

constexpr auto off = static_cast<std::int64_t>(lakh::lock_order::mode::ignore);
constexpr auto on = static_cast<std::int64_t>(lakh::lock_order::mode::report);

} // namespace

BENCHMARK(BM_ranked_mutex_nested)
    ->ArgName("checker_on")
    ->Arg(off)
    ->Arg(on)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->UseRealTime();
BENCHMARK(BM_ranked_mutex_lock_all)
    ->ArgName("checker_on")
    ->Arg(off)
    ->Arg(on)
    ->Threads(1)
    ->Threads(2)
    ->Threads(4)
    ->UseRealTime();
