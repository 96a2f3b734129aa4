// lakh/metrics.hpp: histogram quantiles against a sorted reference, exact concurrent counts,
// Prometheus text line by line, the progress line's text and its thread.
#include <lakh/metrics.hpp>
#include <lakh/progress.hpp>
#include <lakh/prometheus.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

// Nearest-rank quantile of a sorted sample: the smallest value with at least q * n values at
// or below it.
std::uint64_t reference_quantile(const std::vector<std::uint64_t> &sorted, double q) {
  const auto n = sorted.size();
  auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(n)));
  rank = std::max<std::size_t>(rank, 1);
  return sorted[rank - 1];
}

void check_quantiles(std::vector<std::uint64_t> samples) {
  lakh::latency_histogram h;
  for (auto v : samples) {
    h.record_ns(v);
  }
  std::sort(samples.begin(), samples.end());
  REQUIRE(h.count() == samples.size());
  for (double q : {0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    CAPTURE(q);
    const auto want = static_cast<double>(reference_quantile(samples, q));
    const auto got = static_cast<double>(h.quantile(q).count());
    CHECK(std::abs(got - want) <= 0.01 * want);
  }
  CHECK(h.quantile(0.0) == h.min()); // the first and last ranks are exact
  CHECK(h.quantile(1.0) == h.max());
  CHECK(h.min().count() == static_cast<std::int64_t>(samples.front()));
  CHECK(h.max().count() == static_cast<std::int64_t>(samples.back()));
}

std::vector<std::string> lines_of(const std::string &text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    out.push_back(line);
  }
  return out;
}

} // namespace

