// boost::asio::thread_pool: post (a std::latch counts completions, since the pool has no
// "wait until idle" short of join) and post(use_future(...)) (a std::future per task).
#include "common.hpp"

#include <utility> // before Asio: GCC 12 + C++20 needs it (std::exchange in Asio's headers)

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>

#include <benchmark/benchmark.h>

#include <latch>

namespace {

void post_and_wait(boost::asio::thread_pool &pool, std::int64_t n) {
  std::latch done(n);
  for (std::int64_t i = 0; i < n; ++i) {
    boost::asio::post(pool, [&done] {
      lakh_bench::tiny_task();
      done.count_down();
    });
  }
  done.wait();
}

void BM_asio_pool_post_stream_1M(benchmark::State &state) {
  boost::asio::thread_pool pool(lakh_bench::hardware_threads());
  for (auto _ : state) {
    post_and_wait(pool, lakh_bench::stream_tasks);
  }
  state.SetItemsProcessed(state.iterations() * lakh_bench::stream_tasks);
}
BENCHMARK(BM_asio_pool_post_stream_1M)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_asio_pool_post_batch(benchmark::State &state) {
  boost::asio::thread_pool pool(lakh_bench::hardware_threads());
  std::int64_t const n = state.range(0);
  for (auto _ : state) {
    post_and_wait(pool, n);
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_asio_pool_post_batch)->Apply(lakh_bench::batch_sizes);

void BM_asio_pool_use_future_batch(benchmark::State &state) {
  boost::asio::thread_pool pool(lakh_bench::hardware_threads());
  lakh_bench::future_batches(state, [&pool] {
    return boost::asio::post(pool, boost::asio::use_future(lakh_bench::tiny_task));
  });
}
BENCHMARK(BM_asio_pool_use_future_batch)->Apply(lakh_bench::batch_sizes);

} // namespace
