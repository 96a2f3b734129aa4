// A fixed pool of threads with a bounded queue (docs/worker_pool.md): results through futures,
// a deadline on the backpressure, and a long job cancelled by stop().
// Checks: every invoice comes back, a failure reaches its future, and stop() ends the loop.
// [doc:pool]
#include <lakh/worker_pool.hpp>
// [doc:pool]

#include <atomic>
#include <chrono>
#include <cstdio>
#include <future>
#include <numeric>
#include <stdexcept>
#include <vector>

using tenant_id = int;
struct invoice {
  tenant_id tenant;
  long cents;
};
invoice make_invoice(tenant_id t) {
  if (t == 13) {
    throw std::runtime_error("tenant 13 has no plan");
  }
  return {t, 100L * t};
}
long stored = 0, failed = 0;
const auto store = [](invoice i) { stored += i.cents; };
std::atomic<int> aggregated{0}, shed{0}, steps{0};
const auto aggregate = [](int) { ++aggregated; };
const auto shed_load = [] { ++shed; };

int main() {
  std::vector<tenant_id> tenants(20);
  std::iota(tenants.begin(), tenants.end(), 1); // tenants 1..20
  const int row = tenants.back();               // something to aggregate
  {
    // [doc:pool]
    lakh::worker_pool pool(8, 1024); // 8 threads, at most 1024 queued tasks

    // Results through futures; submit blocks while 1024 tasks are waiting.
    std::vector<std::future<invoice>> invoices;
    for (tenant_id t : tenants) {
      invoices.push_back(pool.submit(make_invoice, t));
    }
    for (auto &f : invoices) {
      try {
        store(f.get()); // rethrows make_invoice's exception, if any
      } catch (const std::runtime_error &) {
        ++failed;
      }
    }

    // Fire and forget, with a deadline on the backpressure.
    auto r = pool.submit_for([row] { aggregate(row); }, std::chrono::milliseconds(50));
    if (r.status == lakh::status::timeout) {
      shed_load(); // the pool stayed full for 50 ms
    }

    pool.shutdown(); // drain, join, rethrow a posted task's exception
    // [doc:pool]
  }
  lakh::worker_pool pool(1);
  // [doc:cancel]
  pool.post([](std::stop_token st) {
    while (!st.stop_requested()) { // a long job: runs until the pool stops it
      ++steps;
    }
  });
  // [doc:cancel]
  while (steps == 0) { // until the job has started (stop() drops it otherwise)
  }
  // [doc:cancel]
  std::size_t dropped = pool.stop(); // discards what has not started, stops the loop above
  // [doc:cancel]
  std::printf("stored %ld cents, %ld failed, %d aggregated, %d shed, %zu dropped\n", stored, failed,
              aggregated.load(), shed.load(), dropped);
  return stored == 100L * (210 - 13) && failed == 1 && aggregated + shed == 1 ? 0 : 1;
}