TEST_CASE("metrics.histogram.quantiles_within_one_percent") {
  std::mt19937_64 rng(12345);
  SUBCASE("uniform 1us..10ms") {
    std::uniform_int_distribution<std::uint64_t> d(1'000, 10'000'000);
    std::vector<std::uint64_t> s(100'000);
    std::generate(s.begin(), s.end(), [&] { return d(rng); });
    check_quantiles(s);
  }
  SUBCASE("log-normal around 50us with a long tail") {
    std::lognormal_distribution<double> d(std::log(50'000.0), 1.5);
    std::vector<std::uint64_t> s(100'000);
    std::generate(s.begin(), s.end(), [&] { return static_cast<std::uint64_t>(d(rng)) + 1; });
    check_quantiles(s);
  }
  SUBCASE("constant") {
    check_quantiles(std::vector<std::uint64_t>(1000, 777'777));
  }
  SUBCASE("small exact values") {
    std::vector<std::uint64_t> s;
    for (std::uint64_t v = 0; v < 300; ++v) {
      s.push_back(v);
    }
    check_quantiles(s);
  }
  SUBCASE("extremes 1ns and 1h") {
    std::vector<std::uint64_t> s(999, 1);
    s.push_back(3'600'000'000'000ULL);
    check_quantiles(s);
  }
  SUBCASE("log-uniform over 1ns..1h") {
    std::uniform_real_distribution<double> d(0.0, std::log(3.6e12));
    std::vector<std::uint64_t> s(100'000);
    std::generate(s.begin(), s.end(), [&] { return static_cast<std::uint64_t>(std::exp(d(rng))); });
    s.front() = 1;
    s.back() = 3'600'000'000'000ULL;
    check_quantiles(s);
  }
  SUBCASE("bimodal: fast hits and slow misses") {
    std::normal_distribution<double> hit(2'000.0, 200.0);
    std::normal_distribution<double> miss(40'000'000.0, 5'000'000.0);
    std::bernoulli_distribution is_miss(0.02);
    std::vector<std::uint64_t> s(50'000);
    std::generate(s.begin(), s.end(), [&] {
      return static_cast<std::uint64_t>(std::max(1.0, is_miss(rng) ? miss(rng) : hit(rng)));
    });
    check_quantiles(s);
  }
  SUBCASE("beyond an hour: 1h..70h") {
    std::uniform_int_distribution<std::uint64_t> d(3'600'000'000'000ULL, 252'000'000'000'000ULL);
    std::vector<std::uint64_t> s(10'000);
    std::generate(s.begin(), s.end(), [&] { return d(rng); });
    check_quantiles(s);
  }
}

TEST_CASE("metrics.histogram.every_magnitude_reports_within_0.4_percent") {
  // One sample v between a 0 and a huge sample: the median is v's bucket, unclamped. Walk v
  // over every power of two from 1 ns to 2^47 ns and around each boundary.
  std::mt19937_64 rng(99);
  for (unsigned e = 0; e < 48; ++e) {
    const std::uint64_t p = std::uint64_t{1} << e;
    std::uniform_int_distribution<std::uint64_t> within(p, 2 * p - 1);
    for (const std::uint64_t v : {p, p + 1, 2 * p - 1, within(rng), within(rng)}) {
      CAPTURE(v);
      lakh::latency_histogram h;
      h.record_ns(0);
      h.record_ns(v);
      h.record_ns(std::uint64_t{1} << 50);
      const auto got = static_cast<double>(h.quantile(0.5).count());
      CHECK(std::abs(got - static_cast<double>(v)) <= static_cast<double>(v) / 256.0);
      if (v < 128) {
        CHECK(h.quantile(0.5).count() == static_cast<std::int64_t>(v)); // exact below 128 ns
      }
    }
  }
}

TEST_CASE("metrics.histogram.empty_reset_and_bad_q") {
  lakh::latency_histogram h;
  CHECK(h.count() == 0);
  CHECK(h.quantile(0.99) == 0ns);
  CHECK(h.min() == 0ns);
  CHECK(h.max() == 0ns);
  CHECK(h.mean_ns() == 0.0);
  h.record(-5ns); // counts as 0
  h.record(10ns);
  CHECK(h.count() == 2);
  CHECK(h.mean_ns() == 5.0);
  CHECK(h.sum() == 10ns);
  CHECK_THROWS_WITH_AS((void)h.quantile(1.5),
                       "lakh::latency_histogram::quantile: q (1.500000) is not within [0, 1]",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)h.quantile(std::nan("")), std::invalid_argument);
  h.reset();
  CHECK(h.count() == 0);
  CHECK(h.quantile(0.5) == 0ns);
  h.record(3ns);
  CHECK(h.min() == 3ns);
}

TEST_CASE("metrics.histogram.merge_equals_recording_everything_in_one") {
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<std::uint64_t> d(1, 50'000'000);
  lakh::latency_histogram a, b, all;
  for (int i = 0; i < 20'000; ++i) {
    const auto v = d(rng);
    (i % 3 == 0 ? a : b).record_ns(v);
    all.record_ns(v);
  }
  lakh::latency_histogram empty;
  a.merge(b);
  a.merge(empty); // no samples: min and max unchanged
  CHECK(a.count() == all.count());
  CHECK(a.sum() == all.sum());
  CHECK(a.min() == all.min());
  CHECK(a.max() == all.max());
  for (double q : {0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0}) {
    CHECK(a.quantile(q) == all.quantile(q));
  }
  CHECK(b.count() + (all.count() - b.count()) == a.count()); // b untouched
  empty.merge(all); // into an empty one: min comes from `all`
  CHECK(empty.min() == all.min());
  CHECK(empty.quantile(0.5) == all.quantile(0.5));
  all.merge(all); // merging itself doubles every count
  CHECK(all.count() == 2 * a.count());
  CHECK(all.sum() == 2 * a.sum());
  for (double q : {0.1, 0.5, 0.99}) {
    CHECK(all.quantile(q) == a.quantile(q));
  }
}

TEST_CASE("metrics.histogram.concurrent_records_are_exact" * doctest::timeout(60)) {
  constexpr int per_thread = 20'000;
  for (int threads : {1, 2, 3, 4, 8}) {
    CAPTURE(threads);
    lakh::latency_histogram h;
    lakh::latency_histogram reference; // the same values, recorded by one thread
    const auto value = [](int t, int i) {
      return static_cast<std::uint64_t>(t * per_thread + i) * 997; // spans many buckets
    };
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
          for (int i = 0; i < per_thread; ++i) {
            h.record_ns(value(t, i));
          }
        });
      }
    }
    for (int t = 0; t < threads; ++t) {
      for (int i = 0; i < per_thread; ++i) {
        reference.record_ns(value(t, i));
      }
    }
    const auto n = static_cast<std::uint64_t>(threads) * per_thread;
    CHECK(h.count() == n);
    CHECK(static_cast<std::uint64_t>(h.sum().count()) == 997 * (n * (n - 1) / 2));
    CHECK(h.min() == 0ns);
    CHECK(h.max().count() == static_cast<std::int64_t>(997 * (n - 1)));
    // Every bucket holds exactly what one thread would have put there.
    for (double q = 0.0; q <= 1.0; q += 1.0 / 64) {
      CAPTURE(q);
      CHECK(h.quantile(q) == reference.quantile(q));
    }
  }
}

TEST_CASE("metrics.registry.summary_quantiles_are_monotone_while_recording" *
          doctest::timeout(60)) {
  lakh::registry reg;
  auto &h = reg.make_histogram("lat_seconds", "x", {}, lakh::histogram_exposition::summary);
  std::atomic<bool> stop{false};
  std::jthread writer([&] {
    std::uint64_t v = 1;
    while (!stop.load(std::memory_order_relaxed)) {
      h.record_ns(v);
      v = v * 31 % 1'000'003 + 1;
    }
  });
  std::uint64_t last_count = 0;
  for (int i = 0; i < 100; ++i) {
    const auto lines = lines_of(reg.prometheus_text());
    REQUIRE(lines.size() == 8);
    const auto count = std::stoull(lines[7].substr(lines[7].rfind(' ') + 1));
    CHECK(count >= last_count); // buckets only grow
    last_count = count;
    double prev = 0.0;
    for (std::size_t k = 2; k < 6; ++k) { // the four quantile lines
      const double v = std::stod(lines[k].substr(lines[k].rfind(' ') + 1));
      CHECK(v >= prev);
      CHECK(v <= 1'000'003e-9);
      prev = v;
    }
  }
  stop = true;
}

TEST_CASE("metrics.counter_and_meter.concurrent_adds_are_exact" * doctest::timeout(60)) {
  constexpr int per_thread = 50'000;
  for (int threads : {1, 2, 4, 8}) {
    CAPTURE(threads);
    lakh::counter c;
    lakh::throughput_meter m;
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
          for (int i = 0; i < per_thread; ++i) {
            c.add(static_cast<std::uint64_t>(t) + 1);
            m.add();
          }
        });
      }
    }
    const auto n = static_cast<std::uint64_t>(threads);
    CHECK(c.value() == per_thread * n * (n + 1) / 2);
    CHECK(m.total() == per_thread * n);
  }
}

// Runs body(t) on `threads` threads and joins them.
template <class Body> void on_threads(int threads, Body body) {
  std::vector<std::jthread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&body, t] { body(t); });
  }
}

