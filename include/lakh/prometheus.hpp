#pragma once
// lakh/prometheus.hpp: registry, the named metrics of lakh/metrics.hpp with labels, written
// in the Prometheus text exposition format 0.0.4 (latency histograms as Prometheus histograms
// with cumulative buckets, or as summaries). Unlike
// prometheus-cpp there is no HTTP exposer and no push gateway: a service serves
// registry::prometheus_text() from its own endpoint. docs/metrics.md.

#include <lakh/metrics.hpp>

#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace lakh {

/// Label names and values of one metric, e.g. {{"queue", "billing"}}, written in this order.
using labels = std::vector<std::pair<std::string, std::string>>;

/// How registry::make_histogram exposes a latency histogram.
enum class histogram_exposition {
  /// TYPE histogram: cumulative `<name>_bucket{le="..."}` series in seconds (100 µs .. 10 s
  /// and +Inf), `<name>_sum`, `<name>_count`; aggregatable across replicas with
  /// histogram_quantile(). Each bucket counts every sample at or below its bound and may
  /// count samples up to 1/128 above it (the log-linear bucket holding the bound).
  histogram,
  /// TYPE summary: quantiles 0.5, 0.9, 0.99, 0.999 of the whole process lifetime (within
  /// 0.4%), `<name>_sum`, `<name>_count`; exact per process, not aggregatable.
  summary,
};

