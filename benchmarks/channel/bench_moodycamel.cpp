// moodycamel::BlockingConcurrentQueue bounded by a std::counting_semaphore of free slots
// (enqueue_bulk / wait_dequeue_bulk for batches).
#include "common.hpp"

#include <concurrentqueue/blockingconcurrentqueue.h>

#include <cstddef>
#include <cstdint>
#include <semaphore>

namespace {

using lakh_bench::capacity;

struct moodycamel_q {
  moodycamel::BlockingConcurrentQueue<std::uint64_t> q{capacity};
  std::counting_semaphore<> slots{static_cast<std::ptrdiff_t>(capacity)};
  void send(std::uint64_t v) {
    slots.acquire();
    q.enqueue(v);
  }
  std::uint64_t recv() {
    std::uint64_t v = 0;
    q.wait_dequeue(v);
    slots.release();
    return v;
  }
  void send_n(const std::uint64_t *p, std::size_t n) {
    for (std::size_t k = 0; k < n; ++k) {
      slots.acquire();
    }
    q.enqueue_bulk(p, n);
  }
  std::size_t recv_n(std::uint64_t *p, std::size_t max) {
    const std::size_t n = q.wait_dequeue_bulk(p, max);
    slots.release(static_cast<std::ptrdiff_t>(n));
    return n;
  }
};

} // namespace

BENCHMARK(lakh_bench::bm<moodycamel_q, false>)
    ->Name("item/moodycamel+sem")
    ->Apply(lakh_bench::channel_pairs);
BENCHMARK(lakh_bench::bm<moodycamel_q, true>)
    ->Name("batch256/moodycamel+sem")
    ->Apply(lakh_bench::channel_pairs);
