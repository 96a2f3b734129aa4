// The standard library alone: std::deque + std::mutex + two std::condition_variable.
#include "common.hpp"

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>

namespace {

using lakh_bench::capacity;

struct mutex_cv_q {
  std::mutex mu;
  std::condition_variable not_full, not_empty;
  std::deque<std::uint64_t> q;
  void send_n(const std::uint64_t *p, std::size_t n) {
    std::size_t k = 0;
    while (k < n) {
      std::unique_lock lk(mu);
      not_full.wait(lk, [&] { return q.size() < capacity; });
      for (; k < n && q.size() < capacity; ++k) {
        q.push_back(p[k]);
      }
      lk.unlock();
      not_empty.notify_all();
    }
  }
  std::size_t recv_n(std::uint64_t *p, std::size_t max) {
    std::unique_lock lk(mu);
    not_empty.wait(lk, [&] { return !q.empty(); });
    std::size_t n = 0;
    for (; n < max && !q.empty(); ++n) {
      p[n] = q.front();
      q.pop_front();
    }
    lk.unlock();
    not_full.notify_all();
    return n;
  }
  void send(std::uint64_t v) { send_n(&v, 1); }
  std::uint64_t recv() {
    std::uint64_t v = 0;
    (void)recv_n(&v, 1);
    return v;
  }
};

} // namespace

BENCHMARK(lakh_bench::bm<mutex_cv_q, false>)
    ->Name("item/mutex_cv")
    ->Apply(lakh_bench::channel_pairs);
BENCHMARK(lakh_bench::bm<mutex_cv_q, true>)
    ->Name("batch256/mutex_cv")
    ->Apply(lakh_bench::channel_pairs);
