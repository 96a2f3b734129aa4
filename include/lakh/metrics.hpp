#pragma once
// lakh/metrics.hpp: the few measurements a concurrent service or a long batch run needs,
// without a metrics client library:
//   - counter, gauge (with a high-water mark), throughput_meter: relaxed atomics;
//   - latency_histogram: log-linear buckets (as HdrHistogram: 128 sub-buckets per power of
//     two), so every quantile is within 1/256 (0.4%) relative error (1% promised) from 1 ns
//     to 2^48 ns (about 78 hours), with a wait-free bucket update and an exact merge();
//   - registry: named metrics with labels, written in the Prometheus text exposition
//     format 0.0.4 (histograms as summaries);
//   - progress_line: percent, rate and ETA of a long run, redrawn in place on a terminal or
//     printed every few seconds into a log.
// Unlike prometheus-cpp there is no HTTP exposer, no push gateway, no bucketed Prometheus
// histogram type: a service serves registry::prometheus_text() from its own endpoint.
// Unlike std::atomic<uint64_t> used by hand, the types say what they measure and a registry
// can expose them by name.
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
// Fairness does not arise: nothing waits, except progress_line's own thread.

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if defined(_WIN32)
#  include <io.h>
#else
#  include <unistd.h>
#endif

namespace lakh {

/// A monotonically increasing count (events, rows, bytes).
///
/// One relaxed fetch_add per add(): cheap from many threads, but all of them share one cache
/// line; shard per thread and sum at the end if a profile shows it (docs/metrics.md).
class counter {
public:
  /// Adds n (wraps modulo 2^64).
  /// Thread-safety: safe from any number of threads.
  /// Blocks: never (wait-free).
  /// Allocates: never.
  void add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }

  /// The count so far: at least every add() that happened-before this call.
  /// Thread-safety: safe.
  /// Blocks: never.
  /// Allocates: never.
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
  /// Thread-safety: safe.
  /// Blocks: never (a CAS on the mark retried only while other threads raise it).
  /// Allocates: never.
  void set(std::int64_t v) noexcept {
    value_.store(v, std::memory_order_relaxed);
    raise_max(v);
  }

  /// Adds d, which may be negative (wraps modulo 2^64 rather than overflowing).
  /// Thread-safety: safe.
  /// Blocks: never (as set()).
  /// Allocates: never.
  void add(std::int64_t d) noexcept {
    const std::int64_t old = value_.fetch_add(d, std::memory_order_relaxed);
    raise_max(
        static_cast<std::int64_t>(static_cast<std::uint64_t>(old) + static_cast<std::uint64_t>(d)));
  }

  /// The current value.
  /// Thread-safety: safe.
  /// Blocks: never.
  /// Allocates: never.
  [[nodiscard]] std::int64_t value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

  /// The highest value set or reached since construction or reset() (at least 0).
  /// Thread-safety: safe; may lag a concurrent set()/add() by that one update.
  /// Blocks: never.
  /// Allocates: never.
  [[nodiscard]] std::int64_t max() const noexcept { return max_.load(std::memory_order_relaxed); }

  /// Sets the value and the high-water mark to 0.
  /// Thread-safety: safe; an update racing with it may land before or after it.
  /// Blocks: never.
  /// Allocates: never.
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
  /// Thread-safety: safe from any number of threads.
  /// Blocks: never (see the class comment for the min/max CAS).
  /// Allocates: never.
  void record(std::chrono::nanoseconds d) noexcept {
    record_ns(d.count() > 0 ? static_cast<std::uint64_t>(d.count()) : 0);
  }

  /// Records one duration given in nanoseconds.
  /// Thread-safety: safe from any number of threads.
  /// Blocks: never.
  /// Allocates: never.
  void record_ns(std::uint64_t ns) noexcept {
    buckets_[index_of(ns)].fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(ns, std::memory_order_relaxed);
    lower_min(ns);
    raise_max(ns);
  }

  /// Adds other's samples to this histogram, as if they had been recorded here (bucket
  /// counts and sums add; min and max combine). h.merge(h) doubles every count.
  /// Thread-safety: safe; records into either histogram racing with the merge may or may
  /// not be included, and the merged sum may then miss one whose bucket was merged.
  /// Blocks: never.
  /// Allocates: never.
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
  /// Thread-safety: safe; records racing with it may or may not be counted.
  /// Blocks: never (one pass over the 5376 buckets, about 2 us; record() stays cheaper for
  /// not keeping a separate count).
  /// Allocates: never.
  [[nodiscard]] std::uint64_t count() const noexcept {
    std::uint64_t n = 0;
    for (const auto &b : buckets_) {
      n += b.load(std::memory_order_relaxed);
    }
    return n;
  }