constexpr int gauge_per_thread = 20'000;

TEST_CASE("metrics.gauge.concurrent_increments_give_exact_value_and_max" * doctest::timeout(60)) {
  for (int threads : {1, 2, 4, 8}) {
    CAPTURE(threads);
    lakh::gauge g;
    on_threads(threads, [&](int) {
      for (int i = 0; i < gauge_per_thread; ++i) {
        g.add(1);
      }
    });
    CHECK(g.value() == static_cast<std::int64_t>(threads) * gauge_per_thread);
    CHECK(g.max() == static_cast<std::int64_t>(threads) * gauge_per_thread);
  }
}

TEST_CASE("metrics.gauge.balanced_up_down_returns_to_0_with_max_at_most_threads" *
          doctest::timeout(60)) {
  for (int threads : {1, 2, 4, 8}) {
    CAPTURE(threads);
    lakh::gauge g;
    on_threads(threads, [&](int) {
      for (int i = 0; i < gauge_per_thread; ++i) {
        g.add(1);
        g.add(-1);
      }
    });
    CHECK(g.value() == 0);
    CHECK(g.max() >= 1);
    CHECK(g.max() <= threads); // never above a value the gauge really held
  }
}

TEST_CASE("metrics.gauge.concurrent_sets_give_max_exactly_the_largest_set" * doctest::timeout(60)) {
  for (int threads : {1, 2, 4, 8}) {
    CAPTURE(threads);
    lakh::gauge g;
    on_threads(threads, [&](int t) {
      for (int i = 0; i < gauge_per_thread; ++i) {
        g.set(static_cast<std::int64_t>(i) * threads + t - 5);
      }
    });
    const std::int64_t last_round = static_cast<std::int64_t>(gauge_per_thread - 1) * threads - 5;
    const std::int64_t largest = last_round + threads - 1;
    CHECK(g.max() == largest);
    CHECK(g.value() >= last_round); // one thread's last set
    CHECK(g.value() <= largest);
    g.reset();
    CHECK(g.value() == 0);
    CHECK(g.max() == 0);
  }
}

