// Peer: plain std::mutex, nested std::lock_guard (A then B): the baseline for lock_order.
// Also std::scoped_lock(A, B), the standard's deadlock-avoiding multi-lock.
#include "common.hpp"

#include <mutex>

namespace {

std::mutex a_mu;
std::mutex b_mu;
lakh_bench::guarded_counters counters;

void BM_std_mutex_nested(benchmark::State &state) {
  lakh_bench::run_locked(state, counters, [](auto &&work) {
    const std::lock_guard ga(a_mu);
    const std::lock_guard gb(b_mu);
    work();
  });
}

void BM_std_scoped_lock(benchmark::State &state) {
  lakh_bench::run_locked(state, counters, [](auto &&work) {
    const std::scoped_lock g(a_mu, b_mu);
    work();
  });
}

} // namespace

BENCHMARK(BM_std_mutex_nested)->Apply(lakh_bench::work_sizes);
BENCHMARK(BM_std_scoped_lock)->Apply(lakh_bench::work_sizes);