  /// Sum of all samples (exact, not bucketed), in nanoseconds; wraps after 292 years of
  /// recorded time.
  /// Thread-safety: safe.
  /// Blocks: never.
  /// Allocates: never.
  [[nodiscard]] std::chrono::nanoseconds sum() const noexcept {
    return std::chrono::nanoseconds(
        static_cast<std::int64_t>(sum_.load(std::memory_order_relaxed)));
  }

  /// The q-quantile (0.5 median, 0.99, ...) within 0.4% relative error; 0 ns when empty.
  /// quantile(0) is min() and quantile(1) is max(), exactly.
  /// Thread-safety: safe; records racing with it may or may not be counted.
  /// Blocks: never (two passes over the 5376 buckets, a few microseconds).
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
  /// Thread-safety: safe.
  /// Blocks: never.
  /// Allocates: never.
  [[nodiscard]] std::chrono::nanoseconds min() const noexcept {
    const std::uint64_t lo = min_.load(std::memory_order_relaxed);
    return lo == no_min ? std::chrono::nanoseconds(0)
                        : std::chrono::nanoseconds(static_cast<std::int64_t>(lo));
  }

  /// Largest sample; 0 ns when empty.
  /// Thread-safety: safe.
  /// Blocks: never.
  /// Allocates: never.
  [[nodiscard]] std::chrono::nanoseconds max() const noexcept {
    return std::chrono::nanoseconds(
        static_cast<std::int64_t>(max_.load(std::memory_order_relaxed)));
  }

  /// Mean in nanoseconds (exact sum / count()); 0 when empty.
  /// Thread-safety: safe.
  /// Blocks: never (a pass over the buckets, as count()).
  /// Allocates: never.
  [[nodiscard]] double mean_ns() const noexcept {
    const std::uint64_t n = count();
    return n == 0
               ? 0.0
               : static_cast<double>(sum_.load(std::memory_order_relaxed)) / static_cast<double>(n);
  }

  /// Forgets every sample.
  /// Thread-safety: safe, but a record() racing with it may be kept in part (e.g. in its
  /// bucket but not in sum()); reset while no one records for exact figures.
  /// Blocks: never.
  /// Allocates: never.
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
  /// Blocks: never.
  /// Allocates: never.
  throughput_meter() noexcept : start_ns_(now_ns()) {}

  /// Counts n items.
  /// Thread-safety: safe from any number of threads.
  /// Blocks: never (wait-free).
  /// Allocates: never.
  void add(std::uint64_t n = 1) noexcept { total_.fetch_add(n, std::memory_order_relaxed); }

  /// Items counted since the start.
  /// Thread-safety: safe.
  /// Blocks: never.
  /// Allocates: never.
  [[nodiscard]] std::uint64_t total() const noexcept {
    return total_.load(std::memory_order_relaxed);
  }

  /// Time since construction or the last restart().
  /// Thread-safety: safe.
  /// Blocks: never.
  /// Allocates: never.
  [[nodiscard]] std::chrono::nanoseconds elapsed() const noexcept {
    return std::chrono::nanoseconds(now_ns() - start_ns_.load(std::memory_order_relaxed));
  }

  /// total() / elapsed() in items per second (0 before any time has passed): the average
  /// rate over the whole interval, not a recent one.
  /// Thread-safety: safe.
  /// Blocks: never.
  /// Allocates: never.
  [[nodiscard]] double per_second() const noexcept {
    const double s = std::chrono::duration<double>(elapsed()).count();
    return s > 0 ? static_cast<double>(total()) / s : 0.0;
  }

  /// Zeroes the count and restarts the clock.
  /// Thread-safety: safe; an add() racing with it may land before or after it, and a
  /// reader racing with it may see the new count with the old start or the reverse.
  /// Blocks: never.
  /// Allocates: never.
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

/// Label names and values of one metric, e.g. {{"queue", "billing"}}, written in this order.
using labels = std::vector<std::pair<std::string, std::string>>;

/// Named metrics and their Prometheus text exposition (format 0.0.4).
///
/// Metrics live as long as the registry; the references make_* return stay valid for that
/// long (each metric is allocated once and never moves). Several metrics may share a name
/// with different labels, all of one type; they are written together under one HELP/TYPE
/// header (the first registration's help), in registration order. The registry's mutex
/// orders registrations and writes; the metrics themselves are updated without it, so a
/// write_prometheus() racing with updates reads each value at its own moment (see the
/// header comment).
class registry {
public:
  registry() = default;
  registry(const registry &) = delete;
  registry &operator=(const registry &) = delete;

