#pragma once
// bench_channel (one file per peer, bench_<peer>.cpp): P producers send N items each through a
// bounded queue of capacity 1024 to C consumers, per item and in batches of 256. Items/s counts
// items delivered.
//   lakh        lakh::channel<uint64_t> (send/recv; send_batch/recv_batch)
//   moodycamel  moodycamel::BlockingConcurrentQueue bounded by std::counting_semaphore
//               (enqueue_bulk / wait_dequeue_bulk for batches)
//   boost_lf    boost::lockfree::queue<uint64_t> (fixed capacity), spin + yield when full/empty
//   tbb         tbb::concurrent_bounded_queue (blocking push/pop)
//   mutex_cv    std::deque + std::mutex + two std::condition_variable
// Every run checks that the consumers received exactly the sum that was sent.
//
// This header: the harness every peer runs, over a queue type Q with send/recv per item and
// send_n/recv_n per batch. bench_<peer>.cpp defines its Q and registers item/<peer> and
// batch256/<peer>, each with channel_pairs.
#include "../common.hpp"

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

namespace lakh_bench {

constexpr std::size_t capacity = 1024;
constexpr std::size_t batch = 256;
constexpr std::uint64_t items_per_producer = 200'000;
constexpr std::uint64_t stop_item = ~std::uint64_t{0};

// Runs P producers and C consumers over queue Q; `send(q, v)`/`recv(q)` per item, or
// `send_n(q, buf, n)` / `recv_n(q, buf, max)` per batch. Consumers stop on stop_item, one
// sent per consumer once every item has been taken (a queue that is FIFO only per producer,
// as moodycamel's, could otherwise hand out a stop_item before the producers' last items).
template <class Q, bool Batched> std::uint64_t run(Q &q, int producers, int consumers) {
  std::atomic<std::uint64_t> received{0};
  struct alignas(64) taken_count { // items taken by one consumer, written only by it
    std::atomic<std::uint64_t> n{0};
  };
  std::vector<taken_count> taken(static_cast<std::size_t>(consumers));
  {
    std::vector<std::jthread> cons;
    for (int c = 0; c < consumers; ++c) {
      cons.emplace_back([&, &mine = taken[static_cast<std::size_t>(c)].n] {
        std::uint64_t sum = 0;
        std::uint64_t items = 0;
        std::vector<std::uint64_t> buf(batch);
        for (bool more = true; more;) {
          if constexpr (Batched) {
            const std::size_t n = q.recv_n(buf.data(), batch);
            std::size_t markers = 0;
            for (std::size_t k = 0; k < n; ++k) {
              if (buf[k] == stop_item) {
                ++markers;
              } else {
                sum += buf[k];
                ++items;
              }
            }
            mine.store(items, std::memory_order_relaxed);
            if (markers > 0) {
              // Markers are sent after every item, so only markers can follow one; pass on
              // those meant for the other consumers.
              std::vector<std::uint64_t> rest(markers - 1, stop_item);
              if (!rest.empty()) {
                q.send_n(rest.data(), rest.size());
              }
              more = false;
            }
          } else {
            const std::uint64_t v = q.recv();
            if (v == stop_item) {
              more = false;
            } else {
              sum += v;
              mine.store(++items, std::memory_order_relaxed);
            }
          }
        }
        received.fetch_add(sum);
      });
    }
    {
      std::vector<std::jthread> prods;
      for (int p = 0; p < producers; ++p) {
        prods.emplace_back([&] {
          std::vector<std::uint64_t> buf(batch);
          for (std::uint64_t i = 1; i <= items_per_producer;) {
            if constexpr (Batched) {
              std::size_t n = 0;
              for (; n < batch && i <= items_per_producer; ++n, ++i) {
                buf[n] = i;
              }
              q.send_n(buf.data(), n);
            } else {
              q.send(i++);
            }
          }
        });
      }
    }
    const std::uint64_t total = static_cast<std::uint64_t>(producers) * items_per_producer;
    for (;;) {
      std::uint64_t n = 0;
      for (const auto &t : taken) {
        n += t.n.load(std::memory_order_relaxed);
      }
      if (n == total) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
    for (int c = 0; c < consumers; ++c) {
      std::uint64_t s = stop_item;
      if constexpr (Batched) {
        q.send_n(&s, 1);
      } else {
        q.send(s);
      }
    }
  }
  return received.load();
}

template <class Q, bool Batched> void bm(benchmark::State &state) {
  const auto pc = static_cast<int>(state.range(0));
  const std::uint64_t expected =
      static_cast<std::uint64_t>(pc) * items_per_producer * (items_per_producer + 1) / 2;
  for (auto _ : state) {
    Q q;
    if (run<Q, Batched>(q, pc, pc) != expected) {
      state.SkipWithError("items lost or duplicated");
      break;
    }
  }
  state.counters["items/s"] = benchmark::Counter(static_cast<double>(state.iterations()) * pc *
                                                     static_cast<double>(items_per_producer),
                                                 benchmark::Counter::kIsRate);
}

/// P producers and P consumers, P = 1, 2, 4.
inline void channel_pairs(benchmark::internal::Benchmark *b) {
  b->ArgName("PxC")->Arg(1)->Arg(2)->Arg(4)->UseRealTime()->Unit(benchmark::kMillisecond);
}

} // namespace lakh_bench
