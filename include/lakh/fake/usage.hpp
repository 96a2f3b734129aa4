#pragma once
// lakh/fake/usage.hpp: lakh::fake, a deterministic month of SaaS usage rows and their
// billing arithmetic, in one place for every path that must agree to the cent (the
// in-memory pipeline, COPY into PostgreSQL, the billing run, the services): rows as a pure
// function of (seed, index) from splitmix64, so any shard or resumed run reproduces the
// sequential one; the rating; per-tenant totals that merge exactly, and their checksum.
// stream_usage feeds a lakh::channel with batches. Guide, with the arithmetic and reference
// values: docs/fake.md.
//
// Everything here is pure (thread-safe, never blocks, never allocates) unless its comment
// says otherwise.

#include <lakh/channel.hpp>
#include <lakh/status.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace lakh::fake {

/// What a usage row measures (the numbers are part of the row format: docs/fake.md).
enum class metric : std::uint8_t {
  api_calls = 0,
  storage_gb_hours = 1,
  compute_seconds = 2,
  seats = 3,
};

/// Number of metrics; `metric` values are 0..metric_count-1.
inline constexpr std::size_t metric_count = 4;

/// The metric's name as the database schemas spell it ("api_calls", ...).
/// @throws std::invalid_argument if m is not a metric.
[[nodiscard]] constexpr std::string_view to_string(metric m) {
  switch (m) {
  case metric::api_calls:
    return "api_calls";
  case metric::storage_gb_hours:
    return "storage_gb_hours";
  case metric::compute_seconds:
    return "compute_seconds";
  case metric::seats:
    return "seats";
  }
  throw std::invalid_argument("lakh::fake::to_string: metric value " +
                              std::to_string(static_cast<unsigned>(m)) + " is not a metric");
}

/// Number of tenants the generator draws from (tenant_id is 0..tenant_count-1).
inline constexpr std::uint32_t tenant_count = 10000;

/// The default seed, used by every example.
inline constexpr std::uint64_t default_seed = 42;

/// First timestamp of the generated month (2026-01-01T00:00:00Z) and its length in seconds.
inline constexpr std::int64_t period_start_unix = 1767225600;
inline constexpr std::int64_t period_seconds = 2678400;

/// One usage row (32 bytes); fields and ranges: docs/fake.md.
struct usage_row {
  std::uint64_t id;        ///< index + 1
  std::uint32_t tenant_id; ///< 0..9999
  std::uint32_t user_id;   ///< tenant_id * 1000 + 0..999
  std::uint32_t quantity;  ///< 1..5000
  metric kind;             ///< what was used
  std::int64_t ts;         ///< unix seconds inside January 2026 UTC

  friend constexpr bool operator==(const usage_row &, const usage_row &) = default;
};

