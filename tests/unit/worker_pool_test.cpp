// Tests for lakh::worker_pool and its move-only task type, lakh::detail::unique_function.
#include <lakh/detail/unique_function.hpp>
#include <lakh/worker_pool.hpp>

#include <support/sync.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using lakh::test::gate;
using lakh::test::wait_until_true;

/// Counts live instances, to prove that queued tasks' captures are destroyed.
struct tracked {
  static inline std::atomic<int> live{0};
  tracked() { ++live; }
  tracked(const tracked &) { ++live; }
  tracked(tracked &&) noexcept { ++live; }
  tracked &operator=(const tracked &) = default;
  tracked &operator=(tracked &&) = default;
  ~tracked() { --live; }
};

} // namespace

// --- detail::unique_function --------------------------------------------------------------

TEST_CASE("detail.unique_function.holds_move_only_callables_inline_and_on_heap") {
  using fn_type = lakh::detail::unique_function<int(int)>;
  auto p = std::make_unique<int>(40);
  fn_type small([q = std::move(p)](int x) { return *q + x; });
  CHECK(small(2) == 42);

  struct big {
    std::unique_ptr<int> q;
    char pad[128]{};
    int operator()(int x) const { return *q * x; }
  };
  fn_type large(big{std::make_unique<int>(6), {}});
  CHECK(large(7) == 42);

  fn_type moved = std::move(large);
  CHECK_FALSE(static_cast<bool>(large)); // NOLINT(bugprone-use-after-move): documented empty
  CHECK(moved(2) == 12);
  moved = std::move(small);
  CHECK(moved(0) == 40);
  moved = nullptr;
  CHECK_FALSE(static_cast<bool>(moved));
}

TEST_CASE("detail.unique_function.a_queue_slot_is_one_cache_line") {
  // worker_pool documents 64 bytes per slot.
  CHECK(sizeof(lakh::detail::unique_function<void(const std::stop_token &)>) == 64);
}

TEST_CASE("detail.unique_function.destroys_captures_exactly_once") {
  REQUIRE(tracked::live == 0);
  {
    lakh::detail::unique_function<void()> a([t = tracked{}] { static_cast<void>(t); });
    struct big_tracked {
      tracked t;
      char pad[100]{};
      void operator()() const {}
    };
    lakh::detail::unique_function<void()> b(big_tracked{});
    CHECK(tracked::live == 2);
    lakh::detail::unique_function<void()> c(std::move(a));
    lakh::detail::unique_function<void()> d(std::move(b));
    CHECK(tracked::live == 2);
    c = std::move(d);
    CHECK(tracked::live == 1);
  }
  CHECK(tracked::live == 0);
}

// --- construction ---------------------------------------------------------------------------

