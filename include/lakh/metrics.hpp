#pragma once
// lakh/metrics.hpp: the few measurements a concurrent service or a long batch run needs,
// without a metrics client library:
//   - counter, gauge (with a high-water mark), throughput_meter: relaxed atomics;
//   - latency_histogram: log-linear buckets (as HdrHistogram: 128 sub-buckets per power of
//     two), so every quantile is within 0.4% relative error (1% promised) from 1 ns to
//     about 39 hours, with a wait-free record() and exact merge();
//   - registry: named metrics with labels, written in the Prometheus text exposition
//     format 0.0.4 (histograms as summaries);
//   - progress_line: percent, rate and ETA of a long run, redrawn in place on a terminal or
//     printed every few seconds into a log.
// Unlike prometheus-cpp there is no HTTP exposer, no push gateway, no bucketed Prometheus
// histogram type: a service serves registry::prometheus_text() from its own endpoint.
//
// Memory ordering: every update is a relaxed atomic read-modify-write. An update made by a
// thread is visible to a reader that synchronizes with that thread afterwards (a join, a
// channel hand-off, a mutex); a reader running concurrently with writers sees each
// individual value at some recent point, and several values (e.g. a histogram's count and
// its buckets) not necessarily at the same point. That is the usual contract of metrics.

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
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
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

namespace lakh {

/// A monotonically increasing count (events, rows, bytes).
class counter {
public:
  /// Adds n. Thread-safety: safe. Blocks: never. Allocates: never.
  void add(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }

  /// The count so far. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::uint64_t value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

private:
  std::atomic<std::uint64_t> value_{0};
};

/// A value that goes up and down (queue length, connections in use), and the highest value
/// it has had since construction or reset() (its high-water mark).
class gauge {
public:
  /// Sets the value. Thread-safety: safe. Blocks: never. Allocates: never.
  void set(std::int64_t v) noexcept {
    value_.store(v, std::memory_order_relaxed);
    raise_max(v);
  }

  /// Adds d (negative to decrease). Thread-safety: safe. Blocks: never. Allocates: never.
  void add(std::int64_t d) noexcept {
    raise_max(value_.fetch_add(d, std::memory_order_relaxed) + d);
  }

  /// The current value. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::int64_t value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

  /// The highest value set or reached. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::int64_t max() const noexcept { return max_.load(std::memory_order_relaxed); }

  /// Sets the value and the high-water mark to 0.
  /// Thread-safety: safe (concurrent updates may land on either side). Blocks: never.
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

/// Latency distribution in nanoseconds: count, min, max, mean and quantiles.
///
/// Buckets are log-linear: values below 128 ns have a bucket each; above, every power of two
/// is split into 128 equal buckets, and a quantile reports the middle of its bucket, so it
/// is within 1/256 (0.4%) of the exact sample quantile (nearest rank: the smallest sample
/// with at least q * count samples at or below it). Values of 2^47 ns (about 39 hours) and
/// more share the last bucket; min() and max() stay exact. 43 KiB per histogram.
class latency_histogram {
public:
  /// Records one duration (negative durations count as 0).
  /// Thread-safety: safe; wait-free (relaxed atomics). Blocks: never. Allocates: never.
  void record(std::chrono::nanoseconds d) noexcept {
    record_ns(d.count() > 0 ? static_cast<std::uint64_t>(d.count()) : 0);
  }

  /// Records one duration given in nanoseconds.
  /// Thread-safety: safe; wait-free. Blocks: never. Allocates: never.
  void record_ns(std::uint64_t ns) noexcept {
    buckets_[index_of(ns)].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_.fetch_add(ns, std::memory_order_relaxed);
    lower_min(ns);
    raise_max(ns);
  }

