#pragma once
// lakh/metrics.hpp: the few measurements a concurrent service or a long batch run needs,
// without a metrics client library:
//   - counter, gauge (with a high-water mark), throughput_meter: relaxed atomics;
//   - latency_histogram: log-linear buckets (as HdrHistogram: 128 sub-buckets per power of
//     two), so every quantile is within 1/256 (0.4%) relative error (1% promised) from 1 ns
//     to 2^48 ns (about 78 hours), with a wait-free bucket update and an exact merge().
// Exposition is lakh/prometheus.hpp (registry: named metrics with labels, Prometheus text);
// a terminal progress display is lakh/progress.hpp. docs/metrics.md.
//
// Memory ordering (all types): every update is a relaxed atomic read-modify-write, so
// updates impose no ordering on the code around them and never block. What holds:
//   - each single value (a counter, a gauge's value, its max, one histogram bucket) is an
//     atomic: no update is lost, and every reader sees a value that some point of that
//     value's modification order held (for a counter: at least every add that
//     happened-before the read);
//   - an update made by thread A is visible to a reader that synchronizes with A afterwards
//     (A was joined, or handed its result over a channel, a mutex, a release/acquire pair):
//     after the writers are joined, every value is exact;
//   - while writers are running, a reader that reads several values (a histogram's buckets,
//     sum, min and max; a gauge's value and max; Prometheus text of several metrics) reads
//     each one at its own moment: they can disagree by the records in flight. A histogram's
//     count is the sum of its buckets and its quantiles are ranked within that sum by one
//     cumulative pass over them, so the four quantiles and the _count of one Prometheus
//     summary are mutually consistent (monotone in q, ranks within that count); its _sum
//     may lead or lag them by the records in flight. Buckets are read one by one while
//     records go on, so a pass is not one instant either: a record landing in a bucket
//     already read is simply not seen by it.
// Fairness does not arise: nothing waits. Every member of these types is thread-safe and
// never blocks or allocates unless its comment says otherwise.

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace lakh {

/// A monotonically increasing count (events, rows, bytes).
///
/// One relaxed fetch_add per add(): cheap from many threads, but all of them share one cache
/// line; shard per thread and sum at the end if a profile shows it (docs/metrics.md).
class counter {
public:
  /// Adds n (wraps modulo 2^64).
  /// Blocks: never (wait-free).
  void add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }

  /// The count so far: at least every add() that happened-before this call.
  [[nodiscard]] std::uint64_t value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

private:
  std::atomic<std::uint64_t> value_{0};
};

/// A value that goes up and down (queue length, connections in use), and the highest value
/// it has had since construction or reset() (its high-water mark). The mark starts at 0.
///
/// max() is exact: it is the largest value that set() stored or that an add() produced (the
/// result of each fetch_add), never a value the gauge did not hold.
class gauge {
public:
  /// Sets the value (and raises the high-water mark to it if higher).
  /// Blocks: never (a CAS on the mark retried only while other threads raise it).
  void set(std::int64_t v) noexcept {
    value_.store(v, std::memory_order_relaxed);
    raise_max(v);
  }

  /// Adds d, which may be negative (wraps modulo 2^64 rather than overflowing).
  /// Blocks: never (as set()).
  void add(std::int64_t d) noexcept {
    const std::int64_t old = value_.fetch_add(d, std::memory_order_relaxed);
    raise_max(
        static_cast<std::int64_t>(static_cast<std::uint64_t>(old) + static_cast<std::uint64_t>(d)));
  }

  /// The current value.
  [[nodiscard]] std::int64_t value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

  /// The highest value set or reached since construction or reset() (at least 0).
  /// may lag a concurrent set()/add() by that one update.
  [[nodiscard]] std::int64_t max() const noexcept { return max_.load(std::memory_order_relaxed); }

  /// Sets the value and the high-water mark to 0.
  /// an update racing with it may land before or after it.
  void reset() noexcept {
    value_.store(0, std::memory_order_relaxed);
    max_.store(0, std::memory_order_relaxed);
  }

private:
  void raise_max(std::int64_t v) noexcept {
    std::int64_t seen = max_.load(std::memory_order_relaxed);
    while (v > seen && !max_.compare_exchange_weak(seen, v, std::memory_order_relaxed)) {
    }
  }

