// Unit tests of lakh::backoff, lakh::retry_budget and lakh::sleep_for.
#include <lakh/backoff.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <limits>
#include <random>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("backoff.ceiling.doubles_then_caps") {
  lakh::backoff b(10ms, 100ms);
  CHECK(b.ceiling(0) == 10ms);
  CHECK(b.ceiling(1) == 20ms);
  CHECK(b.ceiling(2) == 40ms);
  CHECK(b.ceiling(3) == 80ms);
  CHECK(b.ceiling(4) == 100ms);
  CHECK(b.ceiling(1000) == 100ms); // no overflow
  lakh::backoff huge(1ns, std::chrono::nanoseconds::max());
  CHECK(huge.ceiling(200) == std::chrono::nanoseconds::max());
}

TEST_CASE("backoff.delay.full_jitter_within_bounds_and_spread") {
  lakh::backoff b(1ms, 64ms);
  std::mt19937 rng(42);
  for (unsigned k = 0; k < 10; ++k) {
    std::chrono::nanoseconds lo = b.ceiling(k), hi{0};
    for (int i = 0; i < 2000; ++i) {
      auto d = b.delay(k, rng);
      REQUIRE(d >= 0ns);
      REQUIRE(d <= b.ceiling(k));
      lo = std::min(lo, d);
      hi = std::max(hi, d);
    }
    // full jitter: the draws cover most of [0, ceiling]
    CHECK(lo < b.ceiling(k) / 10);
    CHECK(hi > b.ceiling(k) * 9 / 10);
  }
  CHECK(b.delay(3) <= 8ms); // per-thread generator
}

TEST_CASE("backoff.invalid_arguments_throw") {
  CHECK_THROWS_WITH_AS(lakh::backoff(0ms, 1ms), "lakh::backoff: base (0 ns) must be positive",
                       std::invalid_argument);
  CHECK_THROWS_AS(lakh::backoff(-1ms, 1ms), std::invalid_argument);
  CHECK_THROWS_WITH_AS(lakh::backoff(2ms, 1ms),
                       "lakh::backoff: cap (1000000 ns) is less than base (2000000 ns)",
                       std::invalid_argument);
  CHECK_THROWS_AS(lakh::retry_budget(0.5), std::invalid_argument);
  CHECK_THROWS_AS(lakh::retry_budget(10, -1), std::invalid_argument);
  CHECK_THROWS_AS(lakh::retry_budget(10, 0, -0.1), std::invalid_argument);
  CHECK_THROWS_AS((void)lakh::retry_budget(std::numeric_limits<double>::infinity()),
                  std::invalid_argument);
}

TEST_CASE("retry_budget.withdraw_deposit_refill") {
  lakh::retry_budget b(3, 0, 0.5);
  CHECK(b.try_withdraw());
  CHECK(b.try_withdraw());
  CHECK(b.try_withdraw());
  CHECK_FALSE(b.try_withdraw());
  b.deposit();
  CHECK_FALSE(b.try_withdraw()); // 0.5 tokens
  b.deposit();
  CHECK(b.try_withdraw());
  for (int i = 0; i < 100; ++i) {
    b.deposit();
  }
  CHECK(b.available() == doctest::Approx(3.0)); // capped

  lakh::retry_budget r(1, 1000); // refills 1 token per ms
  CHECK(r.try_withdraw());
  std::this_thread::sleep_for(5ms);
  CHECK(r.try_withdraw());
}

TEST_CASE("retry_budget.concurrent_withdrawals_never_exceed_capacity" * doctest::timeout(30)) {
  for (int threads : {2, 4, 8}) {
    lakh::retry_budget b(100);
    std::atomic<int> granted{0};
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&] {
          for (int i = 0; i < 100; ++i) {
            if (b.try_withdraw()) {
              ++granted;
            }
          }
        });
      }
    }
    CHECK(granted.load() == 100);
  }
}

TEST_CASE("sleep_for.stop_token_cuts_it_short" * doctest::timeout(30)) {
  CHECK(lakh::sleep_for(1ms) == lakh::status::ok);
  CHECK(lakh::sleep_for(-1ms) == lakh::status::ok);
  std::stop_source pre;
  pre.request_stop();
  CHECK(lakh::sleep_for(10s, pre.get_token()) == lakh::status::cancelled);
  std::stop_source ss;
  std::jthread stopper([&] {
    std::this_thread::sleep_for(20ms);
    ss.request_stop();
  });
  auto t0 = std::chrono::steady_clock::now();
  CHECK(lakh::sleep_for(60s, ss.get_token()) == lakh::status::cancelled);
  CHECK(std::chrono::steady_clock::now() - t0 < 30s);
  std::stop_source live;
  CHECK(lakh::sleep_for(2ms, live.get_token()) == lakh::status::ok);
}