  /// Registers a counter, exposed as `<name>{labels} <value>` with TYPE counter (by
  /// convention name it `..._total`).
  /// Thread-safety: safe (registrations and writes are serialized by the registry's mutex).
  /// Blocks: briefly, on the registry's mutex.
  /// @throws std::invalid_argument if the name is not a Prometheus metric name
  /// ([a-zA-Z_:][a-zA-Z0-9_:]*), a label name is not a label name ([a-zA-Z_][a-zA-Z0-9_]*,
  /// not starting with "__") or repeats, the same name and labels are registered already,
  /// the name is registered with another type, or it collides with a summary's
  /// `<name>_sum` / `<name>_count` series. The message names the metric.
  /// Allocates: the metric and its entry.
  counter &make_counter(std::string name, std::string help, labels l = {}) {
    return add<counter>(kind::counter, std::move(name), std::move(help), std::move(l));
  }

  /// Registers a gauge, exposed as `<name>{labels} <value>` with TYPE gauge (the high-water
  /// mark is not exposed; register a second gauge if you want it scraped).
  /// Thread-safety: safe.
  /// Blocks: briefly, on the registry's mutex.
  /// @throws std::invalid_argument as make_counter.
  /// Allocates: the metric and its entry.
  gauge &make_gauge(std::string name, std::string help, labels l = {}) {
    return add<gauge>(kind::gauge, std::move(name), std::move(help), std::move(l));
  }

  /// Registers a latency histogram, exposed as a Prometheus summary in seconds: quantiles
  /// 0.5, 0.9, 0.99, 0.999 (`<name>{labels,quantile="0.5"}`), then `<name>_sum` and
  /// `<name>_count`.
  /// Thread-safety: safe.
  /// Blocks: briefly, on the registry's mutex.
  /// @throws std::invalid_argument as make_counter, and if a label is named "quantile".
  /// Allocates: the histogram (43 KiB) and its entry.
  latency_histogram &make_histogram(std::string name, std::string help, labels l = {}) {
    return add<latency_histogram>(kind::summary, std::move(name), std::move(help), std::move(l));
  }

  /// Writes every metric in the Prometheus text format 0.0.4: per name a `# HELP` line (help
  /// with `\` and newline escaped), a `# TYPE` line, then its samples; label values escaped
  /// (`\\`, `\"`, `\n`); floating-point values in the shortest form that reads back exactly.
  /// Thread-safety: safe.
  /// Blocks: on the registry's mutex while writing (registrations wait).
  /// @throws whatever `out` throws (with exceptions enabled on it).
  /// Allocates: may (a few small strings per metric).
  void write_prometheus(std::ostream &out) const {
    std::lock_guard lock(mu_);
    std::vector<bool> done(entries_.size(), false);
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (done[i]) {
        continue;
      }
      const entry &first = entries_[i];
      out << "# HELP " << first.name << ' ' << escape(first.help, false) << '\n';
      out << "# TYPE " << first.name << ' ' << type_name(first.type) << '\n';
      for (std::size_t j = i; j < entries_.size(); ++j) {
        if (!done[j] && entries_[j].name == first.name) {
          done[j] = true;
          write_samples(out, entries_[j]);
        }
      }
    }
  }

  /// write_prometheus() into a string: what a /metrics endpoint returns, with content type
  /// "text/plain; version=0.0.4; charset=utf-8".
  /// Thread-safety: safe.
  /// Blocks: as write_prometheus.
  /// @throws std::bad_alloc if the text cannot be allocated.
  /// Allocates: the text.
  [[nodiscard]] std::string prometheus_text() const {
    std::ostringstream out;
    write_prometheus(out);
    return std::move(out).str();
  }

private:
  enum class kind { counter, gauge, summary };

  struct entry {
    kind type;
    std::string name;
    std::string help;
    labels lbls;
    std::shared_ptr<void> metric; // counter, gauge or latency_histogram, by type
  };

