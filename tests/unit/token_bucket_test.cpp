// Unit tests of lakh::token_bucket (lakh/token_bucket.hpp). Time is injected: every case
// passes its own time points, so none sleeps and the arithmetic is exact.
#include <lakh/token_bucket.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <limits>
#include <stdexcept>

namespace {

using namespace std::chrono_literals;
using clock_type = lakh::token_bucket::clock;

const clock_type::time_point t0{}; // any origin: the bucket only subtracts time points

} // namespace

TEST_CASE("token_bucket.starts_full_and_refuses_when_empty") {
  lakh::token_bucket b(3, 0, t0);
  CHECK(b.full(t0));
  CHECK(b.try_take(t0));
  CHECK_FALSE(b.full(t0));
  CHECK(b.try_take(t0));
  CHECK(b.try_take(t0));
  CHECK_FALSE(b.try_take(t0));
  CHECK_FALSE(b.try_take(t0 + 1h)); // rate 0: time adds nothing
  CHECK(b.available(t0 + 1h) == 0.0);
  CHECK(b.capacity() == 3.0);
  CHECK(b.rate() == 0.0);
}

TEST_CASE("token_bucket.refills_continuously_up_to_capacity") {
  lakh::token_bucket b(2, 4, t0); // 4 tokens a second: one per 250 ms
  CHECK(b.try_take(t0));
  CHECK(b.try_take(t0));
  CHECK_FALSE(b.try_take(t0));
  CHECK(b.available(t0 + 125ms) == doctest::Approx(0.5)); // fractions count
  CHECK_FALSE(b.try_take(t0 + 125ms));
  CHECK(b.try_take(t0 + 250ms));
  CHECK_FALSE(b.full(t0 + 500ms));
  CHECK(b.full(t0 + 750ms));
  CHECK(b.available(t0 + 10s) == doctest::Approx(2.0)); // capped at capacity
}

TEST_CASE("token_bucket.full_changes_nothing") {
  lakh::token_bucket b(1, 1, t0);
  CHECK(b.try_take(t0));
  CHECK(b.full(t0 + 2s));              // would be full by then...
  CHECK_FALSE(b.try_take(t0 + 500ms)); // ...but asking did not refill it
  CHECK(b.try_take(t0 + 1s));
}

TEST_CASE("token_bucket.put_adds_credit_up_to_capacity") {
  lakh::token_bucket b(3, 0, t0);
  for (int i = 0; i < 3; ++i) {
    CHECK(b.try_take(t0));
  }
  b.put(0.5, t0);
  CHECK_FALSE(b.try_take(t0));
  b.put(0.5, t0);
  CHECK(b.try_take(t0));
  b.put(100, t0);
  CHECK(b.available(t0) == doctest::Approx(3.0));
}

TEST_CASE("token_bucket.an_older_time_neither_refills_nor_rewinds") {
  lakh::token_bucket b(10, 1, t0);
  for (int i = 0; i < 10; ++i) {
    CHECK(b.try_take(t0 + 5s)); // refilled to t0 + 5s (already full)
  }
  CHECK_FALSE(b.try_take(t0 + 2s)); // an older reading: no tokens, no time travel
  CHECK(b.available(t0 + 2s) == 0.0);
  CHECK(b.available(t0 + 6s) == doctest::Approx(1.0)); // counted from t0 + 5s, not t0 + 2s
}

TEST_CASE("token_bucket.rejects_bad_settings") {
  CHECK_THROWS_WITH_AS(lakh::token_bucket(0, 1),
                       "lakh::token_bucket: capacity (0.000000) must be positive",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(lakh::token_bucket(1, -1),
                       "lakh::token_bucket: rate (-1.000000 per second) must be >= 0",
                       std::invalid_argument);
  const double inf = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(lakh::token_bucket(inf, 1), std::invalid_argument);
  CHECK_THROWS_AS(lakh::token_bucket(1, inf), std::invalid_argument);
  CHECK_THROWS_AS(lakh::token_bucket(std::numeric_limits<double>::quiet_NaN(), 1),
                  std::invalid_argument);
  CHECK_NOTHROW(lakh::token_bucket(0.5, 0)); // a fraction of a token is a valid capacity
}