  std::atomic<std::int64_t> value_{0};
  std::atomic<std::int64_t> max_{0};
};

class registry;

/// Latency distribution in nanoseconds: count, sum, min, max, mean and quantiles.
///
/// Buckets are log-linear: values below 128 ns have a bucket each (exact); above, every power
/// of two is split into 128 equal buckets, and a quantile reports the middle of its bucket
/// (clamped to [min, max]), so it is within 1/256 (0.4%) of the exact sample quantile
/// (nearest rank: the smallest sample with at least ceil(q * count) samples at or below it).
/// Values of 2^48 ns (about 78 hours) and more share the last bucket; min() and max() stay
/// exact. 43 KiB per histogram (5376 atomic buckets), fixed: recording never allocates.
///
/// record() does one relaxed fetch_add on its bucket and one on the sum (wait-free), then
/// reads min and max; only a sample that is a new minimum or maximum does a CAS, retried
/// while other threads set new extremes meanwhile (lock-free). After the first samples new
/// extremes are rare, so in practice record() is two fetch_adds and two loads. There is no
/// separate count to update: count() adds up the buckets, a read-side pass like quantile().
class latency_histogram {
public:
  /// Records one duration; a negative duration counts as 0.
  /// Blocks: never (see the class comment for the min/max CAS).
  void record(std::chrono::nanoseconds d) noexcept {
    record_ns(d.count() > 0 ? static_cast<std::uint64_t>(d.count()) : 0);
  }

  /// Records one duration given in nanoseconds.
  void record_ns(std::uint64_t ns) noexcept {
    buckets_[index_of(ns)].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(ns, std::memory_order_relaxed);
    lower_min(ns);
    raise_max(ns);
  }

  /// Adds other's samples to this histogram, as if they had been recorded here (bucket
  /// counts and sums add; min and max combine). h.merge(h) doubles every count.
  /// records into either histogram racing with the merge may or may
  /// not be included, and the merged sum may then miss one whose bucket was merged.
  void merge(const latency_histogram &other) noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) {
      if (const auto n = other.buckets_[i].load(std::memory_order_relaxed); n != 0) {
        buckets_[i].fetch_add(n, std::memory_order_relaxed);
      }
    }
    sum_.fetch_add(other.sum_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    lower_min(other.min_.load(std::memory_order_relaxed)); // no_min when other is empty
    raise_max(other.max_.load(std::memory_order_relaxed)); // 0 when other is empty
  }

  /// Number of samples: the sum of the bucket counts.
  /// records racing with it may or may not be counted.
  /// Blocks: never (one pass over the 5376 buckets; record() stays cheaper for not keeping a
  /// separate count).
  [[nodiscard]] std::uint64_t count() const noexcept {
    std::uint64_t n = 0;
    for (const auto &b : buckets_) {
      n += b.load(std::memory_order_relaxed);
    }
    return n;
  }

  /// Sum of all samples (exact, not bucketed), in nanoseconds; wraps after 292 years of
  /// recorded time.
  [[nodiscard]] std::chrono::nanoseconds sum() const noexcept {
    return std::chrono::nanoseconds(
        static_cast<std::int64_t>(sum_.load(std::memory_order_relaxed)));
  }

  /// The q-quantile (0.5 median, 0.99, ...) within 0.4% relative error; 0 ns when empty.
  /// quantile(0) is min() and quantile(1) is max(), exactly.
  /// records racing with it may or may not be counted.
  /// Blocks: never (two passes over the 5376 buckets).
  /// @throws std::invalid_argument if q is not within [0, 1] (NaN included).
  /// Allocates: only for the exception's message.
  [[nodiscard]] std::chrono::nanoseconds quantile(double q) const {
    if (!(q >= 0.0 && q <= 1.0)) {
      throw std::invalid_argument("lakh::latency_histogram::quantile: q (" + std::to_string(q) +
                                  ") is not within [0, 1]");
    }
    std::chrono::nanoseconds out{0};
    quantiles_sorted(&q, &out, 1);
    return out;
  }

  /// Smallest sample; 0 ns when empty.
  [[nodiscard]] std::chrono::nanoseconds min() const noexcept {
    const std::uint64_t lo = min_.load(std::memory_order_relaxed);
    return lo == no_min ? std::chrono::nanoseconds(0)
                        : std::chrono::nanoseconds(static_cast<std::int64_t>(lo));
  }

  /// Largest sample; 0 ns when empty.
  [[nodiscard]] std::chrono::nanoseconds max() const noexcept {
    return std::chrono::nanoseconds(
        static_cast<std::int64_t>(max_.load(std::memory_order_relaxed)));
  }

  /// Mean in nanoseconds (exact sum / count()); 0 when empty.
  /// Blocks: never (a pass over the buckets, as count()).
  [[nodiscard]] double mean_ns() const noexcept {
    const std::uint64_t n = count();
    return n == 0
               ? 0.0
               : static_cast<double>(sum_.load(std::memory_order_relaxed)) / static_cast<double>(n);
  }

  /// Forgets every sample.
  /// Thread-safety: safe, but a record() racing with it may be kept in part (e.g. in its
  /// bucket but not in sum()); reset while no one records for exact figures.
  void reset() noexcept {
    for (auto &b : buckets_) {
      b.store(0, std::memory_order_relaxed);
    }
    sum_.store(0, std::memory_order_relaxed);
    min_.store(no_min, std::memory_order_relaxed);
    max_.store(0, std::memory_order_relaxed);
  }