  template <class M> M &add(kind type, std::string name, std::string help, labels l) {
    const char *fn = type == kind::counter ? "lakh::registry::make_counter"
                     : type == kind::gauge ? "lakh::registry::make_gauge"
                                           : "lakh::registry::make_histogram";
    check_name(fn, name, false);
    for (std::size_t i = 0; i < l.size(); ++i) {
      check_name(fn, l[i].first, true);
      if (type == kind::summary && l[i].first == "quantile") {
        throw std::invalid_argument(std::string(fn) + ": label 'quantile' of '" + name +
                                    "' is reserved for the summary's quantiles");
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (l[j].first == l[i].first) {
          throw std::invalid_argument(std::string(fn) + ": label '" + l[i].first +
                                      "' repeats in '" + name + "'");
        }
      }
    }
    auto m = std::make_shared<M>(); // before the lock: a 43 KiB histogram is zeroed outside it
    std::lock_guard lock(mu_);
    for (const entry &e : entries_) {
      if (e.name == name) {
        if (e.type != type) {
          throw std::invalid_argument(std::string(fn) + ": '" + name +
                                      "' is registered already as a " +
                                      std::string(type_name(e.type)));
        }
        if (e.lbls == l) {
          throw std::invalid_argument(std::string(fn) + ": '" + name + label_text(l) +
                                      "' is registered already");
        }
      }
      const bool clash = (e.type == kind::summary && is_summary_series(name, e.name)) ||
                         (type == kind::summary && is_summary_series(e.name, name));
      if (clash) {
        throw std::invalid_argument(std::string(fn) + ": '" + name + "' collides with the '" +
                                    e.name + "' summary's _sum/_count series");
      }
    }
    M &ref = *m;
    entries_.push_back(entry{type, std::move(name), std::move(help), std::move(l), std::move(m)});
    return ref;
  }

  // Whether `series` is one of the extra series a summary called `summary` writes.
  static bool is_summary_series(std::string_view series, std::string_view summary) noexcept {
    return series.size() > summary.size() && series.substr(0, summary.size()) == summary &&
           (series.substr(summary.size()) == "_sum" || series.substr(summary.size()) == "_count");
  }

  static void check_name(const char *fn, const std::string &n, bool label) {
    auto head = [label](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
    };
    auto tail = [&head](char c) { return head(c) || (c >= '0' && c <= '9'); };
    const bool ok = !n.empty() && head(n[0]) && std::all_of(n.begin() + 1, n.end(), tail) &&
                    !(label && n.rfind("__", 0) == 0);
    if (!ok) {
      throw std::invalid_argument(std::string(fn) + ": '" + n + "' is not a valid Prometheus " +
                                  (label ? "label" : "metric") + " name");
    }
  }

  static std::string_view type_name(kind k) noexcept {
    switch (k) {
    case kind::counter:
      return "counter";
    case kind::gauge:
      return "gauge";
    case kind::summary:
      break;
    }
    return "summary";
  }

  // HELP text escapes \ and newline; label values also escape ".
  static std::string escape(std::string_view s, bool quote) {
    std::string out;
    out.reserve(s.size());
    for (const char c : s) {
      if (c == '\\') {
        out += "\\\\";
      } else if (c == '\n') {
        out += "\\n";
      } else if (quote && c == '"') {
        out += "\\\"";
      } else {
        out += c;
      }
    }
    return out;
  }

  static std::string label_text(const labels &l, std::string_view extra_name = {},
                                std::string_view extra_value = {}) {
    if (l.empty() && extra_name.empty()) {
      return {};
    }
    std::string out = "{";
    for (const auto &[k, v] : l) {
      out += (out.size() > 1 ? "," : "") + k + "=\"" + escape(v, true) + "\"";
    }
    if (!extra_name.empty()) {
      out += out.size() > 1 ? "," : "";
      out += extra_name;
      out += "=\"";
      out += extra_value;
      out += '"';
    }
    return out + "}";
  }

  // Shortest text that reads back as the same double (std::to_chars), e.g. 0.001.
  static std::string number(double v) {
    std::array<char, 32> buf{};
    const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
    return ec == std::errc{} ? std::string(buf.data(), end) : std::string("NaN");
  }

