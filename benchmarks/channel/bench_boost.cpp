// boost::lockfree::queue<uint64_t> of fixed capacity: spin + yield when full or empty.
#include "common.hpp"

#include <boost/lockfree/queue.hpp>

#include <cstddef>
#include <cstdint>
#include <thread>

namespace {

using lakh_bench::capacity;

struct boost_q {
  boost::lockfree::queue<std::uint64_t, boost::lockfree::capacity<capacity>> q;
  void send(std::uint64_t v) {
    while (!q.push(v)) {
      std::this_thread::yield();
    }
  }
  std::uint64_t recv() {
    std::uint64_t v = 0;
    while (!q.pop(v)) {
      std::this_thread::yield();
    }
    return v;
  }
  void send_n(const std::uint64_t *p, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
      send(p[k]);
    }
  }
  std::size_t recv_n(std::uint64_t *p, std::size_t max) {
    p[0] = recv();
    std::size_t n = 1;
    while (n < max && q.pop(p[n])) {
      ++n;
    }
    return n;
  }
};

} // namespace

BENCHMARK(lakh_bench::bm<boost_q, false>)
    ->Name("item/boost_lockfree")
    ->Apply(lakh_bench::channel_pairs);
BENCHMARK(lakh_bench::bm<boost_q, true>)
    ->Name("batch256/boost_lockfree")
    ->Apply(lakh_bench::channel_pairs);