namespace detail {

inline constexpr std::uint64_t splitmix_gamma = 0x9E3779B97F4A7C15ULL;

/// splitmix64's output function.
[[nodiscard]] constexpr std::uint64_t splitmix_mix(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

inline constexpr std::array<std::uint64_t, metric_count> unit_price_cents = {1, 3, 2, 50};

} // namespace detail

/// Draw number `d` (0-based) of the splitmix64 stream that starts at `seed`.
[[nodiscard]] constexpr std::uint64_t splitmix64_draw(std::uint64_t seed,
                                                      std::uint64_t d) noexcept {
  return detail::splitmix_mix(seed + (d + 1) * detail::splitmix_gamma);
}

/// Row `index` (0-based; its id is index + 1) of the stream with `seed`, in O(1): draws
/// 3 * index, 3 * index + 1 and 3 * index + 2.
[[nodiscard]] constexpr usage_row row_at(std::uint64_t seed, std::uint64_t index) noexcept {
  const std::uint64_t base = seed + 3 * index * detail::splitmix_gamma;
  const std::uint64_t a = detail::splitmix_mix(base + 1 * detail::splitmix_gamma);
  const std::uint64_t b = detail::splitmix_mix(base + 2 * detail::splitmix_gamma);
  const std::uint64_t c = detail::splitmix_mix(base + 3 * detail::splitmix_gamma);
  const auto tenant = static_cast<std::uint32_t>(a % tenant_count);
  return usage_row{
      .id = index + 1,
      .tenant_id = tenant,
      .user_id = tenant * 1000U + static_cast<std::uint32_t>(b % 1000),
      .quantity = 1U + static_cast<std::uint32_t>(c % 5000),
      .kind = static_cast<metric>((b >> 32) % metric_count),
      .ts = period_start_unix + static_cast<std::int64_t>((c >> 32) % period_seconds),
  };
}

/// Unit price of a metric in cents ({1, 3, 2, 50}).
[[nodiscard]] constexpr std::uint64_t unit_price_cents(metric m) noexcept {
  return detail::unit_price_cents[static_cast<std::size_t>(m) % metric_count];
}

/// The rating: quantity * price up to 1000 units, 10% off (integer division, per row) for
/// the units above 1000.
[[nodiscard]] constexpr std::uint64_t charge_cents(metric m, std::uint64_t quantity) noexcept {
  // Written without a branch (the generator's quantities fall on either side at random):
  // over == 0 gives quantity * price.
  const std::uint64_t price = unit_price_cents(m);
  const std::uint64_t over = quantity > 1000 ? quantity - 1000 : 0;
  return (quantity - over) * price + (over * price * 9) / 10;
}

/// charge_cents(row.kind, row.quantity).
[[nodiscard]] constexpr std::uint64_t charge_cents(const usage_row &row) noexcept {
  return charge_cents(row.kind, row.quantity);
}

/// Fill `out` with rows first_index, first_index + 1, ... of the stream with `seed`.
constexpr void fill_rows(std::uint64_t seed, std::uint64_t first_index,
                         std::span<usage_row> out) noexcept {
  for (std::size_t k = 0; k < out.size(); ++k) {
    out[k] = row_at(seed, first_index + k);
  }
}

/// A sequential reader of the stream with `seed`, starting at any index. Not thread-safe:
/// one generator per thread.
class usage_generator {
public:
  /// Start at row `first_index` (0 for the beginning; any other value to resume or shard).
  explicit constexpr usage_generator(std::uint64_t seed = default_seed,
                                     std::uint64_t first_index = 0) noexcept
      : seed_(seed), next_(first_index) {}

  /// The next row; advances by one.
  constexpr usage_row next() noexcept { return row_at(seed_, next_++); }

  /// Fill `out` with the next out.size() rows; advances by out.size().
  constexpr void fill(std::span<usage_row> out) noexcept {
    fill_rows(seed_, next_, out);
    next_ += out.size();
  }

  /// Index of the row next() returns.
  [[nodiscard]] constexpr std::uint64_t position() const noexcept { return next_; }

  [[nodiscard]] constexpr std::uint64_t seed() const noexcept { return seed_; }

private:
  std::uint64_t seed_;
  std::uint64_t next_;
};

/// Row count and charge sum of one tenant.
struct tenant_total {
  std::uint64_t rows = 0;
  std::uint64_t cents = 0;

  friend constexpr bool operator==(const tenant_total &, const tenant_total &) = default;
};

/// Per-tenant aggregates of any set of rows, with the total and the checksum. One per
/// worker on a hot path, merged at the end: not thread-safe (const members may be called
/// concurrently). 160 KiB (a dense array over the 10,000 tenants), allocated once by the
/// constructor; no other member allocates except to build an exception.
class usage_totals {
public:
  /// Empty totals.
  usage_totals() : tenants_(tenant_count) {}

  /// Count one row.
  /// @throws std::out_of_range if row.tenant_id >= tenant_count (a row not from lakh::fake).
  void add(const usage_row &row) {
    if (row.tenant_id >= tenant_count) [[unlikely]] {
      throw std::out_of_range("lakh::fake::usage_totals::add: tenant_id (" +
                              std::to_string(row.tenant_id) + ") is not below " +
                              std::to_string(tenant_count));
    }
    auto &t = tenants_[row.tenant_id];
    ++t.rows;
    t.cents += charge_cents(row);
  }

  /// Count every row of `rows`. Same contract as add(row).
  void add(std::span<const usage_row> rows) {
    for (const auto &r : rows) {
      add(r);
    }
  }