  static void write_samples(std::ostream &out, const entry &e) {
    switch (e.type) {
    case kind::counter:
      out << e.name << label_text(e.lbls) << ' '
          << static_cast<const counter *>(e.metric.get())->value() << '\n';
      return;
    case kind::gauge:
      out << e.name << label_text(e.lbls) << ' '
          << static_cast<const gauge *>(e.metric.get())->value() << '\n';
      return;
    case kind::summary:
      break;
    }
    const auto &h = *static_cast<const latency_histogram *>(e.metric.get());
    static constexpr std::array<double, 4> qs = {0.5, 0.9, 0.99, 0.999};
    static constexpr std::array<std::string_view, 4> q_text = {"0.5", "0.9", "0.99", "0.999"};
    std::array<std::chrono::nanoseconds, 4> values{};
    const std::uint64_t count = h.quantiles_sorted(qs.data(), values.data(), qs.size());
    for (std::size_t k = 0; k < qs.size(); ++k) {
      out << e.name << label_text(e.lbls, "quantile", q_text[k]) << ' '
          << number(std::chrono::duration<double>(values[k]).count()) << '\n';
    }
    out << e.name << "_sum" << label_text(e.lbls) << ' '
        << number(std::chrono::duration<double>(h.sum()).count()) << '\n';
    out << e.name << "_count" << label_text(e.lbls) << ' ' << count << '\n';
  }

  mutable std::mutex mu_;
  std::vector<entry> entries_;
};

/// Where and how often progress_line prints.
struct progress_options {
  std::FILE *out = stderr;                      ///< where to print (not closed by lakh)
  std::chrono::milliseconds tty_interval{200};  ///< redraw period on a terminal (> 0)
  std::chrono::milliseconds log_interval{2000}; ///< line period otherwise (> 0)
  int force_tty = -1; ///< -1: isatty(fileno(out)); 0: print lines; 1: redraw in place
};

namespace detail {

inline bool is_terminal(std::FILE *f) noexcept {
#if defined(_WIN32)
  return ::_isatty(::_fileno(f)) != 0;
#else
  return ::isatty(::fileno(f)) == 1;
#endif
}

// "12.3M/s", "2.5k/s", "100/s".
inline std::string si_rate(double per_second) {
  std::array<char, 32> buf{};
  if (per_second >= 1e9) {
    std::snprintf(buf.data(), buf.size(), "%.1fG/s", per_second / 1e9);
  } else if (per_second >= 1e6) {
    std::snprintf(buf.data(), buf.size(), "%.1fM/s", per_second / 1e6);
  } else if (per_second >= 1e3) {
    std::snprintf(buf.data(), buf.size(), "%.1fk/s", per_second / 1e3);
  } else {
    std::snprintf(buf.data(), buf.size(), "%.0f/s", per_second);
  }
  return buf.data();
}

// "0.1s", "59.9s", "1m05s", "2h03m".
inline std::string short_duration(double seconds) {
  std::array<char, 48> buf{};
  if (seconds < 59.95) {
    std::snprintf(buf.data(), buf.size(), "%.1fs", seconds);
  } else if (seconds < 3600.0) {
    const auto s = static_cast<long long>(seconds + 0.5);
    std::snprintf(buf.data(), buf.size(), "%lldm%02llds", s / 60, s % 60);
  } else {
    const auto m = static_cast<long long>(std::min(seconds, 1e15) / 60.0 + 0.5);
    std::snprintf(buf.data(), buf.size(), "%lldh%02lldm", m / 60, m % 60);
  }
  return buf.data();
}

} // namespace detail

/// One progress text, without "\r" or newline: "rows 45.2% 452000/1000000 12.3M/s ETA 0.0s".
/// With total 0 (unknown) no percent and no ETA: "rows 452000 12.3M/s". The ETA is
/// (total - done) / per_second, written "4.2s", "1m05s" or "2h03m", and omitted while the
/// rate is 0; done beyond total shows 100.0% and ETA 0.0s.
/// Thread-safety: safe (pure).
/// Blocks: never.
/// @throws std::bad_alloc if the string cannot be allocated.
/// Allocates: the string.
[[nodiscard]] inline std::string format_progress(std::string_view label, std::uint64_t done,
                                                 std::uint64_t total, double per_second) {
  std::string out(label);
  std::array<char, 96> buf{};
  if (total == 0) {
    std::snprintf(buf.data(), buf.size(), " %llu %s", static_cast<unsigned long long>(done),
                  detail::si_rate(per_second).c_str());
    return out + buf.data();
  }
  const double pct =
      100.0 * static_cast<double>(std::min(done, total)) / static_cast<double>(total);
  std::snprintf(buf.data(), buf.size(), " %.1f%% %llu/%llu %s", pct,
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                detail::si_rate(per_second).c_str());
  out += buf.data();
  if (per_second > 0) {
    out += " ETA ";
    out += detail::short_duration(static_cast<double>(total - std::min(done, total)) / per_second);
  }
  return out;
}

