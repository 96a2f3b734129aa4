// boost::asio::thread_pool: post (a std::latch counts completions, since the pool has no
// "wait until idle" short of join) and post(use_future(...)) (a std::future per task).
#include "common.hpp"

#include <utility> // before Asio: GCC 12 + C++20 needs it (std::exchange in Asio's headers)

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_future.hpp>

#include <benchmark/benchmark.h>

#include <future>
#include <latch>
#include <vector>

namespace {

void post_and_wait(boost::asio::thread_pool &pool, std::int64_t n) {
  std::latch done(n);
  for (std::int64_t i = 0; i < n; ++i) {
    boost::asio::post(pool, [&done] {
      bench::tiny_task();
      done.count_down();
    });
  }
  done.wait();
}

void BM_asio_pool_post_stream_1M(benchmark::State &state) {
  boost::asio::thread_pool pool(bench::bench_threads());
  for (auto _ : state) {
    post_and_wait(pool, bench::stream_tasks);
  }
  state.SetItemsProcessed(state.iterations() * bench::stream_tasks);
}
BENCHMARK(BM_asio_pool_post_stream_1M)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_asio_pool_post_batch(benchmark::State &state) {
  boost::asio::thread_pool pool(bench::bench_threads());
  std::int64_t const n = state.range(0);
  for (auto _ : state) {
    post_and_wait(pool, n);
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_asio_pool_post_batch)->Apply(bench::batch_sizes);

void BM_asio_pool_use_future_batch(benchmark::State &state) {
  boost::asio::thread_pool pool(bench::bench_threads());
  std::int64_t const n = state.range(0);
  std::vector<std::future<void>> futures;
  futures.reserve(static_cast<std::size_t>(n));
  for (auto _ : state) {
    for (std::int64_t i = 0; i < n; ++i) {
      futures.push_back(boost::asio::post(pool, boost::asio::use_future(bench::tiny_task)));
    }
    for (auto &f : futures) {
      f.get();
    }
    futures.clear();
  }
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_asio_pool_use_future_batch)->Apply(bench::batch_sizes);

} // namespace