  /// Adds other's samples to this histogram (as if they had been recorded here).
  /// Thread-safety: safe; concurrent records into either one land on either side.
  /// Blocks: never. Allocates: never.
  void merge(const latency_histogram &other) noexcept {
    if (&other == this) {
      return;
    }
    for (std::size_t i = 0; i < bucket_count; ++i) {
      if (auto n = other.buckets_[i].load(std::memory_order_relaxed); n != 0) {
        buckets_[i].fetch_add(n, std::memory_order_relaxed);
      }
    }
    count_.fetch_add(other.count(), std::memory_order_relaxed);
    sum_.fetch_add(other.sum_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    if (other.count() != 0) {
      lower_min(other.min_.load(std::memory_order_relaxed));
      raise_max(other.max_.load(std::memory_order_relaxed));
    }
  }

  /// Number of samples. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::uint64_t count() const noexcept {
    return count_.load(std::memory_order_relaxed);
  }

  /// Sum of all samples, in nanoseconds (wraps after 584 years of recorded time).
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::chrono::nanoseconds sum() const noexcept {
    return std::chrono::nanoseconds(
        static_cast<std::int64_t>(sum_.load(std::memory_order_relaxed)));
  }

  /// The q-quantile (0.5 median, 0.99, ...) within 0.4% relative error; 0 ns when empty.
  /// Thread-safety: safe; concurrent records may or may not be counted. Blocks: never.
  /// @throws std::invalid_argument if q is not within [0, 1]. Allocates: never.
  [[nodiscard]] std::chrono::nanoseconds quantile(double q) const {
    if (!(q >= 0.0 && q <= 1.0)) {
      throw std::invalid_argument("lakh::latency_histogram::quantile: q (" + std::to_string(q) +
                                  ") is not within [0, 1]");
    }
    std::uint64_t total = 0;
    for (const auto &b : buckets_) {
      total += b.load(std::memory_order_relaxed);
    }
    if (total == 0) {
      return std::chrono::nanoseconds(0);
    }
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total))));
    std::uint64_t seen = 0;
    std::size_t i = 0;
    for (; i < bucket_count; ++i) {
      seen += buckets_[i].load(std::memory_order_relaxed);
      if (seen >= rank) {
        break;
      }
    }
    const std::uint64_t lo = min_.load(std::memory_order_relaxed);
    const std::uint64_t hi = max_.load(std::memory_order_relaxed);
    const std::uint64_t v =
        std::clamp(middle_of(std::min(i, bucket_count - 1)), lo, std::max(lo, hi));
    return std::chrono::nanoseconds(static_cast<std::int64_t>(v));
  }

  /// Smallest sample; 0 ns when empty. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::chrono::nanoseconds min() const noexcept {
    return count() == 0 ? std::chrono::nanoseconds(0)
                        : std::chrono::nanoseconds(
                              static_cast<std::int64_t>(min_.load(std::memory_order_relaxed)));
  }

  /// Largest sample; 0 ns when empty. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::chrono::nanoseconds max() const noexcept {
    return std::chrono::nanoseconds(
        static_cast<std::int64_t>(max_.load(std::memory_order_relaxed)));
  }

  /// Mean in nanoseconds; 0 when empty. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] double mean_ns() const noexcept {
    const auto n = count();
    return n == 0
               ? 0.0
               : static_cast<double>(sum_.load(std::memory_order_relaxed)) / static_cast<double>(n);
  }

  /// Forgets every sample. Thread-safety: safe (concurrent records land on either side).
  /// Blocks: never. Allocates: never.
  void reset() noexcept {
    for (auto &b : buckets_) {
      b.store(0, std::memory_order_relaxed);
    }
    count_.store(0, std::memory_order_relaxed);
    sum_.store(0, std::memory_order_relaxed);
    min_.store(std::numeric_limits<std::uint64_t>::max(), std::memory_order_relaxed);
    max_.store(0, std::memory_order_relaxed);
  }