/// Prints the progress of a long run from a background std::jthread: on a terminal one line
/// redrawn in place ("\r<text>\x1b[K") every tty_interval; otherwise (a log, a pipe, CI) one
/// full line every log_interval; always a last line at finish() (ending the redrawn line
/// with a newline on a terminal). The rate is the average since construction.
///
/// Memory ordering: `done` is called on the printing thread; it must read thread-safe state
/// (a lakh::counter, an atomic). finish() joins that thread, so everything it did
/// happens-before finish() returns.
class progress_line {
public:
  /// Starts the printing thread; the first line comes one interval later.
  /// Thread-safety: constructs a new object.
  /// Blocks: never.
  /// @throws std::invalid_argument if done is empty, o.out is null or the interval in use is
  /// not positive; std::system_error if the thread cannot start.
  /// Allocates: the label, done's target and the thread.
  progress_line(std::string label, std::uint64_t total, std::function<std::uint64_t()> done,
                progress_options o = {})
      : label_(std::move(label)), total_(total), done_(std::move(done)), opts_(o),
        start_(std::chrono::steady_clock::now()) {
    if (!done_) {
      throw std::invalid_argument("lakh::progress_line: done (for '" + label_ +
                                  "') is an empty std::function");
    }
    if (opts_.out == nullptr) {
      throw std::invalid_argument("lakh::progress_line: options.out (for '" + label_ +
                                  "') is null");
    }
    tty_ = opts_.force_tty >= 0 ? opts_.force_tty == 1 : detail::is_terminal(opts_.out);
    const auto period = tty_ ? opts_.tty_interval : opts_.log_interval;
    if (period.count() <= 0) {
      throw std::invalid_argument(
          "lakh::progress_line: " + std::string(tty_ ? "tty_interval" : "log_interval") + " (" +
          std::to_string(period.count()) + "ms) is not positive");
    }
    thread_ = std::jthread([this, period](std::stop_token st) { loop(st, period); });
  }

  progress_line(const progress_line &) = delete;
  progress_line &operator=(const progress_line &) = delete;

  /// finish(), swallowing any exception (an exception from `done` is lost here: call
  /// finish() yourself to see it).
  /// Thread-safety: not concurrently with other calls on this object.
  /// Blocks: until the printing thread has stopped.
  /// Allocates: may (the final line).
  ~progress_line() {
    try {
      finish();
    } catch (...) { // NOLINT(bugprone-empty-catch): a destructor must not throw
    }
  }

  /// Stops the thread and prints the final line (100% if done() reached total, else where
  /// it stopped); later calls do nothing.
  /// Thread-safety: safe; concurrent calls print the final line once.
  /// Blocks: until the printing thread has stopped (at most one `done` call and one print).
  /// @throws whatever `done` threw, on the printing thread or now (then nothing more is
  /// printed).
  /// Allocates: may (the final line).
  void finish() {
    std::lock_guard lock(finish_mu_);
    if (finished_) {
      return;
    }
    finished_ = true;
    thread_.request_stop();
    if (thread_.joinable()) {
      thread_.join();
    }
    if (error_) {
      std::rethrow_exception(error_);
    }
    print(true);
  }

private:
  void loop(const std::stop_token &st, std::chrono::milliseconds period) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lk(m);
    for (;;) {
      // Returns the predicate's value (false) both on timeout and on stop: ask which.
      (void)cv.wait_for(lk, st, period, [] { return false; });
      if (st.stop_requested()) {
        return;
      }
      try {
        print(false);
      } catch (...) {
        error_ = std::current_exception(); // read by finish() after join()
        return;
      }
    }
  }

  void print(bool last) {
    const std::uint64_t done = done_();
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const std::string text =
        format_progress(label_, done, total_, s > 0 ? static_cast<double>(done) / s : 0.0);
    if (tty_) {
      std::fprintf(opts_.out, "\r%s\x1b[K%s", text.c_str(), last ? "\n" : "");
    } else {
      std::fprintf(opts_.out, "%s\n", text.c_str());
    }
    std::fflush(opts_.out);
  }

  std::string label_;
  std::uint64_t total_;
  std::function<std::uint64_t()> done_;
  progress_options opts_;
  std::chrono::steady_clock::time_point start_;
  bool tty_ = false;
  std::exception_ptr error_; // set by the printing thread before it ends
  std::mutex finish_mu_;
  bool finished_ = false;
  std::jthread thread_; // last: started after, and joined before, the members it reads
};

} // namespace lakh
