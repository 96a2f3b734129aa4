// bench_channel: P producers send N items each through a bounded queue of capacity 1024 to C
// consumers, per item and in batches of 256. Items/s counts items delivered.
//   lakh        lakh::channel<uint64_t> (send/recv; send_batch/recv_batch)
//   moodycamel  moodycamel::BlockingConcurrentQueue bounded by std::counting_semaphore
//               (enqueue_bulk / wait_dequeue_bulk for batches)
//   boost_lf    boost::lockfree::queue<uint64_t> (fixed capacity), spin + yield when full/empty
//   tbb         tbb::concurrent_bounded_queue (blocking push/pop)
//   mutex_cv    std::deque + std::mutex + two std::condition_variable
// Every run checks that the consumers received exactly the sum that was sent.
#include <lakh/channel.hpp>

#include <benchmark/benchmark.h>
#include <boost/lockfree/queue.hpp>
#include <concurrentqueue/blockingconcurrentqueue.h>
#include <tbb/concurrent_queue.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <semaphore>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t capacity = 1024;
constexpr std::size_t batch = 256;
constexpr std::uint64_t items_per_producer = 200'000;
constexpr std::uint64_t stop_item = ~std::uint64_t{0};

// Runs P producers and C consumers over queue Q; `send(q, v)`/`recv(q)` per item, or
// `send_n(q, buf, n)` / `recv_n(q, buf, max)` per batch. Consumers stop on stop_item, one
// sent per consumer after the producers finish.
template <class Q, bool Batched> std::uint64_t run(Q &q, int producers, int consumers) {
  std::atomic<std::uint64_t> received{0};
  {
    std::vector<std::jthread> cons;
    for (int c = 0; c < consumers; ++c) {
      cons.emplace_back([&] {
        std::uint64_t sum = 0;
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
              }
            }
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

struct lakh_q {
  lakh::channel<std::uint64_t> ch{capacity};
  void send(std::uint64_t v) { (void)ch.send(v); }
  std::uint64_t recv() { return *ch.recv(); }
  void send_n(const std::uint64_t *p, std::size_t n) {
    thread_local std::vector<std::uint64_t> in;
    in.assign(p, p + n);
    (void)ch.send_batch(in);
  }
  std::size_t recv_n(std::uint64_t *p, std::size_t max) {
    thread_local std::vector<std::uint64_t> out;
    out.clear();
    const auto r = ch.recv_batch(out, max);
    std::copy(out.begin(), out.end(), p);
    return r.count;
  }
};

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

void pairs(benchmark::internal::Benchmark *b) {
  b->ArgName("PxC")->Arg(1)->Arg(2)->Arg(4)->UseRealTime()->Unit(benchmark::kMillisecond);
}

} // namespace

BENCHMARK(bm<lakh_q, false>)->Name("item/lakh")->Apply(pairs);
BENCHMARK(bm<moodycamel_q, false>)->Name("item/moodycamel+sem")->Apply(pairs);
BENCHMARK(bm<boost_q, false>)->Name("item/boost_lockfree")->Apply(pairs);
BENCHMARK(bm<tbb_q, false>)->Name("item/tbb_bounded")->Apply(pairs);
BENCHMARK(bm<mutex_cv_q, false>)->Name("item/mutex_cv")->Apply(pairs);
BENCHMARK(bm<lakh_q, true>)->Name("batch256/lakh")->Apply(pairs);
BENCHMARK(bm<moodycamel_q, true>)->Name("batch256/moodycamel+sem")->Apply(pairs);
BENCHMARK(bm<boost_q, true>)->Name("batch256/boost_lockfree")->Apply(pairs);
BENCHMARK(bm<tbb_q, true>)->Name("batch256/tbb_bounded")->Apply(pairs);
BENCHMARK(bm<mutex_cv_q, true>)->Name("batch256/mutex_cv")->Apply(pairs);
