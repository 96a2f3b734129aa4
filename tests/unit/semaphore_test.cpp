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

namespace {

// A thread that takes `n` units as a permit, says so, and holds them until let go.
struct holder {
  std::atomic<bool> granted{false};
  std::atomic<bool> let_go{false};
  std::jthread thread;

  void start(lakh::semaphore &s, std::ptrdiff_t n) {
    thread = std::jthread([this, &s, n] {
      auto p = s.acquire_permit(n);
      granted = true;
      granted.notify_all();
      let_go.wait(false);
    });
  }
  void wait_granted() const { granted.wait(false); }
  void release() {
    let_go = true;
    let_go.notify_all();
  }
};

template <class Pred> void spin_until(Pred pred) {
  while (!pred()) {
    std::this_thread::yield();
  }
}

} // namespace

TEST_CASE("semaphore.fifo.strict_order_step_by_step" * doctest::timeout(30)) {
  // Capacity 10; queue (in arrival order) 6, 4, 7, 1, 6. Each step releases one holder and
  // checks exactly who was granted: nobody is overtaken, even when units sit free.
  lakh::semaphore s(10);
  s.acquire(10);
  const std::ptrdiff_t weights[] = {6, 4, 7, 1, 6};
  holder h[5];
  for (std::size_t i = 0; i < 5; ++i) {
    h[i].start(s, weights[i]);
    wait_for_waiters(s, i + 1);
  }
  s.release(10); // 6 + 4 fit; 7 does not
  CHECK(s.in_use() == 10);
  CHECK(s.waiting() == 3);
  h[0].wait_granted();
  h[1].wait_granted();

  h[0].release(); // 6 free, head wants 7: the 1 behind it must NOT go first
  spin_until([&] { return s.in_use() == 4; });
  CHECK(s.waiting() == 3);
  CHECK_FALSE(s.try_acquire(1));
  CHECK_FALSE(h[3].granted.load());

  h[1].release(); // 10 free: 7 and 1 fit, the last 6 does not (2 left)
  spin_until([&] { return s.waiting() == 1; });
  CHECK(s.in_use() == 8);
  h[2].wait_granted();
  h[3].wait_granted();
  CHECK_FALSE(h[4].granted.load());

  h[2].release(); // 1 + 6 = 7 in use
  spin_until([&] { return s.waiting() == 0; });
  CHECK(s.in_use() == 7);
  h[4].wait_granted();
  h[3].release();
  h[4].release();
  for (auto &x : h) {
    x.thread.join();
  }
  CHECK(s.in_use() == 0);
}

TEST_CASE("semaphore.cancel_in_the_middle_of_the_queue" * doctest::timeout(30)) {
  // Queue A(2), B(3), C(2) on a full capacity of 4. B is cancelled: nobody is granted by
  // that; on release A and C fit together, which they could not have with B between them.
  lakh::semaphore s(4);
  s.acquire(4);
  std::stop_source stop_b;
  lakh::status a = lakh::status::closed, b = lakh::status::closed, c = lakh::status::closed;
  std::jthread ta([&] { a = s.try_acquire_for(2, 10s); });
  wait_for_waiters(s, 1);
  std::jthread tb([&] { b = s.acquire(3, stop_b.get_token()); });
  wait_for_waiters(s, 2);
  std::jthread tc([&] { c = s.acquire(2, std::stop_token{}); });
  wait_for_waiters(s, 3);
  stop_b.request_stop();
  tb.join();
  CHECK(b == lakh::status::cancelled);
  CHECK(s.waiting() == 2);
  CHECK(s.in_use() == 4);
  s.release(4);
  ta.join();
  tc.join();
  CHECK(a == lakh::status::ok);
  CHECK(c == lakh::status::ok);
  CHECK(s.in_use() == 4);
  s.release(4);
}

