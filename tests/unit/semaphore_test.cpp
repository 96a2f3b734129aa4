// lakh::semaphore: strict FIFO under a mix of big and small waiters, weights never
// oversubscribed, cancellation and deadlines, resize, misuse errors, permits.
#include <lakh/semaphore.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

void wait_for_waiters(const lakh::semaphore &s, std::size_t n) {
  while (s.waiting() < n) {
    std::this_thread::yield();
  }
}

} // namespace

TEST_CASE("semaphore.basic_accounting") {
  lakh::semaphore s(8);
  CHECK(s.capacity() == 8);
  CHECK(s.available() == 8);
  s.acquire(3);
  CHECK(s.in_use() == 3);
  CHECK(s.try_acquire(5));
  CHECK_FALSE(s.try_acquire(1));
  CHECK(s.try_acquire_for(1, 1ms) == lakh::status::timeout);
  s.release(8);
  CHECK(s.in_use() == 0);
  CHECK(s.waiting() == 0);
}

TEST_CASE("semaphore.misuse_is_an_immediate_error") {
  CHECK_THROWS_WITH_AS(lakh::semaphore(0), "lakh::semaphore: capacity (0) must be at least 1",
                       std::invalid_argument);
  lakh::semaphore s(8);
  CHECK_THROWS_WITH_AS(s.acquire(12), "lakh::semaphore::acquire: n (12) exceeds capacity (8)",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(s.acquire(0), "lakh::semaphore::acquire: n (0) must be at least 1",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)s.try_acquire(-1), std::invalid_argument);
  CHECK_THROWS_AS((void)s.try_acquire_for(9, 1ms), std::invalid_argument);
  CHECK_THROWS_WITH_AS(s.release(1), "lakh::semaphore::release: n (1) exceeds the units in use (0)",
                       lakh::usage_error);
  s.acquire(2);
  CHECK_THROWS_AS(s.release(3), lakh::usage_error);
  CHECK_THROWS_AS(s.release(0), std::invalid_argument);
  CHECK(s.in_use() == 2); // nothing changed by the failed calls
  CHECK_THROWS_WITH_AS(s.resize(0), "lakh::semaphore::resize: new_capacity (0) must be at least 1",
                       std::invalid_argument);
  s.release(2);
}

TEST_CASE("semaphore.fifo.big_waiter_at_the_head_is_not_overtaken" * doctest::timeout(30)) {
  lakh::semaphore s(10);
  s.acquire(9); // 1 unit free
  std::mutex order_mu;
  std::vector<int> order;
  std::vector<std::jthread> ts;
  // Queue: big(10) first, then three small(1) that would each fit in the free unit.
  ts.emplace_back([&] {
    s.acquire(10);
    {
      std::lock_guard g(order_mu);
      order.push_back(10);
    }
    s.release(10);
  });
  wait_for_waiters(s, 1);
  for (int i = 0; i < 3; ++i) {
    ts.emplace_back([&, i] {
      s.acquire(1);
      {
        std::lock_guard g(order_mu);
        order.push_back(i);
      }
      s.release(1);
    });
    wait_for_waiters(s, static_cast<std::size_t>(i) + 2);
  }
  CHECK_FALSE(s.try_acquire(1)); // never jumps the queue, although 1 unit is free
  CHECK(s.in_use() == 9);
  {
    std::lock_guard g(order_mu);
    CHECK(order.empty());
  }
  s.release(9);
  ts.clear();
  REQUIRE(order.size() == 4);
  CHECK(order[0] == 10); // the small ones, all granted together after it, record in any order
  CHECK(s.in_use() == 0);
}

TEST_CASE("semaphore.fifo.waiters_served_in_arrival_order" * doctest::timeout(30)) {
  lakh::semaphore s(10);
  s.acquire(10);
  std::mutex order_mu;
  std::vector<int> order;
  std::vector<std::jthread> ts;
  const std::ptrdiff_t weights[] = {6, 4, 7, 1, 6};
  for (int i = 0; i < 5; ++i) {
    ts.emplace_back([&, i] {
      auto p = s.acquire_permit(weights[i]);
      std::lock_guard g(order_mu);
      order.push_back(i);
    }); // the permit is released after recording
    wait_for_waiters(s, static_cast<std::size_t>(i) + 1);
  }
  s.release(10);
  ts.clear();
  // Each waiter is granted only after every earlier one, and holders release after
  // recording. 6 and 4 fill the 10 units together; 7 fits beside neither, so it records
  // after both; 1 then fits beside 7; the last 6 fits beside 1 but not beside 7.
  REQUIRE(order.size() == 5);
  auto pos = [&](int i) { return std::find(order.begin(), order.end(), i) - order.begin(); };
  CHECK(pos(2) > pos(0));
  CHECK(pos(2) > pos(1));
  CHECK(pos(4) > pos(2));
  CHECK(s.in_use() == 0);
}