private:
  static constexpr unsigned sub_bits = 7; // 128 buckets per power of two
  static constexpr std::uint64_t sub_count = std::uint64_t{1} << sub_bits;
  static constexpr unsigned top_exponent = 47; // the last power of two with its own buckets
  static constexpr std::size_t bucket_count = sub_count + (top_exponent - sub_bits + 1) * sub_count;

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

  static std::uint64_t middle_of(std::size_t i) noexcept {
    if (i < sub_count) {
      return i;
    }
    const std::size_t k = i - sub_count;
    const unsigned shift = static_cast<unsigned>(k / sub_count);
    const std::uint64_t sub = k % sub_count;
    const std::uint64_t lo = (sub_count + sub) << shift;
    return lo + ((std::uint64_t{1} << shift) >> 1);
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
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_{0};
  std::atomic<std::uint64_t> min_{std::numeric_limits<std::uint64_t>::max()};
  std::atomic<std::uint64_t> max_{0};
};

/// Items per second since construction or restart().
class throughput_meter {
public:
  /// Starts the clock. Thread-safety: -. Blocks: never. Allocates: never.
  throughput_meter() noexcept : start_ns_(now_ns()) {}

  /// Counts n items. Thread-safety: safe. Blocks: never. Allocates: never.
  void add(std::uint64_t n = 1) noexcept { total_.fetch_add(n, std::memory_order_relaxed); }

  /// Items counted since the start. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::uint64_t total() const noexcept {
    return total_.load(std::memory_order_relaxed);
  }

  /// Time since the start. Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] std::chrono::nanoseconds elapsed() const noexcept {
    return std::chrono::nanoseconds(now_ns() - start_ns_.load(std::memory_order_relaxed));
  }

  /// total() / elapsed() in items per second (0 before any time has passed).
  /// Thread-safety: safe. Blocks: never. Allocates: never.
  [[nodiscard]] double per_second() const noexcept {
    const double s = std::chrono::duration<double>(elapsed()).count();
    return s > 0 ? static_cast<double>(total()) / s : 0.0;
  }

  /// Zeroes the count and restarts the clock.
  /// Thread-safety: safe (concurrent adds land on either side). Blocks: never.
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

/// Label names and values of one metric, e.g. {{"queue", "billing"}}.
using labels = std::vector<std::pair<std::string, std::string>>;

/// Named metrics and their Prometheus text exposition (format 0.0.4).
///
/// Metrics live as long as the registry; the references make_* return stay valid (stable
/// storage). Several metrics may share a name with different labels, all of one type; they
/// are written together under one HELP/TYPE header, in registration order.
class registry {
public:
  /// Registers a counter (exposed as `<name> <value>`; by convention name it `..._total`).
  /// Thread-safety: safe. Blocks: briefly, on the registry's mutex.
  /// @throws std::invalid_argument if a name is not a Prometheus name ([a-zA-Z_:][a-zA-Z0-9_:]*,
  /// labels without ':' and not starting with "__"), if a label name repeats, or if the same
  /// name and labels are registered already, or the name with another type. Allocates: may.
  counter &make_counter(std::string name, std::string help, labels l = {}) {
    return add<counter>(kind::counter, std::move(name), std::move(help), std::move(l));
  }

  /// Registers a gauge. Thread-safety, blocking, exceptions, allocation: as make_counter.
  gauge &make_gauge(std::string name, std::string help, labels l = {}) {
    return add<gauge>(kind::gauge, std::move(name), std::move(help), std::move(l));
  }

  /// Registers a latency histogram, exposed as a Prometheus summary in seconds: quantiles
  /// 0.5, 0.9, 0.99, 0.999, then `<name>_sum` and `<name>_count`.
  /// Thread-safety, blocking, exceptions, allocation: as make_counter.
  latency_histogram &make_histogram(std::string name, std::string help, labels l = {}) {
    return add<latency_histogram>(kind::summary, std::move(name), std::move(help), std::move(l));
  }