TEST_CASE("semaphore.stop_racing_a_grant_never_loses_units" * doctest::timeout(60)) {
  // Stop and release race; either the waiter got the units (ok, and holds them) or it got
  // cancelled (and holds nothing). The units are never lost or granted twice.
  lakh::semaphore s(3);
  int oks = 0;
  for (int i = 0; i < 200; ++i) {
    s.acquire(3);
    std::stop_source stop;
    lakh::status got = lakh::status::closed;
    std::jthread t([&] { got = s.acquire(2, stop.get_token()); });
    wait_for_waiters(s, 1);
    std::jthread stopper([&] { stop.request_stop(); });
    s.release(3);
    stopper.join();
    t.join();
    REQUIRE((got == lakh::status::ok || got == lakh::status::cancelled));
    CHECK(s.in_use() == (got == lakh::status::ok ? 2 : 0));
    CHECK(s.waiting() == 0);
    if (got == lakh::status::ok) {
      ++oks;
      s.release(2);
    }
  }
  CHECK(s.in_use() == 0);
  MESSAGE("granted before the stop in " << oks << " of 200 races");
}

TEST_CASE("semaphore.mixed_calls_under_load" * doctest::timeout(60)) {
  // Every form at once (plain, cancellable, try, timed, permits), weights 1..4 of 5, with
  // a stopper cancelling at random: never oversubscribed, and every ok is released exactly
  // once (in_use returns to 0 and nobody is left queued).
  for (int threads : {2, 4, 8}) {
    CAPTURE(threads);
    constexpr std::ptrdiff_t capacity = 5;
    lakh::semaphore s(capacity);
    std::atomic<std::ptrdiff_t> held{0};
    std::atomic<bool> over{false};
    std::atomic<long> oks{0}, misses{0};
    std::stop_source stop;
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
          for (int i = 0; i < 300; ++i) {
            const std::ptrdiff_t n = 1 + (t * 7 + i) % 4;
            lakh::permit p;
            switch ((t + i) % 5) {
            case 0:
              p = s.acquire_permit(n);
              break;
            case 1:
              p = s.acquire_permit(n, stop.get_token());
              break;
            case 2:
              p = s.try_acquire_permit(n);
              break;
            case 3:
              p = s.try_acquire_permit_for(n, 200us, stop.get_token());
              break;
            default:
              p = s.try_acquire_permit_until(n, std::chrono::steady_clock::now() + 1ms);
              break;
            }
            if (!p) {
              misses.fetch_add(1);
              continue;
            }
            CHECK(p.count() == n);
            if (held.fetch_add(n) + n > capacity) {
              over = true;
            }
            held.fetch_sub(n);
            oks.fetch_add(1);
          }
        });
      }
      ts.emplace_back([&] {
        std::this_thread::sleep_for(2ms);
        stop.request_stop(); // later cancellable calls fail at once unless units are free
      });
    }
    CHECK_FALSE(over.load());
    CHECK(oks.load() + misses.load() == threads * 300L);
    CHECK(oks.load() > 0);
    CHECK(s.in_use() == 0);
    CHECK(s.waiting() == 0);
  }
}

TEST_CASE("semaphore.capacity_one_orders_plain_data" * doctest::timeout(60)) {
  // release happens-before the acquire it enables: a plain int guarded only by the
  // semaphore is never raced (TSan checks) and no increment is lost.
  for (int threads : {1, 2, 4, 8}) {
    CAPTURE(threads);
    lakh::semaphore s(1);
    long counter = 0;
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&] {
          for (int i = 0; i < 500; ++i) {
            s.acquire();
            ++counter;
            s.release();
          }
        });
      }
    }
    CHECK(counter == threads * 500L);
  }
}