/// Named metrics and their Prometheus text exposition (format 0.0.4).
///
/// Metrics live as long as the registry; the references make_* return stay valid for that
/// long (each metric is allocated once and never moves). Several metrics may share a name
/// with different labels, all of one type; they are written together under one HELP/TYPE
/// header (the first registration's help), in registration order. The registry's mutex
/// orders registrations and writes; the metrics themselves are updated without it, so a
/// write_prometheus() racing with updates reads each value at its own moment (see the
/// memory-ordering comment at the top of lakh/metrics.hpp).
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

  /// Registers a gauge whose value `fn` computes each time the registry is written (at
  /// scrape time), for a figure kept elsewhere: a pool's idle connections, a queue's depth, a
  /// relay's lag. Exposed as `<name>{labels} <fn()>` with TYPE gauge, beside gauges of the
  /// same name. fn runs on the writing thread under the registry's mutex, so it must be quick
  /// and must not use this registry; should it throw, the sample reads NaN. Whatever fn
  /// reads must outlive the registry, or the registry's writes.
  /// Thread-safety: safe. Blocks: briefly, on the registry's mutex.
  /// @throws std::invalid_argument as make_counter, or if fn is empty.
  /// Allocates: the function and its entry.
  void make_callback_gauge(std::string name, std::string help, std::function<double()> fn,
                           labels l = {}) {
    if (!fn) {
      throw std::invalid_argument("lakh::registry::make_callback_gauge: the function of '" + name +
                                  "' is empty");
    }
    (void)add<gauge>(kind::gauge, std::move(name), std::move(help), std::move(l), std::move(fn));
  }

  /// Registers a latency histogram, exposed in seconds as `as` says (histogram_exposition):
  /// by default a Prometheus histogram (`<name>_bucket{labels,le="0.001"}` ... `le="+Inf"`,
  /// `<name>_sum`, `<name>_count`), or a summary (`<name>{labels,quantile="0.5"}` for 0.5, 0.9,
  /// 0.99, 0.999, `<name>_sum`, `<name>_count`). All metrics of one name share one exposition.
  /// Thread-safety: safe.
  /// Blocks: briefly, on the registry's mutex.
  /// @throws std::invalid_argument as make_counter, and if a label is named "le" (histogram)
  /// or "quantile" (summary).
  /// Allocates: the histogram (43 KiB) and its entry.
  latency_histogram &make_histogram(std::string name, std::string help, labels l = {},
                                    histogram_exposition as = histogram_exposition::histogram) {
    return add<latency_histogram>(as == histogram_exposition::histogram ? kind::histogram
                                                                        : kind::summary,
                                  std::move(name), std::move(help), std::move(l));
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
  enum class kind { counter, gauge, histogram, summary };

  // The histogram exposition's bucket bounds, in nanoseconds and as `le` label values.
  static constexpr std::array<std::uint64_t, 16> bucket_ns = {
      100'000,       250'000,       500'000,       1'000'000,     2'500'000,   5'000'000,
      10'000'000,    25'000'000,    50'000'000,    100'000'000,   250'000'000, 500'000'000,
      1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};
  static constexpr std::array<std::string_view, 16> bucket_le = {
      "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
      "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",    "10"};

  struct entry {
    kind type;
    std::string name;
    std::string help;
    labels lbls;
    std::shared_ptr<void> metric;  // counter, gauge or latency_histogram, by type
    std::function<double()> value; // a callback gauge's: written instead of the gauge's value
  };

  template <class M>
  M &add(kind type, std::string name, std::string help, labels l,
         std::function<double()> value = {}) {
    const char *fn = type == kind::counter ? "lakh::registry::make_counter"
                     : type == kind::gauge ? (value ? "lakh::registry::make_callback_gauge"
                                                    : "lakh::registry::make_gauge")
                                           : "lakh::registry::make_histogram";
    check_name(fn, name, false);
    for (std::size_t i = 0; i < l.size(); ++i) {
      check_name(fn, l[i].first, true);
      if (type == kind::summary && l[i].first == "quantile") {
        throw std::invalid_argument(std::string(fn) + ": label 'quantile' of '" + name +
                                    "' is reserved for the summary's quantiles");
      }
      if (type == kind::histogram && l[i].first == "le") {
        throw std::invalid_argument(std::string(fn) + ": label 'le' of '" + name +
                                    "' is reserved for the histogram's buckets");
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
      if (is_extra_series(name, e.name, e.type)) {
        throw std::invalid_argument(std::string(fn) + ": '" + name + "' collides with the '" +
                                    e.name + "' " + std::string(type_name(e.type)) + "'s " +
                                    extra_series(e.type) + " series");
      }
      if (is_extra_series(e.name, name, type)) {
        throw std::invalid_argument(std::string(fn) + ": the " + extra_series(type) +
                                    " series of '" + name + "' collide with '" + e.name + "'");
      }
    }
    M &ref = *m;
    entries_.push_back(entry{type, std::move(name), std::move(help), std::move(l), std::move(m),
                             std::move(value)});
    return ref;
  }

  // Whether `series` is one of the extra series that the metric `name` of type `k` writes.
  static bool is_extra_series(std::string_view series, std::string_view name, kind k) noexcept {
    if (k != kind::histogram && k != kind::summary) {
      return false;
    }
    if (series.size() <= name.size() || series.substr(0, name.size()) != name) {
      return false;
    }
    const auto suffix = series.substr(name.size());
    return suffix == "_sum" || suffix == "_count" || (k == kind::histogram && suffix == "_bucket");
  }
  static const char *extra_series(kind k) noexcept {
    return k == kind::histogram ? "_bucket/_sum/_count" : "_sum/_count";
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
    case kind::histogram:
      return "histogram";
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
      out << e.name << label_text(e.lbls) << ' ';
      if (e.value) {
        out << callback_value(e.value) << '\n';
      } else {
        out << static_cast<const gauge *>(e.metric.get())->value() << '\n';
      }
      return;
    case kind::histogram:
      write_buckets(out, e);
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

  static std::string callback_value(const std::function<double()> &fn) {
    try {
      const double v = fn();
      if (std::isnan(v)) {
        return "NaN";
      }
      if (std::isinf(v)) {
        return v > 0 ? "+Inf" : "-Inf";
      }
      return number(v);
    } catch (...) {
      return "NaN";
    }
  }

  static void write_buckets(std::ostream &out, const entry &e) {
    const auto &h = *static_cast<const latency_histogram *>(e.metric.get());
    std::array<std::uint64_t, bucket_ns.size()> counts{};
    const std::uint64_t count = h.cumulative_counts(bucket_ns.data(), counts.data(), counts.size());
    const std::string bucket = e.name + "_bucket";
    for (std::size_t k = 0; k < counts.size(); ++k) {
      out << bucket << label_text(e.lbls, "le", bucket_le[k]) << ' ' << counts[k] << '\n';
    }
    out << bucket << label_text(e.lbls, "le", "+Inf") << ' ' << count << '\n';
    out << e.name << "_sum" << label_text(e.lbls) << ' '
        << number(std::chrono::duration<double>(h.sum()).count()) << '\n';
    out << e.name << "_count" << label_text(e.lbls) << ' ' << count << '\n';
  }

  mutable std::mutex mu_;
  std::vector<entry> entries_;
};

} // namespace lakh