TEST_CASE("metrics.gauge_tracks_high_water_mark") {
  lakh::gauge g;
  g.set(5);
  g.add(3);
  g.add(-7);
  CHECK(g.value() == 1);
  CHECK(g.max() == 8);
  g.set(-4);
  CHECK(g.value() == -4);
  CHECK(g.max() == 8);
}

TEST_CASE("metrics.throughput_meter_rate") {
  lakh::throughput_meter m;
  m.add(1000);
  std::this_thread::sleep_for(20ms);
  CHECK(m.elapsed() >= 20ms);
  CHECK(m.per_second() > 0.0);
  CHECK(m.per_second() <= 1000.0 / 0.020);
  m.restart();
  CHECK(m.total() == 0);
}

TEST_CASE("metrics.registry.prometheus_text") {
  lakh::registry reg;
  auto &rows = reg.make_counter("lakh_rows_total", "Rows aggregated.");
  auto &q1 = reg.make_gauge("lakh_queue_depth", "Items\nbuffered \\ now \"quoted\".",
                            {{"queue", "a\"b"}, {"path", "C:\\tmp"}});
  auto &q2 = reg.make_gauge("lakh_queue_depth", "ignored for the second", {{"queue", "c\nd"}});
  auto &lat = reg.make_histogram("lakh_batch_seconds", "Batch latency.", {{"stage", "agg"}});
  auto &bare = reg.make_histogram("lakh_idle_seconds", "", {}, lakh::histogram_exposition::summary);
  rows.add(42);
  q1.set(3);
  q2.set(-1);
  for (int i = 0; i < 1000; ++i) {
    lat.record(1ms);
  }
  lat.record(250ms);
  lat.record(60s); // above every bound but +Inf
  const auto lines = lines_of(reg.prometheus_text());
  std::vector<std::string> want = {
      "# HELP lakh_rows_total Rows aggregated.",
      "# TYPE lakh_rows_total counter",
      "lakh_rows_total 42",
      // HELP escapes \ and newline only; label values also escape "
      R"(# HELP lakh_queue_depth Items\nbuffered \\ now "quoted".)",
      "# TYPE lakh_queue_depth gauge",
      R"(lakh_queue_depth{queue="a\"b",path="C:\\tmp"} 3)",
      R"(lakh_queue_depth{queue="c\nd"} -1)",
      "# HELP lakh_batch_seconds Batch latency.",
      "# TYPE lakh_batch_seconds histogram",
  };
  // Cumulative buckets: the 1000 samples of 1 ms from le="0.001" on (a bound counts its
  // bucket's samples), 250 ms from le="0.25", 60 s only in +Inf.
  const std::vector<std::pair<std::string, int>> buckets = {
      {"0.0001", 0},   {"0.00025", 0}, {"0.0005", 0},   {"0.001", 1000}, {"0.0025", 1000},
      {"0.005", 1000}, {"0.01", 1000}, {"0.025", 1000}, {"0.05", 1000},  {"0.1", 1000},
      {"0.25", 1001},  {"0.5", 1001},  {"1", 1001},     {"2.5", 1001},   {"5", 1001},
      {"10", 1001},    {"+Inf", 1002}};
  for (const auto &[le, n] : buckets) {
    want.push_back(R"(lakh_batch_seconds_bucket{stage="agg",le=")" + le + "\"} " +
                   std::to_string(n));
  }
  for (const char *line :
       {R"(lakh_batch_seconds_sum{stage="agg"} 61.25)",
        R"(lakh_batch_seconds_count{stage="agg"} 1002)", "# HELP lakh_idle_seconds ",
        "# TYPE lakh_idle_seconds summary", R"(lakh_idle_seconds{quantile="0.5"} 0)",
        R"(lakh_idle_seconds{quantile="0.9"} 0)", R"(lakh_idle_seconds{quantile="0.99"} 0)",
        R"(lakh_idle_seconds{quantile="0.999"} 0)", "lakh_idle_seconds_sum 0",
        "lakh_idle_seconds_count 0"}) {
    want.emplace_back(line);
  }
  CHECK(lines.size() == want.size());
  for (std::size_t i = 0; i < std::min(lines.size(), want.size()); ++i) {
    CAPTURE(i);
    CHECK(lines[i] == want[i]);
  }
  bare.record(2500us);
  lat.record(100us); // exactly a bound: counted there
  std::ostringstream out;
  reg.write_prometheus(out);
  const auto again = lines_of(out.str());
  REQUIRE(again.size() == want.size());
  CHECK(again[9] == R"(lakh_batch_seconds_bucket{stage="agg",le="0.0001"} 1)");
  CHECK(again[27] == R"(lakh_batch_seconds_count{stage="agg"} 1003)");
  CHECK(again[30] == R"(lakh_idle_seconds{quantile="0.5"} 0.0025)");
  CHECK(again[35] == "lakh_idle_seconds_count 1");
  CHECK(out.str().back() == '\n');
}

