// lakh::ranked_mutex under the same workload, with the lock-order checker off (ignore) and
// on (report; no report is ever made, since the order is consistent), nested (lakh::lock_guard)
// and via lakh::lock_all.
#include "common.hpp"

#include <lakh/lock_order.hpp>

namespace {

lakh::ranked_mutex a_mu(1, "bench.A");
lakh::ranked_mutex b_mu(2, "bench.B");
lakh_bench::guarded_counters counters;

/// Every thread sets the same mode before its loop (idempotent), so no iteration runs in
/// another mode.
void set_checker(const benchmark::State &state) {
  lakh::lock_order::set_mode(state.range(1) != 0 ? lakh::lock_order::mode::report
                                                 : lakh::lock_order::mode::ignore);
}

void BM_ranked_mutex_nested(benchmark::State &state) {
  set_checker(state);
  lakh_bench::run_locked(state, counters, [](auto &&work) {
    const lakh::lock_guard ga(a_mu);
    const lakh::lock_guard gb(b_mu);
    work();
  });
  state.counters["reports"] = static_cast<double>(lakh::lock_order::report_count());
}

void BM_ranked_mutex_lock_all(benchmark::State &state) {
  set_checker(state);
  lakh_bench::run_locked(state, counters, [](auto &&work) {
    const auto g = lakh::lock_all(b_mu, a_mu);
    work();
  });
  state.counters["reports"] = static_cast<double>(lakh::lock_order::report_count());
}

} // namespace

BENCHMARK(BM_ranked_mutex_nested)->Apply(lakh_bench::work_sizes_and_checker);
BENCHMARK(BM_ranked_mutex_lock_all)->Apply(lakh_bench::work_sizes_and_checker);