private:
  friend class registry;

  static constexpr unsigned sub_bits = 7; // 128 buckets per power of two
  static constexpr std::uint64_t sub_count = std::uint64_t{1} << sub_bits;
  static constexpr unsigned top_exponent = 47; // the last power of two with its own buckets
  static constexpr std::size_t bucket_count = sub_count + (top_exponent - sub_bits + 1) * sub_count;
  static constexpr std::uint64_t no_min = std::numeric_limits<std::uint64_t>::max();

  static std::size_t index_of(std::uint64_t v) noexcept {
    if (v < sub_count) {
      return static_cast<std::size_t>(v);
    }
    const auto e = static_cast<unsigned>(std::bit_width(v)) - 1; // floor(log2 v) >= sub_bits
    if (e > top_exponent) {
      return bucket_count - 1;
    }
    const unsigned shift = e - sub_bits;
    const std::uint64_t sub = (v >> shift) - sub_count;
    return static_cast<std::size_t>(sub_count + (e - sub_bits) * sub_count + sub);
  }

  // The middle of bucket i: bucket [lo, lo + 2^shift) reports lo + 2^shift / 2.
  static std::uint64_t middle_of(std::size_t i) noexcept {
    if (i < sub_count) {
      return i;
    }
    const std::size_t k = i - sub_count;
    const auto shift = static_cast<unsigned>(k / sub_count);
    const std::uint64_t sub = k % sub_count;
    const std::uint64_t lo = (sub_count + sub) << shift;
    return lo + ((std::uint64_t{1} << shift) >> 1);
  }

  // out[k] = the samples in the buckets up to the one holding le[k] ns (le ascending): every
  // sample at or below le[k], and possibly some above it in that bucket (at most 1/128 above).
  // Returns the count of all samples, from the same pass (so it is never below out[n - 1]).
  std::uint64_t cumulative_counts(const std::uint64_t *le, std::uint64_t *out,
                                  std::size_t n) const noexcept {
    std::uint64_t seen = 0;
    std::size_t k = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
      seen += buckets_[i].load(std::memory_order_relaxed);
      while (k < n && index_of(le[k]) == i) {
        out[k++] = seen;
      }
    }
    return seen;
  }

  // out[k] = the qs[k]-quantile, for qs ascending within [0, 1]: a pass to count, then one
  // cumulative pass for all n ranks (so the n results are monotone even while others
  // record). Returns the count the ranks were taken from.
  std::uint64_t quantiles_sorted(const double *qs, std::chrono::nanoseconds *out,
                                 std::size_t n) const noexcept {
    const std::uint64_t total = count();
    if (total == 0) {
      std::fill(out, out + n, std::chrono::nanoseconds(0));
      return 0;
    }
    const std::uint64_t lo = min_.load(std::memory_order_relaxed);
    const std::uint64_t hi = max_.load(std::memory_order_relaxed);
    std::uint64_t seen = 0; // samples in buckets [0, i)
    std::size_t i = 0;      // the next bucket to read
    std::size_t at = 0;     // the last non-empty bucket read: where `seen` last grew
    for (std::size_t k = 0; k < n; ++k) {
      const auto rank = std::max<std::uint64_t>(
          1, static_cast<std::uint64_t>(std::ceil(qs[k] * static_cast<double>(total))));
      while (seen < rank && i < bucket_count) {
        if (const std::uint64_t c = buckets_[i].load(std::memory_order_relaxed); c != 0) {
          seen += c;
          at = i;
        }
        ++i;
      }
      // Now bucket `at` holds the rank-th sample. (If a reset() raced with this pass, seen may
      // stay below rank: `at` is then the highest bucket seen, the best answer left.)
      std::uint64_t v = middle_of(at);
      if (lo <= hi) { // a sample's min/max are visible: the exact bounds of every quantile
        v = rank == 1 ? lo : rank >= total ? hi : std::clamp(v, lo, hi);
      }
      out[k] = std::chrono::nanoseconds(static_cast<std::int64_t>(v));
    }
    return total;
  }

  void lower_min(std::uint64_t v) noexcept {
    std::uint64_t seen = min_.load(std::memory_order_relaxed);
    while (v < seen && !min_.compare_exchange_weak(seen, v, std::memory_order_relaxed)) {
    }
  }

  void raise_max(std::uint64_t v) noexcept {
    std::uint64_t seen = max_.load(std::memory_order_relaxed);
    while (v > seen && !max_.compare_exchange_weak(seen, v, std::memory_order_relaxed)) {
    }
  }

  std::array<std::atomic<std::uint64_t>, bucket_count> buckets_{};
  std::atomic<std::uint64_t> sum_{0};
  std::atomic<std::uint64_t> min_{no_min};
  std::atomic<std::uint64_t> max_{0};
};

