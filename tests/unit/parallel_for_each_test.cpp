// lakh::parallel_for_each: a channel consumed by a worker_pool's threads.
#include <lakh/parallel_for_each.hpp>

#include <support/tracked.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("parallel_for_each.every_item_exactly_once" * doctest::timeout(60)) {
  for (std::size_t consumers : {1U, 2U, 4U, 8U}) {
    CAPTURE(consumers);
    lakh::worker_pool pool(consumers);
    lakh::channel<std::uint64_t> ch(16);
    constexpr std::uint64_t n = 20'000;
    std::jthread producer([&] {
      for (std::uint64_t i = 1; i <= n; ++i) {
        REQUIRE(ch.send(i) == lakh::status::ok);
      }
      ch.close();
    });
    std::vector<std::atomic<int>> seen(n + 1);
    std::atomic<std::uint64_t> sum{0};
    auto st = lakh::parallel_for_each(pool, ch, [&](std::uint64_t v) {
      seen[v].fetch_add(1);
      sum.fetch_add(v);
    });
    CHECK(st == lakh::status::ok);
    CHECK(sum.load() == n * (n + 1) / 2);
    int wrong = 0;
    for (std::uint64_t i = 1; i <= n; ++i) {
      wrong += seen[i].load() != 1 ? 1 : 0;
    }
    CHECK(wrong == 0);
  }
}

TEST_CASE("parallel_for_each.first_exception_stops_closes_and_is_rethrown" * doctest::timeout(60)) {
  lakh::worker_pool pool(4);
  lakh::channel<int> ch(4);
  lakh::status producer_status = lakh::status::ok;
  std::jthread producer([&] {
    for (int i = 0;; ++i) {
      producer_status = ch.send(i);
      if (producer_status != lakh::status::ok) {
        return; // the failed run closed the channel: a blocked producer wakes up
      }
    }
  });
  std::atomic<int> after_stop{0};
  CHECK_THROWS_WITH_AS(lakh::parallel_for_each(pool, ch,
                                               [&](int v, std::stop_token st) {
                                                 if (st.stop_requested()) {
                                                   after_stop.fetch_add(1);
                                                 }
                                                 if (v == 100) {
                                                   throw std::runtime_error("item 100");
                                                 }
                                               }),
                       "item 100", std::runtime_error);
  producer.join();
  CHECK(producer_status == lakh::status::closed);
  CHECK(ch.is_closed());
  CHECK(after_stop.load() <= 4); // at most the items already in hand when stop came
}

TEST_CASE("parallel_for_each.stop_token_and_pool_stop_cancel" * doctest::timeout(60)) {
  SUBCASE("caller's token") {
    lakh::worker_pool pool(2);
    lakh::channel<int> ch(4); // never closed: only stop ends the run
    std::stop_source stop;
    std::jthread stopper([&] {
      std::this_thread::sleep_for(20ms);
      stop.request_stop();
    });
    CHECK(lakh::parallel_for_each(
              pool, ch, [](int) {}, stop.get_token()) == lakh::status::cancelled);
  }
  SUBCASE("pool.stop()") {
    lakh::worker_pool pool(2);
    lakh::channel<int> ch(4);
    std::jthread stopper([&] {
      std::this_thread::sleep_for(20ms);
      (void)pool.stop();
    });
    CHECK(lakh::parallel_for_each(pool, ch, [](int) {}) == lakh::status::cancelled);
  }
}

TEST_CASE("parallel_for_each.throwing_receive_stops_closes_and_is_rethrown" *
          doctest::timeout(30)) {
  // The exception comes from T's move inside recv, not from fn: it must end the run like
  // fn's would (stop, close, rethrow after every consumer returned), leak nothing, and leave
  // the failed item in the channel.
  using lakh::test::tracked;
  {
    lakh::worker_pool pool(2);
    lakh::channel<tracked> ch(8);
    for (int i = 0; i < 8; ++i) {
      REQUIRE(ch.try_send(tracked(i)) == lakh::status::ok);
    }
    tracked::throw_on_move = 0; // the first move: inside the first receive
    std::atomic<int> processed{0};
    CHECK_THROWS_WITH_AS(lakh::parallel_for_each(
                             pool, ch, [&](tracked) { processed.fetch_add(1); }, 2),
                         "tracked: move throws (on purpose)", std::runtime_error);
    tracked::throw_on_move = -1;
    CHECK(ch.is_closed());
    std::size_t left = 0;
    for (auto &v : ch) {
      CHECK(v.value >= 0);
      ++left;
    }
    CHECK(left + static_cast<std::size_t>(processed.load()) == 8);
  }
  CHECK(tracked::alive.load() == 0);
}

TEST_CASE("parallel_for_each.misuse") {
  lakh::worker_pool pool(2);
  lakh::channel<int> ch(1);
  CHECK_THROWS_WITH_AS(lakh::parallel_for_each(
                           pool, ch, [](int) {}, 0),
                       "lakh::parallel_for_each: consumers (0) must be at least 1",
                       std::invalid_argument);
  auto f = pool.submit([&] {
    ch.close();
    (void)lakh::parallel_for_each(pool, ch, [](int) {});
  });
  pool.wait_idle(); // the worker has dropped its reference to the exception (see worker_pool.md)
  CHECK_THROWS_AS(f.get(), lakh::usage_error);
  pool.shutdown();
  lakh::channel<int> other(1);
  CHECK_THROWS_AS(lakh::parallel_for_each(pool, other, [](int) {}), lakh::usage_error);
}