  /// Add another object's counts (totals of disjoint row sets merge exactly). `other` must
  /// not change meanwhile.
  void merge(const usage_totals &other) noexcept {
    for (std::size_t t = 0; t < tenants_.size(); ++t) {
      tenants_[t].rows += other.tenants_[t].rows;
      tenants_[t].cents += other.tenants_[t].cents;
    }
  }

  /// Totals of one tenant.
  /// @throws std::out_of_range if tenant_id >= tenant_count.
  [[nodiscard]] tenant_total tenant(std::uint32_t tenant_id) const {
    if (tenant_id >= tenant_count) {
      throw std::out_of_range("lakh::fake::usage_totals::tenant: tenant_id (" +
                              std::to_string(tenant_id) + ") is not below " +
                              std::to_string(tenant_count));
    }
    return tenants_[tenant_id];
  }

  /// Rows counted.
  [[nodiscard]] std::uint64_t rows() const noexcept {
    std::uint64_t n = 0;
    for (const auto &t : tenants_) {
      n += t.rows;
    }
    return n;
  }

  /// Tenants with at least one row.
  [[nodiscard]] std::uint64_t tenants() const noexcept {
    std::uint64_t n = 0;
    for (const auto &t : tenants_) {
      n += t.rows != 0 ? 1U : 0U;
    }
    return n;
  }

  /// Sum of charge_cents over all rows.
  [[nodiscard]] std::uint64_t total_cents() const noexcept {
    std::uint64_t n = 0;
    for (const auto &t : tenants_) {
      n += t.cents;
    }
    return n;
  }

  /// The checksum: sum over tenants of (tenant_id + 1) * tenant cents, mod 2^64.
  [[nodiscard]] std::uint64_t checksum() const noexcept {
    std::uint64_t sum = 0;
    for (std::size_t t = 0; t < tenants_.size(); ++t) {
      sum += (t + 1) * tenants_[t].cents;
    }
    return sum;
  }

  friend bool operator==(const usage_totals &, const usage_totals &) = default;

private:
  std::vector<tenant_total> tenants_;
};

/// Totals of rows [first_index, first_index + count) of the stream with `seed`, computed
/// sequentially: the reference every parallel or database path is checked against.
/// Allocates: 160 KiB (one usage_totals).
[[nodiscard]] inline usage_totals reference_totals(std::uint64_t seed, std::uint64_t count,
                                                   std::uint64_t first_index = 0) {
  usage_totals totals;
  for (std::uint64_t i = 0; i < count; ++i) {
    totals.add(row_at(seed, first_index + i));
  }
  return totals;
}

/// A batch of consecutive rows as it travels through a channel: `first_index` says where it
/// starts, so a consumer can tell which rows it holds (resume, dedupe, ordering checks).
struct usage_batch {
  std::uint64_t first_index = 0;
  std::vector<usage_row> rows;
};

/// Send rows [first_index, first_index + count) of the stream with `seed` to `out` as
/// batches of up to `batch_size` rows, in order. Does not close `out` (several generators
/// may share it; the caller closes it when all are done).
/// Returns status::ok when every row was sent, status::closed if `out` was closed
/// (by a consumer giving up) or status::cancelled if `st` was stopped; in both cases the
/// rows from the first unsent batch on were not sent.
/// Several generators may feed one channel with disjoint ranges.
/// Blocks: while `out` is full, until stop is requested or `out` is closed.
/// @throws std::invalid_argument if batch_size is 0. Allocates: one vector per batch.
inline status stream_usage(channel<usage_batch> &out, std::uint64_t seed, std::uint64_t first_index,
                           std::uint64_t count, std::size_t batch_size, std::stop_token st = {}) {
  if (batch_size == 0) {
    throw std::invalid_argument("lakh::fake::stream_usage: batch_size is 0");
  }
  const std::uint64_t end = first_index + count;
  for (std::uint64_t i = first_index; i < end;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(batch_size, end - i));
    usage_batch b{i, std::vector<usage_row>(n)};
    fill_rows(seed, i, b.rows);
    i += n;
    if (auto s = out.send(std::move(b), st); s != status::ok) {
      return s;
    }
  }
  return status::ok;
}

} // namespace lakh::fake