/// Items per second since construction or restart().
class throughput_meter {
public:
  /// Starts the clock (std::chrono::steady_clock).
  /// Thread-safety: constructs a new object.
  throughput_meter() noexcept : start_ns_(now_ns()) {}

  /// Counts n items.
  /// Blocks: never (wait-free).
  void add(std::uint64_t n = 1) noexcept { total_.fetch_add(n, std::memory_order_relaxed); }

  /// Items counted since the start.
  [[nodiscard]] std::uint64_t total() const noexcept {
    return total_.load(std::memory_order_relaxed);
  }

  /// Time since construction or the last restart().
  [[nodiscard]] std::chrono::nanoseconds elapsed() const noexcept {
    return std::chrono::nanoseconds(now_ns() - start_ns_.load(std::memory_order_relaxed));
  }

  /// total() / elapsed() in items per second (0 before any time has passed): the average
  /// rate over the whole interval, not a recent one.
  [[nodiscard]] double per_second() const noexcept {
    const double s = std::chrono::duration<double>(elapsed()).count();
    return s > 0 ? static_cast<double>(total()) / s : 0.0;
  }

  /// Zeroes the count and restarts the clock.
  /// an add() racing with it may land before or after it, and a
  /// reader racing with it may see the new count with the old start or the reverse.
  void restart() noexcept {
    total_.store(0, std::memory_order_relaxed);
    start_ns_.store(now_ns(), std::memory_order_relaxed);
  }

private:
  static std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  std::atomic<std::uint64_t> total_{0};
  std::atomic<std::int64_t> start_ns_;
};

} // namespace lakh