  /// Writes every metric in the Prometheus text format.
  /// Thread-safety: safe. Blocks: on the registry's mutex while writing.
  /// @throws whatever `out` throws. Allocates: may.
  void write_prometheus(std::ostream &out) const {
    std::lock_guard lock(mu_);
    std::vector<bool> done(entries_.size(), false);
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (done[i]) {
        continue;
      }
      const auto &first = entries_[i];
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

  /// write_prometheus into a string (what a /metrics endpoint returns, with content type
  /// "text/plain; version=0.0.4"). Thread-safety: safe. Blocks: as write_prometheus.
  /// Allocates: the text.
  [[nodiscard]] std::string prometheus_text() const {
    std::ostringstream out;
    write_prometheus(out);
    return out.str();
  }

private:
  enum class kind { counter, gauge, summary };

  struct entry {
    kind type;
    std::string name;
    std::string help;
    labels lbls;
    std::shared_ptr<void> metric;
  };

  template <class M> M &add(kind type, std::string name, std::string help, labels l) {
    check_name(name, false, "metric");
    for (std::size_t i = 0; i < l.size(); ++i) {
      check_name(l[i].first, true, "label");
      for (std::size_t j = 0; j < i; ++j) {
        if (l[j].first == l[i].first) {
          throw std::invalid_argument("lakh::registry: label '" + l[i].first + "' repeats in '" +
                                      name + "'");
        }
      }
    }
    std::lock_guard lock(mu_);
    for (const auto &e : entries_) {
      if (e.name != name) {
        continue;
      }
      if (e.type != type) {
        throw std::invalid_argument("lakh::registry: '" + name + "' is registered already as a " +
                                    std::string(type_name(e.type)));
      }
      if (e.lbls == l) {
        throw std::invalid_argument("lakh::registry: '" + name + label_text(l) +
                                    "' is registered already");
      }
    }
    auto m = std::make_shared<M>();
    M &ref = *m;
    entries_.push_back(entry{type, std::move(name), std::move(help), std::move(l), std::move(m)});
    return ref;
  }

  static void check_name(const std::string &n, bool label, const char *what) {
    auto head = [&](char c) {
      return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
    };
    auto tail = [&](char c) { return head(c) || (c >= '0' && c <= '9'); };
    bool ok = !n.empty() && head(n[0]) && std::all_of(n.begin() + 1, n.end(), tail) &&
              !(label && n.rfind("__", 0) == 0);
    if (!ok) {
      throw std::invalid_argument("lakh::registry: '" + n + "' is not a valid Prometheus " + what +
                                  " name");
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

  static std::string escape(std::string_view s, bool quote) {
    std::string out;
    out.reserve(s.size());
    for (char c : s) {
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
    bool first = true;
    for (const auto &[k, v] : l) {
      out += (first ? "" : ",") + k + "=\"" + escape(v, true) + "\"";
      first = false;
    }
    if (!extra_name.empty()) {
      out += (first ? "" : ",") + std::string(extra_name) + "=\"" + std::string(extra_value) + "\"";
    }
    return out + "}";
  }

  static std::string number(double v) {
    std::ostringstream s;
    s.precision(17);
    s << v;
    return s.str();
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
    static constexpr std::array<std::pair<const char *, double>, 4> quantiles = {
        {{"0.5", 0.5}, {"0.9", 0.9}, {"0.99", 0.99}, {"0.999", 0.999}}};
    for (const auto &[text, q] : quantiles) {
      out << e.name << label_text(e.lbls, "quantile", text) << ' '
          << number(std::chrono::duration<double>(h.quantile(q)).count()) << '\n';
    }
    out << e.name << "_sum" << label_text(e.lbls) << ' '
        << number(std::chrono::duration<double>(h.sum()).count()) << '\n';
    out << e.name << "_count" << label_text(e.lbls) << ' ' << h.count() << '\n';
  }

  mutable std::mutex mu_;
  std::vector<entry> entries_;
};

/// Where and how often progress_line prints.
struct progress_options {
  std::FILE *out = stderr;                      ///< where to print
  std::chrono::milliseconds tty_interval{200};  ///< redraw period on a terminal
  std::chrono::milliseconds log_interval{2000}; ///< line period otherwise
  int force_tty = -1; ///< -1: isatty(out); 0: print lines; 1: redraw in place
};

namespace detail {

inline std::string si_rate(double per_second) {
  char buf[32];
  if (per_second >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.1fG/s", per_second / 1e9);
  } else if (per_second >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.1fM/s", per_second / 1e6);
  } else if (per_second >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1fk/s", per_second / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f/s", per_second);
  }
  return buf;
}

} // namespace detail

/// One progress text: "rows 45.2% 452000/1000000 12.3M/s ETA 0.1s"; with total 0 (unknown)
/// "rows 452000 12.3M/s". The ETA is omitted while the rate is 0.
/// Thread-safety: safe. Blocks: never. Allocates: the string.
[[nodiscard]] inline std::string format_progress(std::string_view label, std::uint64_t done,
                                                 std::uint64_t total, double per_second) {
  std::string out(label);
  char buf[96];
  if (total == 0) {
    std::snprintf(buf, sizeof buf, " %llu %s", static_cast<unsigned long long>(done),
                  detail::si_rate(per_second).c_str());
    return out + buf;
  }
  const double pct =
      100.0 * static_cast<double>(std::min(done, total)) / static_cast<double>(total);
  std::snprintf(buf, sizeof buf, " %.1f%% %llu/%llu %s", pct, static_cast<unsigned long long>(done),
                static_cast<unsigned long long>(total), detail::si_rate(per_second).c_str());
  out += buf;
  if (per_second > 0) {
    const double eta = static_cast<double>(total - std::min(done, total)) / per_second;
    std::snprintf(buf, sizeof buf, " ETA %.1fs", eta);
    out += buf;
  }
  return out;
}

/// Prints the progress of a long run from a background thread: on a terminal one line
/// redrawn in place every tty_interval; otherwise (a log, a pipe, CI) one line every
/// log_interval; always a last line at finish(). The rate is measured from construction.
class progress_line {
public:
  /// Starts the printing thread. `done` is called from that thread and must be thread-safe
  /// (e.g. read a lakh::counter).
  /// Thread-safety: -. Blocks: never. @throws std::invalid_argument if done is empty or out is
  /// null; std::system_error if the thread cannot start. Allocates: the thread.
  progress_line(std::string label, std::uint64_t total, std::function<std::uint64_t()> done,
                progress_options o = {})
      : label_(std::move(label)), total_(total), done_(std::move(done)), opts_(o),
        start_(std::chrono::steady_clock::now()) {
    if (!done_ || opts_.out == nullptr) {
      throw std::invalid_argument("lakh::progress_line: done must be callable and out not null");
    }
    tty_ = opts_.force_tty >= 0 ? opts_.force_tty == 1 : ::isatty(::fileno(opts_.out)) == 1;
    thread_ = std::jthread([this](std::stop_token st) { loop(st); });
  }

  progress_line(const progress_line &) = delete;
  progress_line &operator=(const progress_line &) = delete;

  /// finish(). Thread-safety: -. Blocks: until the printing thread has stopped.
  ~progress_line() { finish(); }

  /// Stops the thread and prints the final line; later calls do nothing.
  /// Thread-safety: call from one thread (the owner). Blocks: until the thread has stopped.
  /// Allocates: may.
  void finish() {
    if (!thread_.joinable()) {
      return;
    }
    thread_.request_stop();
    thread_.join();
    print(true);
  }

private:
  void loop(const std::stop_token &st) {
    const auto period = tty_ ? opts_.tty_interval : opts_.log_interval;
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lk(m);
    for (;;) {
      // Returns the predicate's value (false) both on timeout and on stop: ask which.
      (void)cv.wait_for(lk, st, period, [] { return false; });
      if (st.stop_requested()) {
        return;
      }
      print(false);
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
  std::jthread thread_;
};

} // namespace lakh
