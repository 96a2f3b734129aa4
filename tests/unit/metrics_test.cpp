// lakh/metrics.hpp: histogram quantiles against a sorted reference, exact concurrent counts,
// Prometheus text line by line, the progress line's text and its thread.
#include <lakh/metrics.hpp>

#include <doctest/doctest.h>

#include <algorithm>
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
  a.merge(b);
  a.merge(a); // merging itself is a no-op
  CHECK(a.count() == all.count());
  CHECK(a.sum() == all.sum());
  CHECK(a.min() == all.min());
  CHECK(a.max() == all.max());
  for (double q : {0.1, 0.5, 0.99, 0.999}) {
    CHECK(a.quantile(q) == all.quantile(q));
  }
}

TEST_CASE("metrics.concurrent_updates_are_exact" * doctest::timeout(60)) {
  for (int threads : {1, 2, 4, 8}) {
    CAPTURE(threads);
    lakh::counter c;
    lakh::gauge g;
    lakh::latency_histogram h;
    lakh::throughput_meter m;
    constexpr int per_thread = 20'000;
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&, t] {
          for (int i = 0; i < per_thread; ++i) {
            c.add(2);
            g.add(1);
            h.record_ns(static_cast<std::uint64_t>(t * per_thread + i));
            m.add();
            g.add(-1);
          }
          g.set(1000 + t); // the high-water mark must reach the largest of these
        });
      }
    }
    const auto n = static_cast<std::uint64_t>(threads) * per_thread;
    CHECK(c.value() == 2 * n);
    CHECK(h.count() == n);
    CHECK(static_cast<std::uint64_t>(h.sum().count()) == n * (n - 1) / 2);
    CHECK(h.min() == 0ns);
    CHECK(h.max().count() == static_cast<std::int64_t>(n - 1));
    CHECK(m.total() == n);
    CHECK(g.max() >= 1000 + threads - 1);
    CHECK(g.max() <= 1000 + threads - 1 + threads); // never above what was really reached
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
  auto &q1 = reg.make_gauge("lakh_queue_depth", "Items\nbuffered \\ now.", {{"queue", "a\"b"}});
  auto &q2 = reg.make_gauge("lakh_queue_depth", "ignored for the second", {{"queue", "c\nd"}});
  auto &lat = reg.make_histogram("lakh_batch_seconds", "Batch latency.", {{"stage", "agg"}});
  rows.add(42);
  q1.set(3);
  q2.set(-1);
  for (int i = 0; i < 1000; ++i) {
    lat.record(1ms);
  }
  const auto lines = lines_of(reg.prometheus_text());
  const std::vector<std::string> want = {
      "# HELP lakh_rows_total Rows aggregated.",
      "# TYPE lakh_rows_total counter",
      "lakh_rows_total 42",
      "# HELP lakh_queue_depth Items\\nbuffered \\\\ now.",
      "# TYPE lakh_queue_depth gauge",
      "lakh_queue_depth{queue=\"a\\\"b\"} 3",
      "lakh_queue_depth{queue=\"c\\nd\"} -1",
      "# HELP lakh_batch_seconds Batch latency.",
      "# TYPE lakh_batch_seconds summary",
  };
  REQUIRE(lines.size() == want.size() + 6);
  for (std::size_t i = 0; i < want.size(); ++i) {
    CHECK(lines[i] == want[i]);
  }
  for (std::size_t i = 0; i < 4; ++i) {
    const auto &l = lines[want.size() + i];
    CHECK(l.rfind("lakh_batch_seconds{stage=\"agg\",quantile=\"", 0) == 0);
    const double v = std::stod(l.substr(l.rfind(' ') + 1));
    CHECK(v == doctest::Approx(0.001).epsilon(0.005));
  }
  CHECK(lines[want.size()].find("quantile=\"0.5\"") != std::string::npos);
  CHECK(lines[want.size() + 3].find("quantile=\"0.999\"") != std::string::npos);
  const auto &sum = lines[want.size() + 4];
  CHECK(sum.rfind("lakh_batch_seconds_sum{stage=\"agg\"} ", 0) == 0);
  CHECK(std::stod(sum.substr(sum.rfind(' ') + 1)) == doctest::Approx(1.0));
  CHECK(lines[want.size() + 5] == "lakh_batch_seconds_count{stage=\"agg\"} 1000");
}

TEST_CASE("metrics.registry.rejects_bad_and_duplicate_names") {
  lakh::registry reg;
  (void)reg.make_counter("ok_total", "x", {{"a", "1"}});
  CHECK_THROWS_WITH_AS((void)reg.make_counter("9lives", "x"),
                       "lakh::registry: '9lives' is not a valid Prometheus metric name",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_counter("", "x"), std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_counter("has-dash", "x"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_counter("m", "x", {{"a:b", "1"}}),
                       "lakh::registry: 'a:b' is not a valid Prometheus label name",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)reg.make_counter("m", "x", {{"__reserved", "1"}}), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_counter("m", "x", {{"a", "1"}, {"a", "2"}}),
                       "lakh::registry: label 'a' repeats in 'm'", std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_counter("ok_total", "x", {{"a", "1"}}),
                       "lakh::registry: 'ok_total{a=\"1\"}' is registered already",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)reg.make_gauge("ok_total", "x", {{"a", "2"}}),
                       "lakh::registry: 'ok_total' is registered already as a counter",
                       std::invalid_argument);
  (void)reg.make_counter("ok_total", "x", {{"a", "2"}}); // other labels: fine
  CHECK(lines_of(reg.prometheus_text()).size() == 4);
}

TEST_CASE("metrics.progress.format") {
  CHECK(lakh::format_progress("rows", 452'000, 1'000'000, 12.3e6) ==
        "rows 45.2% 452000/1000000 12.3M/s ETA 0.0s");
  CHECK(lakh::format_progress("rows", 500, 1000, 100.0) == "rows 50.0% 500/1000 100/s ETA 5.0s");
  CHECK(lakh::format_progress("jobs", 1500, 1000, 2500.0) ==
        "jobs 100.0% 1500/1000 2.5k/s ETA 0.0s");
  CHECK(lakh::format_progress("rows", 0, 1000, 0.0) == "rows 0.0% 0/1000 0/s");
  CHECK(lakh::format_progress("events", 42, 0, 3.5e9) == "events 42 3.5G/s");
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
    lakh::progress_line p(
        "rows", 100, [&] { return done.value(); }, o);
    for (int i = 0; i < 10; ++i) {
      done.add(10);
      std::this_thread::sleep_for(5ms);
    }
    std::this_thread::sleep_for(30ms);
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
  REQUIRE(lines.size() >= 2); // at least one periodic line and the final one
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