TEST_CASE("semaphore.weights_never_oversubscribed" * doctest::timeout(60)) {
  for (int threads : {1, 2, 4, 8}) {
    CAPTURE(threads);
    constexpr std::ptrdiff_t capacity = 7;
    lakh::semaphore s(capacity);
    std::atomic<std::ptrdiff_t> held{0};
    std::atomic<std::ptrdiff_t> peak{0};
    std::atomic<long> acquisitions{0};
    std::atomic<bool> over{false};
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
          for (int i = 0; i < 2000; ++i) {
            const std::ptrdiff_t n = 1 + (t + i) % capacity; // 1..7, big ones included
            auto p = s.acquire_permit(n);
            const auto now = held.fetch_add(n) + n;
            if (now > capacity) {
              over = true;
            }
            std::ptrdiff_t seen = peak.load();
            while (now > seen && !peak.compare_exchange_weak(seen, now)) {
            }
            held.fetch_sub(n);
            acquisitions.fetch_add(1);
          }
        });
      }
    }
    CHECK_FALSE(over.load());
    CHECK(peak.load() <= capacity);
    CHECK(acquisitions.load() == threads * 2000L);
    CHECK(s.in_use() == 0);
    CHECK(s.waiting() == 0);
  }
}

TEST_CASE("semaphore.cancel_unblocks_the_right_waiter_and_lets_the_rest_through" *
          doctest::timeout(30)) {
  lakh::semaphore s(4);
  s.acquire(3); // 1 free
  std::stop_source stop_big;
  lakh::status big = lakh::status::ok;
  std::atomic<bool> small_done{false};
  std::jthread t_big([&] { big = s.acquire(4, stop_big.get_token()); });
  wait_for_waiters(s, 1);
  std::jthread t_small([&] {
    s.acquire(1); // fits, but queued behind the big one
    small_done = true;
  });
  wait_for_waiters(s, 2);
  CHECK_FALSE(small_done.load());
  stop_big.request_stop(); // the head leaves: the small one behind it now fits
  t_big.join();
  t_small.join();
  CHECK(big == lakh::status::cancelled);
  CHECK(small_done.load());
  CHECK(s.in_use() == 4);
  CHECK(s.acquire(1, stop_big.get_token()) == lakh::status::cancelled); // already stopped
  s.release(4);
}

TEST_CASE("semaphore.deadline_times_out_and_lets_the_rest_through" * doctest::timeout(30)) {
  lakh::semaphore s(2);
  s.acquire(1);
  std::atomic<bool> small_done{false};
  lakh::status big = lakh::status::ok;
  std::jthread t_big([&] { big = s.try_acquire_for(2, 50ms); });
  wait_for_waiters(s, 1);
  std::jthread t_small([&] {
    CHECK(s.try_acquire_for(1, 10s) == lakh::status::ok);
    small_done = true;
  });
  t_big.join();
  t_small.join();
  CHECK(big == lakh::status::timeout);
  CHECK(small_done.load());
  CHECK(s.in_use() == 2);
  CHECK(s.try_acquire_until(1, std::chrono::system_clock::now() - 1s) == lakh::status::timeout);
  s.release(2);
}

TEST_CASE("semaphore.resize" * doctest::timeout(30)) {
  SUBCASE("growing grants waiters") {
    lakh::semaphore s(2);
    s.acquire(2);
    std::jthread t([&] { s.acquire(2); });
    wait_for_waiters(s, 1);
    s.resize(4);
    t.join();
    CHECK(s.in_use() == 4);
    CHECK(s.capacity() == 4);
  }
  SUBCASE("shrinking below in use waits for releases") {
    lakh::semaphore s(6);
    s.acquire(5);
    s.resize(3);
    CHECK(s.available() == 0);
    CHECK_FALSE(s.try_acquire(1));
    s.release(3); // in use 2 of 3
    CHECK(s.try_acquire(1));
    CHECK_FALSE(s.try_acquire(1));
    s.release(3);
  }
  SUBCASE("a waiter larger than the new capacity gets the arrival error") {
    lakh::semaphore s(8);
    s.acquire(8);
    std::string error;
    std::jthread t([&] {
      try {
        s.acquire(6);
      } catch (const std::invalid_argument &e) {
        error = e.what();
      }
    });
    wait_for_waiters(s, 1);
    s.resize(4);
    t.join();
    CHECK(error == "lakh::semaphore::acquire: n (6) exceeds capacity (4) after resize");
    CHECK(s.waiting() == 0);
    s.release(8);
  }
}

TEST_CASE("semaphore.permit_moves_and_releases") {
  lakh::semaphore s(5);
  {
    lakh::permit p = s.acquire_permit(3);
    CHECK(p.owns());
    CHECK(p.count() == 3);
    lakh::permit q = std::move(p);
    CHECK_FALSE(p.owns()); // NOLINT(bugprone-use-after-move): checking the moved-from state
    CHECK(q.count() == 3);
    CHECK(s.in_use() == 3);
    lakh::permit r = s.try_acquire_permit(3);
    CHECK_FALSE(r);
    r = s.try_acquire_permit(2);
    CHECK(r.owns());
    CHECK(s.in_use() == 5);
    r = std::move(q); // releases r's 2, takes q's 3
    CHECK(s.in_use() == 3);
    r.release();
    CHECK_FALSE(r.owns());
    CHECK(s.in_use() == 0);
    auto timed = s.try_acquire_permit_for(5, 1ms);
    CHECK(timed.count() == 5);
  }
  CHECK(s.in_use() == 0);
  std::stop_source stop;
  stop.request_stop();
  s.acquire(5);
  CHECK_FALSE(s.acquire_permit(1, stop.get_token()).owns());
  s.release(5);
}
