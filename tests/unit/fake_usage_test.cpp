// The generator and the rating against the reference values of docs/fake.md. Values are
// computed by lakh::fake and compared here; none is copied into the code under test.
#include <lakh/fake/usage.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <stdexcept>
#include <thread>
#include <vector>

namespace fake = lakh::fake;

namespace {

// A splitmix64 stream advanced one draw at a time, written from docs/fake.md's description, to
// check the O(1) row_at against the sequential definition.
struct sequential_splitmix {
  std::uint64_t state;
  std::uint64_t next() {
    state += 0x9E3779B97F4A7C15ULL;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
};

} // namespace

TEST_CASE("fake.usage.first_rows_match_the_spec") {
  const auto r1 = fake::row_at(42, 0);
  CHECK(r1.id == 1);
  CHECK(r1.tenant_id == 5413);
  CHECK(r1.user_id == 5413291);
  CHECK(r1.kind == fake::metric::seats);
  CHECK(r1.quantity == 3859);
  CHECK(r1.ts == 1769241943);
  CHECK(fake::charge_cents(r1) == 178655);

  const auto r2 = fake::row_at(42, 1);
  CHECK(r2 == fake::usage_row{2, 5764, 5764250, 4063, fake::metric::compute_seconds, 1767903994});
  CHECK(fake::charge_cents(r2) == 7513);

  const auto r3 = fake::row_at(42, 2);
  CHECK(r3 == fake::usage_row{3, 4925, 4925908, 2006, fake::metric::compute_seconds, 1767490295});
  CHECK(fake::charge_cents(r3) == 3810);
}

TEST_CASE("fake.usage.row_at_equals_the_sequential_stream") {
  for (std::uint64_t seed : {0ULL, 1ULL, 42ULL, 0xFFFFFFFFFFFFFFFFULL}) {
    sequential_splitmix rng{seed};
    for (std::uint64_t i = 0; i < 1000; ++i) {
      const auto a = rng.next();
      const auto b = rng.next();
      const auto c = rng.next();
      const auto row = fake::row_at(seed, i);
      REQUIRE(row.id == i + 1);
      REQUIRE(row.tenant_id == a % 10000);
      REQUIRE(row.user_id == (a % 10000) * 1000 + b % 1000);
      REQUIRE(static_cast<std::uint64_t>(row.kind) == (b >> 32) % 4);
      REQUIRE(row.quantity == 1 + c % 5000);
      REQUIRE(row.ts == static_cast<std::int64_t>(1767225600 + (c >> 32) % 2678400));
      REQUIRE(fake::splitmix64_draw(seed, 3 * i) == a);
    }
  }
}

TEST_CASE("fake.usage.rating_boundaries") {
  CHECK(fake::charge_cents(fake::metric::api_calls, 1) == 1);
  CHECK(fake::charge_cents(fake::metric::storage_gb_hours, 1000) == 3000);
  // Above 1000 units: 10% off the excess, integer division per row.
  CHECK(fake::charge_cents(fake::metric::storage_gb_hours, 1001) == 3000 + (3 * 9) / 10);
  CHECK(fake::charge_cents(fake::metric::api_calls, 1011) == 1000 + 99 / 10);
  CHECK(fake::charge_cents(fake::metric::seats, 5000) == 50000 + (4000 * 50 * 9) / 10);
  CHECK(fake::charge_cents(fake::metric::compute_seconds, 2006) == 3810);
  CHECK(fake::to_string(fake::metric::compute_seconds) == "compute_seconds");
  CHECK_THROWS_AS((void)fake::to_string(static_cast<fake::metric>(7)), std::invalid_argument);
}

TEST_CASE("fake.usage.ten_rows_total_and_checksum") {
  const auto t = fake::reference_totals(42, 10);
  CHECK(t.rows() == 10);
  CHECK(t.total_cents() == 589382);
  CHECK(t.checksum() == 2530857735ULL);
}

TEST_CASE("fake.usage.million_rows_match_the_spec" * doctest::timeout(60)) {
  const auto t = fake::reference_totals(42, 1'000'000);
  CHECK(t.rows() == 1'000'000);
  CHECK(t.tenants() == 10000);
  CHECK(t.total_cents() == 32861578877ULL);
  CHECK(t.checksum() == 164035200010359ULL);
  CHECK(t.tenant(0) == fake::tenant_total{98, 2646343});
  CHECK(t.tenant(1) == fake::tenant_total{90, 3103798});
  CHECK(t.tenant(9999) == fake::tenant_total{86, 2832521});
  CHECK_THROWS_AS((void)t.tenant(10000), std::out_of_range);
}

TEST_CASE("fake.usage.shards_merge_to_the_sequential_totals") {
  constexpr std::uint64_t rows = 50'000;
  const auto whole = fake::reference_totals(7, rows);
  for (std::uint64_t shards : {1ULL, 2ULL, 3ULL, 7ULL}) {
    fake::usage_totals merged;
    std::uint64_t begin = 0;
    for (std::uint64_t s = 0; s < shards; ++s) {
      const std::uint64_t end = rows * (s + 1) / shards;
      merged.merge(fake::reference_totals(7, end - begin, begin));
      begin = end;
    }
    CHECK(merged == whole);
  }
}

TEST_CASE("fake.usage.generator_resumes_anywhere") {
  fake::usage_generator g(42, 0);
  std::vector<fake::usage_row> first(100);
  g.fill(first);
  CHECK(g.position() == 100);
  fake::usage_generator resumed(42, 60);
  for (std::uint64_t i = 60; i < 100; ++i) {
    CHECK(resumed.next() == first[i]);
  }
  CHECK(resumed.position() == 100);
  CHECK(g.next() == fake::row_at(42, 100));
}

TEST_CASE("fake.usage.add_rejects_foreign_tenants") {
  fake::usage_totals t;
  auto row = fake::row_at(42, 0);
  row.tenant_id = fake::tenant_count;
  CHECK_THROWS_WITH_AS(t.add(row),
                       "lakh::fake::usage_totals::add: tenant_id (10000) is not below 10000",
                       std::out_of_range);
  CHECK(t.rows() == 0);
}

TEST_CASE("fake.usage.stream_usage_delivers_every_row_once" * doctest::timeout(30)) {
  for (std::size_t generators : {1U, 2U, 4U}) {
    constexpr std::uint64_t rows = 20'011; // not a multiple of the batch size
    lakh::channel<fake::usage_batch> ch(8);
    std::vector<std::jthread> gens;
    for (std::size_t g = 0; g < generators; ++g) {
      const std::uint64_t begin = rows * g / generators;
      const std::uint64_t end = rows * (g + 1) / generators;
      gens.emplace_back([&ch, begin, end] {
        REQUIRE(fake::stream_usage(ch, 3, begin, end - begin, 97) == lakh::status::ok);
      });
    }
    std::jthread closer([&] {
      for (auto &t : gens) {
        t.join();
      }
      ch.close();
    });
    fake::usage_totals got;
    std::vector<bool> seen(rows, false);
    for (auto &batch : ch) {
      REQUIRE(batch.rows.size() <= 97);
      for (std::size_t k = 0; k < batch.rows.size(); ++k) {
        const auto &r = batch.rows[k];
        REQUIRE(r.id == batch.first_index + k + 1);
        REQUIRE_FALSE(seen[r.id - 1]);
        seen[r.id - 1] = true;
      }
      got.add(batch.rows);
    }
    CHECK(got == fake::reference_totals(3, rows));
  }
}

TEST_CASE("fake.usage.stream_usage_stops_on_close_and_cancel" * doctest::timeout(30)) {
  lakh::channel<fake::usage_batch> ch(1);
  std::stop_source stop;
  std::jthread cancel([&] {
    while (ch.size() < 1) {
      std::this_thread::yield();
    }
    stop.request_stop();
  });
  CHECK(fake::stream_usage(ch, 42, 0, 1000, 10, stop.get_token()) == lakh::status::cancelled);
  cancel.join();
  ch.close();
  CHECK(fake::stream_usage(ch, 42, 0, 1000, 10) == lakh::status::closed);
  CHECK_THROWS_WITH_AS((void)fake::stream_usage(ch, 42, 0, 10, 0),
                       "lakh::fake::stream_usage: batch_size is 0", std::invalid_argument);
}