TEST_CASE("semaphore.resize_more" * doctest::timeout(30)) {
  SUBCASE("a failed big head lets the small waiter behind it through") {
    lakh::semaphore s(8);
    s.acquire(3);
    std::string error;
    lakh::status small = lakh::status::closed;
    std::jthread big([&] {
      try {
        (void)s.try_acquire_for(6, 10s);
      } catch (const std::invalid_argument &e) {
        error = e.what();
      }
    });
    wait_for_waiters(s, 1);
    std::jthread t_small([&] { small = s.try_acquire_for(1, 10s); });
    wait_for_waiters(s, 2);
    s.resize(5); // 6 > 5 can never be served; 1 fits in the 2 free units
    big.join();
    t_small.join();
    CHECK(error == "lakh::semaphore::try_acquire_for: n (6) exceeds capacity (5) after resize");
    CHECK(small == lakh::status::ok);
    CHECK(s.in_use() == 4);
    CHECK(s.waiting() == 0);
    s.release(4);
  }
  SUBCASE("growing grants several waiters in order") {
    lakh::semaphore s(3);
    s.acquire(3);
    holder h[3];
    const std::ptrdiff_t weights[] = {2, 3, 1};
    for (std::size_t i = 0; i < 3; ++i) {
      h[i].start(s, weights[i]);
      wait_for_waiters(s, i + 1);
    }
    s.resize(5); // 2 free: the 2 fits, the 3 does not, so the 1 behind it waits too
    CHECK(s.in_use() == 5);
    CHECK(s.waiting() == 2);
    s.resize(9); // 4 free: 3 and 1
    CHECK(s.in_use() == 9);
    CHECK(s.waiting() == 0);
    for (auto &x : h) {
      x.wait_granted();
      x.release();
      x.thread.join();
    }
    s.release(3);
    CHECK(s.in_use() == 0);
  }
  SUBCASE("resizing under load neither loses nor invents units") {
    lakh::semaphore s(8);
    std::atomic<std::ptrdiff_t> held{0};
    std::atomic<bool> over{false};
    std::atomic<bool> done{false};
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < 4; ++t) {
        ts.emplace_back([&, t] {
          for (int i = 0; i < 300; ++i) {
            const std::ptrdiff_t n = 1 + (t + i) % 4; // always <= the smallest capacity
            auto p = s.acquire_permit(n);
            if (held.fetch_add(n) + n > 8) {
              over = true;
            }
            held.fetch_sub(n);
          }
        });
      }
      std::jthread resizer([&] {
        for (int i = 0; !done; ++i) {
          s.resize(i % 2 == 0 ? 4 : 8);
          std::this_thread::yield();
        }
        s.resize(8);
      });
      for (std::size_t t = 0; t < 4; ++t) {
        ts[t].join();
      }
      done = true;
    }
    CHECK_FALSE(over.load());
    CHECK(s.in_use() == 0);
    CHECK(s.waiting() == 0);
    CHECK(s.capacity() == 8);
  }
}

TEST_CASE("semaphore.deadlines_at_the_edges" * doctest::timeout(30)) {
  lakh::semaphore s(2);
  CHECK(s.try_acquire_for(1, 0ms) == lakh::status::ok); // free now: a zero timeout is enough
  CHECK(s.try_acquire_for(1, std::chrono::hours::max()) == lakh::status::ok); // no overflow
  CHECK(s.try_acquire_for(1, -1s) == lakh::status::timeout);
  CHECK(s.try_acquire_until(1, std::chrono::system_clock::time_point::min()) ==
        lakh::status::timeout);
  CHECK(s.try_acquire_until(1, std::chrono::steady_clock::time_point::min()) ==
        lakh::status::timeout);
  CHECK(s.try_acquire_for(1, std::chrono::duration<double>(0.001)) == lakh::status::timeout);
  CHECK_THROWS_WITH_AS((void)s.try_acquire_for(3, 1ms),
                       "lakh::semaphore::try_acquire_for: n (3) exceeds capacity (2)",
                       std::invalid_argument);
  // A "forever" deadline on any clock still wakes when the units come back.
  lakh::status got = lakh::status::closed;
  std::jthread t(
      [&] { got = s.try_acquire_until(2, std::chrono::system_clock::time_point::max()); });
  wait_for_waiters(s, 1);
  s.release(2);
  t.join();
  CHECK(got == lakh::status::ok);
  s.release(2);
  CHECK(s.in_use() == 0);
}