TEST_CASE("metrics.registry.rejects_bad_and_duplicate_names") {
  lakh::registry reg;
  (void)reg.make_counter("ok_total", "x", {{"a", "1"}});
  CHECK_THROWS_WITH_AS(
      (void)reg.make_counter("9lives", "x"),
      "lakh::registry::make_counter: '9lives' is not a valid Prometheus metric name",
      std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_counter("", "x"), std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_gauge("has-dash", "x"), std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_gauge("sp ace", "x"), std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_histogram("caf\xc3\xa9", "x"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_counter("m", "x", {{"a:b", "1"}}),
                       "lakh::registry::make_counter: 'a:b' is not a valid Prometheus label name",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_counter("m", "x", {{"1a", "1"}}), std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_counter("m", "x", {{"", "1"}}), std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_counter("m", "x", {{"__reserved", "1"}}), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_counter("m", "x", {{"a", "1"}, {"a", "2"}}),
                       "lakh::registry::make_counter: label 'a' repeats in 'm'",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_counter("ok_total", "x", {{"a", "1"}}),
                       "lakh::registry::make_counter: 'ok_total{a=\"1\"}' is registered already",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_gauge("ok_total", "x", {{"a", "2"}}),
                       "lakh::registry::make_gauge: 'ok_total' is registered already as a counter",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_histogram("h_seconds", "x", {{"quantile", "1"}},
                                                lakh::histogram_exposition::summary),
                       "lakh::registry::make_histogram: label 'quantile' of 'h_seconds' is "
                       "reserved for the summary's quantiles",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_histogram("h_seconds", "x", {{"le", "1"}}),
                       "lakh::registry::make_histogram: label 'le' of 'h_seconds' is reserved "
                       "for the histogram's buckets",
                       std::invalid_argument);
  (void)reg.make_histogram("h_seconds", "x");
  CHECK_THROWS_WITH_AS(
      (void)reg.make_counter("h_seconds_count", "x"),
      "lakh::registry::make_counter: 'h_seconds_count' collides with the 'h_seconds' "
      "histogram's _bucket/_sum/_count series",
      std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_gauge("h_seconds_bucket", "x"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(
      (void)reg.make_histogram("h_seconds", "x", {{"a", "1"}}, lakh::histogram_exposition::summary),
      "lakh::registry::make_histogram: 'h_seconds' is registered already as a "
      "histogram",
      std::invalid_argument);
  (void)reg.make_gauge("g_sum", "x");
  CHECK_THROWS_AS((void)reg.make_histogram("g", "x"), std::invalid_argument);
  (void)reg.make_counter("ok_total", "x", {{"a", "2"}});     // other labels: fine
  (void)reg.make_counter("m:sub_total", "x", {{"_a1", ""}}); // ':' in a metric name is legal
  const auto lines = lines_of(reg.prometheus_text());
  CHECK(lines.size() == 4 + 21 + 3 + 3); // ok_total x2, h_seconds (17 buckets), g_sum, m:sub_total
  CHECK(lines[2] == "ok_total{a=\"1\"} 0");
  CHECK(lines[3] == "ok_total{a=\"2\"} 0");
  CHECK(lines.back() == "m:sub_total{_a1=\"\"} 0");
}

TEST_CASE("metrics.registry.references_stay_valid_as_it_grows") {
  lakh::registry reg;
  std::vector<lakh::counter *> cs;
  for (int i = 0; i < 200; ++i) {
    cs.push_back(&reg.make_counter("c_total", "x", {{"i", std::to_string(i)}}));
  }
  for (int i = 0; i < 200; ++i) {
    cs[static_cast<std::size_t>(i)]->add(static_cast<std::uint64_t>(i));
  }
  const auto lines = lines_of(reg.prometheus_text());
  REQUIRE(lines.size() == 202);
  for (int i = 0; i < 200; ++i) {
    CHECK(lines[static_cast<std::size_t>(i) + 2] ==
          "c_total{i=\"" + std::to_string(i) + "\"} " + std::to_string(i));
  }
}

TEST_CASE("metrics.progress.format") {
  CHECK(lakh::format_progress("rows", 452'000, 1'000'000, 12.3e6) ==
        "rows 45.2% 452000/1000000 12.3M/s ETA 0.0s");
  CHECK(lakh::format_progress("rows", 500, 1000, 100.0) == "rows 50.0% 500/1000 100/s ETA 5.0s");
  CHECK(lakh::format_progress("jobs", 1500, 1000, 2500.0) ==
        "jobs 100.0% 1500/1000 2.5k/s ETA 0.0s");
  CHECK(lakh::format_progress("rows", 0, 1000, 0.0) == "rows 0.0% 0/1000 0/s");
  CHECK(lakh::format_progress("events", 42, 0, 3.5e9) == "events 42 3.5G/s");
  CHECK(lakh::format_progress("events", 0, 0, 0.0) == "events 0 0/s");
  CHECK(lakh::format_progress("", 1, 2, 1.0) == " 50.0% 1/2 1/s ETA 1.0s");
  // the ETA grows units: seconds, minutes and seconds, hours and minutes
  CHECK(lakh::format_progress("rows", 0, 65, 1.0) == "rows 0.0% 0/65 1/s ETA 1m05s");
  CHECK(lakh::format_progress("rows", 0, 7380, 1.0) == "rows 0.0% 0/7380 1/s ETA 2h03m");
  CHECK(lakh::format_progress("rows", 1, 3, 1e-3) == "rows 33.3% 1/3 0/s ETA 33m20s");
  CHECK(lakh::format_progress("rows", 0, 18'446'744'073'709'551'615ULL, 1.0).size() < 80);
}

TEST_CASE("metrics.progress.line_prints_periodically_and_once_more_at_finish" *
          doctest::timeout(30)) {
  std::FILE *f = std::tmpfile();
  REQUIRE(f != nullptr);
  lakh::counter done;
  {
    lakh::progress_options o;
    o.out = f;
    o.force_tty = 0;
    o.log_interval = 10ms;
    std::atomic<int> calls{0};
    lakh::progress_line p(
        "rows", 100,
        [&] {
          calls.fetch_add(1);
          return done.value();
        },
        o);
    for (int i = 0; i < 10; ++i) {
      done.add(10);
      std::this_thread::sleep_for(5ms);
    }
    // Wait (bounded) for two periodic lines, however slow the machine (sanitizers, load).
    for (int i = 0; i < 10'000 && calls.load() < 2; ++i) {
      std::this_thread::sleep_for(1ms);
    }
    REQUIRE(calls.load() >= 2);
    p.finish();
    p.finish(); // idempotent
  }             // the destructor does not print again
  std::rewind(f);
  std::string text;
  for (int ch = 0; (ch = std::fgetc(f)) != EOF;) {
    text += static_cast<char>(ch);
  }
  std::fclose(f);
  const auto lines = lines_of(text);
  REQUIRE(lines.size() >= 3); // at least two periodic lines and the final one
  for (const auto &l : lines) {
    CHECK(l.rfind("rows ", 0) == 0);
  }
  CHECK(lines.back().rfind("rows 100.0% 100/100 ", 0) == 0);
  CHECK(text.find('\r') == std::string::npos);
}

TEST_CASE("metrics.progress.tty_redraws_in_place" * doctest::timeout(30)) {
  std::FILE *f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    lakh::progress_options o;
    o.out = f;
    o.force_tty = 1;
    o.tty_interval = 5ms;
    lakh::progress_line p(
        "rows", 0, [] { return std::uint64_t{7}; }, o);
    std::this_thread::sleep_for(30ms);
  }
  std::rewind(f);
  std::string text;
  for (int ch = 0; (ch = std::fgetc(f)) != EOF;) {
    text += static_cast<char>(ch);
  }
  std::fclose(f);
  CHECK(text.rfind("\rrows 7 ", 0) == 0);
  CHECK(text.find("\x1b[K") != std::string::npos);
  CHECK(std::count(text.begin(), text.end(), '\n') == 1); // only the final line ends one
  CHECK(text.back() == '\n');
  CHECK_THROWS_AS(lakh::progress_line("x", 1, {}), std::invalid_argument);
}

TEST_CASE("metrics.progress.errors" * doctest::timeout(30)) {
  CHECK_THROWS_WITH_AS(lakh::progress_line("rows", 1, {}),
                       "lakh::progress_line: done (for 'rows') is an empty std::function",
                       std::invalid_argument);
  lakh::progress_options o;
  o.out = nullptr;
  CHECK_THROWS_AS(lakh::progress_line(
                      "rows", 1, [] { return std::uint64_t{0}; }, o),
                  std::invalid_argument);
  std::FILE *f = std::tmpfile();
  REQUIRE(f != nullptr);
  o.out = f;
  o.force_tty = 0;
  o.log_interval = 0ms;
  CHECK_THROWS_WITH_AS(lakh::progress_line(
                           "rows", 1, [] { return std::uint64_t{0}; }, o),
                       "lakh::progress_line: log_interval (0ms) is not positive",
                       std::invalid_argument);
  SUBCASE("an exception from done on the printing thread comes out of finish") {
    o.log_interval = 1ms;
    std::atomic<int> calls{0};
    lakh::progress_line p(
        "rows", 10,
        [&]() -> std::uint64_t {
          calls.fetch_add(1);
          throw std::runtime_error("source gone");
        },
        o);
    for (int i = 0; i < 5000 && calls.load() == 0; ++i) {
      std::this_thread::sleep_for(1ms);
    }
    CHECK(calls.load() == 1); // the thread stopped at the first throw
    CHECK_THROWS_WITH_AS(p.finish(), "source gone", std::runtime_error);
    CHECK_NOTHROW(p.finish()); // once only
  }
  std::fclose(f);
}

TEST_CASE("metrics.progress.finish_from_several_threads_prints_once" * doctest::timeout(30)) {
  std::FILE *f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    lakh::progress_options o;
    o.out = f;
    o.force_tty = 0;
    o.log_interval = 1h; // only the final line
    lakh::progress_line p(
        "rows", 4, [] { return std::uint64_t{2}; }, o);
    std::vector<std::jthread> ts;
    for (int t = 0; t < 4; ++t) {
      ts.emplace_back([&] { p.finish(); });
    }
  }
  std::rewind(f);
  std::string text;
  for (int ch = 0; (ch = std::fgetc(f)) != EOF;) {
    text += static_cast<char>(ch);
  }
  std::fclose(f);
  const auto lines = lines_of(text);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].rfind("rows 50.0% 2/4 ", 0) == 0); // where it stopped, not 100%
}