TEST_CASE("worker_pool.construct.rejects_zero_threads_or_capacity") {
  CHECK_THROWS_WITH_AS(lakh::worker_pool(0), "lakh::worker_pool: threads (0) must be at least 1",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(lakh::worker_pool(2, 0),
                       "lakh::worker_pool: queue_capacity (0) must be at least 1",
                       std::invalid_argument);
  lakh::worker_pool pool(3, 5);
  CHECK(pool.size() == 3);
  CHECK(pool.capacity() == 5);
  CHECK(lakh::worker_pool(2).capacity() == lakh::worker_pool::default_queue_capacity(2));
  CHECK(lakh::worker_pool().size() == lakh::worker_pool::default_thread_count());
}

// --- submit ---------------------------------------------------------------------------------

TEST_CASE("worker_pool.submit.results_arrive_through_futures" * doctest::timeout(30)) {
  for (std::size_t threads = 1; threads <= 8; ++threads) {
    CAPTURE(threads);
    lakh::worker_pool pool(threads, 16);
    std::vector<std::future<long>> futures;
    for (long i = 0; i < 300; ++i) {
      futures.push_back(pool.submit([](long a, long b) { return a * b; }, i, i));
    }
    long sum = 0;
    for (auto &f : futures) {
      sum += f.get();
    }
    CHECK(sum == 299L * 300 * 599 / 6); // sum of squares 0..299
  }
}

TEST_CASE("worker_pool.submit.moves_move_only_arguments_and_results" * doctest::timeout(30)) {
  lakh::worker_pool pool(2);
  auto f = pool.submit([](std::unique_ptr<int> p) { return std::make_unique<int>(*p + 1); },
                       std::make_unique<int>(41));
  CHECK(*f.get() == 42);
}

TEST_CASE("worker_pool.submit.exception_is_stored_in_the_future" * doctest::timeout(30)) {
  lakh::worker_pool pool(2);
  auto f = pool.submit([]() -> int { throw std::runtime_error("boom"); });
  // A submit's exception is not the pool's: wait_idle() has nothing to rethrow. (Waiting
  // before get() also lets the worker drop its reference to the exception first; see the
  // TSan note in docs/worker_pool.md.)
  pool.wait_idle();
  CHECK_THROWS_WITH_AS(f.get(), "boom", std::runtime_error);
  CHECK(pool.dropped_exceptions() == 0);
}

TEST_CASE("worker_pool.submit.task_taking_a_token_gets_the_pools_first" * doctest::timeout(30)) {
  lakh::worker_pool pool(1);
  auto f = pool.submit(
      [](std::stop_token st, int x) { return st.stop_possible() && !st.stop_requested() ? x : -1; },
      7);
  CHECK(f.get() == 7);
  auto r = pool.try_submit([](std::stop_token st) { return st.stop_possible(); });
  REQUIRE(r.status == lakh::status::ok);
  CHECK(r.future.get());
}

TEST_CASE("worker_pool.fifo.one_worker_runs_tasks_in_submission_order" * doctest::timeout(30)) {
  lakh::worker_pool pool(1, 8);
  std::vector<int> order; // only the single worker touches it
  for (int i = 0; i < 100; ++i) {
    pool.post([&order, i] { order.push_back(i); });
  }
  pool.wait_idle();
  REQUIRE(order.size() == 100);
  for (int i = 0; i < 100; ++i) {
    CHECK(order[static_cast<std::size_t>(i)] == i);
  }
}

// --- backpressure ---------------------------------------------------------------------------

TEST_CASE("worker_pool.backpressure.exactly_capacity_tasks_queue_behind_busy_workers" *
          doctest::timeout(30)) {
  for (std::size_t threads : {1U, 2U, 4U}) {
    for (std::size_t capacity : {1U, 3U, 8U}) {
      CAPTURE(threads);
      CAPTURE(capacity);
      lakh::worker_pool pool(threads, capacity);
      gate release;
      std::atomic<std::size_t> started{0};
      std::atomic<std::size_t> ran{0};
      std::vector<std::future<void>> blockers;
      for (std::size_t i = 0; i < threads; ++i) {
        blockers.push_back(pool.submit([&] {
          ++started;
          release.wait();
        }));
      }
      wait_until_true([&] { return started == threads; }); // every worker is now busy

      std::vector<std::future<void>> queued;
      for (std::size_t i = 0; i < capacity; ++i) {
        auto r = pool.try_submit([&] { ++ran; });
        REQUIRE(r.status == lakh::status::ok);
        queued.push_back(std::move(r.future));
      }
      CHECK(pool.pending() == capacity);
      auto full = pool.try_submit([&] { ++ran; });
      CHECK(full.status == lakh::status::full);
      CHECK_FALSE(full.future.valid());
      CHECK(pool.try_post([&] { ++ran; }) == lakh::status::full);
      CHECK(pool.submit_for([&] { ++ran; }, 1ms).status == lakh::status::timeout);
      CHECK(pool.submit_until([&] { ++ran; }, std::chrono::steady_clock::now()).status ==
            lakh::status::timeout);
      std::stop_source cancelled;
      cancelled.request_stop();
      CHECK(pool.submit([&] { ++ran; }, cancelled.get_token()).status == lakh::status::cancelled);
      CHECK(pool.post([&] { ++ran; }, cancelled.get_token()) == lakh::status::cancelled);
      CHECK(pool.pending() == capacity); // the refused ones never entered the queue

      // A blocking submit waits for a slot; it completes once a worker frees one.
      std::atomic<bool> submitted{false};
      std::jthread producer([&] {
        pool.submit([&] { ++ran; }).get();
        submitted = true;
      });
      std::this_thread::sleep_for(2ms);
      CHECK(pool.pending() == capacity); // still full: the producer is waiting, not queued
      release.open();
      producer.join();
      CHECK(submitted);
      for (auto &f : queued) {
        f.get();
      }
      pool.wait_idle();
      CHECK(ran == capacity + 1);
    }
  }
}

TEST_CASE("worker_pool.backpressure.stop_token_releases_a_blocked_submit" * doctest::timeout(30)) {
  lakh::worker_pool pool(1, 1);
  gate release;
  std::atomic<bool> started{false};
  auto blocker = pool.submit([&] {
    started = true;
    release.wait();
  });
  wait_until_true([&] { return started.load(); });
  REQUIRE(pool.try_post([] {}) == lakh::status::ok); // the queue is now full
  std::stop_source source;
  std::promise<lakh::status> outcome;
  std::jthread producer([&] { outcome.set_value(pool.submit([] {}, source.get_token()).status); });
  source.request_stop();
  CHECK(outcome.get_future().get() == lakh::status::cancelled);
  release.open();
  pool.shutdown();
}

// --- post and exceptions --------------------------------------------------------------------

TEST_CASE("worker_pool.post.first_exception_is_rethrown_by_wait_idle_once" * doctest::timeout(30)) {
  lakh::worker_pool pool(1); // one worker: "first" is the first posted
  std::atomic<int> ran{0};
  pool.post([&] {
    ++ran;
    throw std::runtime_error("first");
  });
  pool.post([&] {
    ++ran;
    throw std::runtime_error("second");
  });
  pool.post([&] {
    ++ran;
    throw std::logic_error("third");
  });
  pool.post([&] { ++ran; });
  CHECK_THROWS_WITH_AS(pool.wait_idle(), "first", std::runtime_error);
  CHECK(ran == 4);
  CHECK(pool.dropped_exceptions() == 2);
  CHECK_NOTHROW(pool.wait_idle());
  pool.post([] { throw std::runtime_error("late"); });
  CHECK_THROWS_WITH_AS(pool.shutdown(), "late", std::runtime_error);
  CHECK_NOTHROW(pool.shutdown());
}

TEST_CASE("worker_pool.wait_idle.from_a_task_of_the_same_pool_is_a_usage_error" *
          doctest::timeout(30)) {
  lakh::worker_pool pool(2);
  auto f = pool.submit([&pool] { pool.wait_idle(); });
  auto g = pool.submit([&pool] { static_cast<void>(pool.stop()); });
  pool.wait_idle(); // see the TSan note in docs/worker_pool.md
  CHECK_THROWS_AS(f.get(), lakh::usage_error);
  CHECK_THROWS_AS(g.get(), lakh::usage_error);
  CHECK_FALSE(pool.is_closed());
}

TEST_CASE("worker_pool.wait_idle.stop_token_cancels_the_wait" * doctest::timeout(30)) {
  lakh::worker_pool pool(1);
  gate release;
  pool.post([&] { release.wait(); });
  std::stop_source source;
  source.request_stop();
  CHECK(pool.wait_idle(source.get_token()) == lakh::status::cancelled);
  release.open();
  CHECK(pool.wait_idle(std::stop_token{}) == lakh::status::ok);
}

// --- shutdown and stop ----------------------------------------------------------------------

TEST_CASE("worker_pool.shutdown.drains_everything_queued" * doctest::timeout(30)) {
  for (std::size_t threads = 1; threads <= 8; threads *= 2) {
    CAPTURE(threads);
    lakh::worker_pool pool(threads, 1000);
    std::atomic<int> ran{0};
    gate release;
    pool.post([&] { release.wait(); });
    for (int i = 0; i < 999; ++i) {
      pool.post([&] { ++ran; });
    }
    release.open();
    pool.shutdown();
    CHECK(ran == 999);
    CHECK(pool.is_closed());
    CHECK(pool.pending() == 0);
    CHECK_THROWS_AS(pool.post([] {}), lakh::usage_error);
    CHECK_THROWS_AS(static_cast<void>(pool.submit([] { return 1; })), lakh::usage_error);
    CHECK(pool.try_submit([] {}).status == lakh::status::closed);
    CHECK(pool.try_post([] {}) == lakh::status::closed);
    CHECK(pool.submit_for([] {}, 1ms).status == lakh::status::closed);
    CHECK_NOTHROW(pool.shutdown()); // idempotent
    CHECK(pool.stop() == 0);        // nothing left to cancel
  }
}

TEST_CASE("worker_pool.shutdown.wakes_submitters_blocked_on_a_full_queue" * doctest::timeout(30)) {
  lakh::worker_pool pool(1, 1);
  gate release;
  std::atomic<bool> started{false};
  pool.post([&] {
    started = true;
    release.wait();
  });
  wait_until_true([&] { return started.load(); });
  REQUIRE(pool.try_post([] {}) == lakh::status::ok);
  std::promise<lakh::status> outcome;
  std::jthread producer([&] { outcome.set_value(pool.submit([] {}, std::stop_token{}).status); });
  std::jthread closer([&] { pool.shutdown(); });
  auto result = outcome.get_future();
  // The producer either got the freed slot before the close, or was told closed.
  release.open();
  lakh::status const s = result.get();
  CHECK((s == lakh::status::ok || s == lakh::status::closed));
}

TEST_CASE("worker_pool.stop.cancels_pending_and_returns_the_count" * doctest::timeout(30)) {
  for (std::size_t threads : {1U, 2U, 4U}) {
    CAPTURE(threads);
    REQUIRE(tracked::live == 0);
    lakh::worker_pool pool(threads, 64);
    std::atomic<std::size_t> started{0};
    std::atomic<std::size_t> saw_stop{0};
    std::vector<std::future<void>> running;
    for (std::size_t i = 0; i < threads; ++i) {
      running.push_back(pool.submit([&](std::stop_token st) {
        ++started;
        while (!st.stop_requested()) {
          std::this_thread::sleep_for(100us);
        }
        ++saw_stop;
      }));
    }
    wait_until_true([&] { return started == threads; });
    std::size_t const queued = 40;
    std::vector<std::future<int>> pending;
    for (std::size_t i = 0; i < queued; ++i) {
      pending.push_back(pool.submit([&, t = tracked{}] {
        static_cast<void>(t);
        ++started;
        return 1;
      }));
    }
    CHECK(tracked::live == static_cast<int>(queued));
    std::size_t const submitted = threads + queued;
    std::size_t const cancelled = pool.stop();
    CHECK(cancelled == queued);
    CHECK(cancelled == submitted - started);
    CHECK(saw_stop == threads); // running tasks saw the pool's stop token
    CHECK(tracked::live == 0);  // the discarded tasks' captures were destroyed
    for (auto &f : running) {
      CHECK_NOTHROW(f.get());
    }
    for (auto &f : pending) {
      try {
        static_cast<void>(f.get());
        FAIL("a cancelled task's future must not hold a value");
      } catch (const std::future_error &e) {
        CHECK(e.code() == std::future_errc::broken_promise);
      }
    }
    CHECK(pool.get_stop_token().stop_requested());
    CHECK(pool.try_post([] {}) == lakh::status::closed);
  }
}

TEST_CASE("worker_pool.stop.hurries_a_shutdown_in_progress" * doctest::timeout(30)) {
  lakh::worker_pool pool(1, 100);
  std::atomic<bool> started{false};
  pool.post([&](std::stop_token st) {
    started = true;
    while (!st.stop_requested()) { // only stop() ends this task
      std::this_thread::sleep_for(100us);
    }
  });
  wait_until_true([&] { return started.load(); });
  std::atomic<int> ran{0};
  for (int i = 0; i < 50; ++i) {
    pool.post([&] { ++ran; });
  }
  std::atomic<bool> shut{false};
  std::jthread closer([&] {
    pool.shutdown(); // would drain forever: the first task waits for stop
    shut = true;
  });
  wait_until_true([&] { return pool.is_closed(); });
  CHECK(pool.stop() == 50);
  closer.join();
  CHECK(shut);
  CHECK(ran == 0);
}

TEST_CASE("worker_pool.shutdown.concurrent_callers_all_return_after_the_join" *
          doctest::timeout(30)) {
  for (int callers : {2, 4}) {
    CAPTURE(callers);
    lakh::worker_pool pool(2, 64);
    std::atomic<int> ran{0};
    for (int i = 0; i < 64; ++i) {
      pool.post([&] {
        std::this_thread::sleep_for(10us);
        ++ran;
      });
    }
    std::atomic<int> returned_after_drain{0};
    {
      std::vector<std::jthread> closers;
      for (int c = 0; c < callers; ++c) {
        closers.emplace_back([&] {
          pool.shutdown();
          if (ran == 64 && pool.running() == 0) {
            ++returned_after_drain;
          }
        });
      }
    }
    CHECK(returned_after_drain == callers);
  }
}

TEST_CASE("worker_pool.destructor.runs_queued_work_before_returning" * doctest::timeout(30)) {
  std::atomic<int> ran{0};
  {
    lakh::worker_pool pool(2, 256);
    for (int i = 0; i < 200; ++i) {
      pool.post([&] { ++ran; });
    }
  }
  CHECK(ran == 200);
}

// --- concurrency sweep ----------------------------------------------------------------------

TEST_CASE("worker_pool.stress.many_producers_every_task_runs_exactly_once" * doctest::timeout(60)) {
  for (std::size_t threads : {1U, 2U, 3U, 8U}) {
    for (std::size_t producers : {1U, 4U}) {
      CAPTURE(threads);
      CAPTURE(producers);
      lakh::worker_pool pool(threads, 4); // tiny queue: producers block often
      constexpr long per_producer = 2000;
      std::atomic<long> sum{0};
      std::atomic<long> count{0};
      std::atomic<long> refused{0};
      std::vector<std::jthread> ps;
      for (std::size_t p = 0; p < producers; ++p) {
        ps.emplace_back([&, p] {
          for (long i = 0; i < per_producer; ++i) {
            long const v = static_cast<long>(p) * per_producer + i;
            if (i % 2 == 0) {
              pool.post([&, v] {
                sum += v;
                ++count;
              });
            } else {
              auto r = pool.submit(
                  [&, v] {
                    sum += v;
                    ++count;
                  },
                  std::stop_token{});
              if (r.status != lakh::status::ok) {
                ++refused; // asserted on the test's thread below
              }
            }
          }
        });
      }
      ps.clear(); // join the producers
      pool.wait_idle();
      const long n = static_cast<long>(producers) * per_producer;
      CHECK(refused == 0);
      CHECK(count == n);
      CHECK(sum == n * (n - 1) / 2);
    }
  }
}
