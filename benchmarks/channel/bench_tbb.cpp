// tbb::concurrent_bounded_queue: blocking push/pop.
#include "common.hpp"

#include <tbb/concurrent_queue.h>

#include <cstddef>
#include <cstdint>

namespace {

using lakh_bench::capacity;

struct tbb_q {
  tbb::concurrent_bounded_queue<std::uint64_t> q;
  tbb_q() { q.set_capacity(capacity); }
  void send(std::uint64_t v) { q.push(v); }
  std::uint64_t recv() {
    std::uint64_t v = 0;
    q.pop(v);
    return v;
  }
  void send_n(const std::uint64_t *p, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
      q.push(p[k]);
    }
  }
  std::size_t recv_n(std::uint64_t *p, std::size_t max) {
    q.pop(p[0]);
    std::size_t n = 1;
    while (n < max && q.try_pop(p[n])) {
      ++n;
    }
    return n;
  }
};

} // namespace

BENCHMARK(lakh_bench::bm<tbb_q, false>)->Name("item/tbb_bounded")->Apply(lakh_bench::channel_pairs);
BENCHMARK(lakh_bench::bm<tbb_q, true>)
    ->Name("batch256/tbb_bounded")
    ->Apply(lakh_bench::channel_pairs);