TEST_CASE("metrics.registry.callback_gauges_are_computed_at_each_write") {
  lakh::registry reg;
  std::atomic<int> idle{3};
  auto &depth = reg.make_gauge("lakh_pool_connections", "Connections.", {{"state", "busy"}});
  depth.set(2);
  reg.make_callback_gauge("lakh_pool_connections", "ignored",
                          [&] { return static_cast<double>(idle.load()); }, {{"state", "idle"}});
  reg.make_callback_gauge("lakh_lag_seconds", "Lag.", [] { return 0.25; });
  reg.make_callback_gauge("lakh_broken", "Throws.",
                          []() -> double { throw std::runtime_error("no figure"); });
  auto lines = lines_of(reg.prometheus_text());
  REQUIRE(lines.size() == 10);
  CHECK(lines[1] == "# TYPE lakh_pool_connections gauge");
  CHECK(lines[2] == R"(lakh_pool_connections{state="busy"} 2)");
  CHECK(lines[3] == R"(lakh_pool_connections{state="idle"} 3)");
  CHECK(lines[6] == "lakh_lag_seconds 0.25");
  CHECK(lines[9] == "lakh_broken NaN");
  idle = 7; // read again at the next scrape
  lines = lines_of(reg.prometheus_text());
  CHECK(lines[3] == R"(lakh_pool_connections{state="idle"} 7)");
  CHECK_THROWS_WITH_AS(reg.make_callback_gauge("lakh_none", "x", {}),
                       "lakh::registry::make_callback_gauge: the function of 'lakh_none' is empty",
                       std::invalid_argument);
  CHECK_THROWS_AS(
      reg.make_callback_gauge("lakh_lag_seconds", "x", [] { return 1.0; }), // same name, labels
      std::invalid_argument);
}
