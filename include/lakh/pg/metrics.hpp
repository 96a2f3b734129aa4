#pragma once
// lakh/pg/metrics.hpp: register_metrics(), one call that exposes every figure of a pool, a
// retrier, a job queue or an outbox relay (table or wal) in a lakh::registry, as callback
// gauges read when the registry is written (at scrape time): no polling code. Unlike the
// collectors of a Prometheus client there is no unregistering (the registry keeps its
// metrics for its life), so each object must outlive the registry's writes. Metric names and
// an example: docs/metrics.md ("lakh::pg's figures").

#include <lakh/pg/job_queue.hpp>
#include <lakh/pg/outbox_relay.hpp>
#include <lakh/pg/pool.hpp>
#include <lakh/pg/retry.hpp>
#include <lakh/prometheus.hpp>

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace lakh::pg {

namespace detail {

/// One figure of a stats snapshot S: its metric name, help and how to read it.
template <class S> struct metric_figure {
  const char *name;
  const char *help;
  double (*read)(const S &);
};

/// `l` with one more label.
inline lakh::labels with_label(lakh::labels l, std::string name, std::string value) {
  l.emplace_back(std::move(name), std::move(value));
  return l;
}

/// The figures of one job queue for the gauges of one register_metrics call: read by the
/// first of them written in a scrape, reused by the others. Only those gauges use it and the
/// registry calls them under its mutex, which therefore guards it.
class job_queue_figures {
public:
  /// The number of gauges: four states, the oldest pending job, dead tuples, the oldest
  /// transaction.
  static constexpr std::size_t gauges = 7;

  job_queue_figures(job_queue &q, std::chrono::milliseconds max_age) : q_(&q), max_age_(max_age) {}

  /// What `read` takes from the figures, for gauge number `gauge`; NaN when reading them
  /// failed. They are read anew when this gauge has seen them already (a new scrape began)
  /// and they are at least max_age old.
  /// Blocks: while health() runs, once per scrape (or per max_age).
  double get(std::size_t gauge, double (*read)(const job_queue_health &)) noexcept {
    if (reads_ == 0 ||
        (seen_[gauge] == reads_ && std::chrono::steady_clock::now() - read_at_ >= max_age_)) {
      refresh();
    }
    seen_[gauge] = reads_;
    return health_ ? read(*health_) : std::numeric_limits<double>::quiet_NaN();
  }

private:
  void refresh() noexcept {
    ++reads_;
    try {
      health_ = q_->health();
    } catch (...) { // every gauge of this scrape reads NaN; the next scrape tries again
      health_.reset();
    }
    read_at_ = std::chrono::steady_clock::now();
  }

  job_queue *q_;
  std::chrono::milliseconds max_age_;
  std::optional<job_queue_health> health_;
  std::uint64_t reads_ = 0;                       // refresh() calls so far
  std::chrono::steady_clock::time_point read_at_; // when the last one ended
  std::array<std::uint64_t, gauges> seen_{};      // per gauge: the reads_ it last returned
};

} // namespace detail

/// Registers the pool's figures (pool::stats()), each a callback gauge with labels `l`:
/// `lakh_pg_pool_` + max_size, size, idle, in_use, max_in_use, and the counts acquired_total,
/// created_total, replaced_total, waits_total, timeouts_total, cancellations_total,
/// connect_failures_total. A scrape reads each from a stats() of its own (the pool's mutex,
/// briefly), so together they are approximate as stats() is. `p` must outlive every later
/// write of `r`.
/// Blocks: briefly, on the registry's mutex.
/// @throws std::invalid_argument as registry::make_callback_gauge, e.g. for a pool
/// registered already with the same labels (figures registered before stay registered).
inline void register_metrics(lakh::registry &r, const pool &p, const lakh::labels &l = {}) {
  using figure = detail::metric_figure<pool_stats>;
  static constexpr std::array<figure, 12> figures{{
      {"lakh_pg_pool_max_size", "Most connections the pool opens at once.",
       [](const pool_stats &s) { return static_cast<double>(s.max_size); }},
      {"lakh_pg_pool_size", "Connections open now, idle and leased.",
       [](const pool_stats &s) { return static_cast<double>(s.size); }},
      {"lakh_pg_pool_idle", "Connections open and not leased.",
       [](const pool_stats &s) { return static_cast<double>(s.idle); }},
      {"lakh_pg_pool_in_use", "Connections leased now.",
       [](const pool_stats &s) { return static_cast<double>(s.in_use); }},
      {"lakh_pg_pool_max_in_use", "Most connections leased at once since the pool was made.",
       [](const pool_stats &s) { return static_cast<double>(s.max_in_use); }},
      {"lakh_pg_pool_acquired_total", "Successful acquires.",
       [](const pool_stats &s) { return static_cast<double>(s.acquired); }},
      {"lakh_pg_pool_created_total", "Connections opened.",
       [](const pool_stats &s) { return static_cast<double>(s.created); }},
      {"lakh_pg_pool_replaced_total", "Broken connections discarded.",
       [](const pool_stats &s) { return static_cast<double>(s.replaced); }},
      {"lakh_pg_pool_waits_total", "Acquires that found no free connection and waited.",
       [](const pool_stats &s) { return static_cast<double>(s.waits); }},
      {"lakh_pg_pool_timeouts_total", "Acquires that timed out.",
       [](const pool_stats &s) { return static_cast<double>(s.timeouts); }},
      {"lakh_pg_pool_cancellations_total", "Acquires cancelled by a stop request.",
       [](const pool_stats &s) { return static_cast<double>(s.cancellations); }},
      {"lakh_pg_pool_connect_failures_total", "Connection attempts that failed.",
       [](const pool_stats &s) { return static_cast<double>(s.connect_failures); }},
  }};
  for (const figure &f : figures) {
    r.make_callback_gauge(
        f.name, f.help, [&p, read = f.read] { return read(p.stats()); }, l);
  }
}

/// Registers the retrier's figures (retrier::stats()), each a callback gauge with labels `l`:
/// `lakh_pg_retry_` + calls_total, attempts_total, successes_total, failures_total,
/// exhausted_attempts_total, exhausted_budget_total, cancelled_total; errors_total with a
/// label `cause` per retry_cause (to_string), and retries_total per retryable cause.
/// `rt` must outlive every later write of `r`.
/// Blocks: briefly, on the registry's mutex.
/// @throws std::invalid_argument as registry::make_callback_gauge, also if `l` has a label
/// named `cause` (figures registered before stay registered).
inline void register_metrics(lakh::registry &r, const retrier &rt, const lakh::labels &l = {}) {
  using figure = detail::metric_figure<retry_stats>;
  static constexpr std::array<figure, 7> figures{{
      {"lakh_pg_retry_calls_total", "run() calls started.",
       [](const retry_stats &s) { return static_cast<double>(s.calls); }},
      {"lakh_pg_retry_attempts_total", "Transaction attempts, first tries and retries.",
       [](const retry_stats &s) { return static_cast<double>(s.attempts); }},
      {"lakh_pg_retry_successes_total", "Calls that committed.",
       [](const retry_stats &s) { return static_cast<double>(s.successes); }},
      {"lakh_pg_retry_failures_total", "Calls that ended with an exception.",
       [](const retry_stats &s) { return static_cast<double>(s.failures); }},
      {"lakh_pg_retry_exhausted_attempts_total", "Failures with a retryable cause at max_attempts.",
       [](const retry_stats &s) { return static_cast<double>(s.exhausted_attempts); }},
      {"lakh_pg_retry_exhausted_budget_total", "Failures with a retryable cause and no budget.",
       [](const retry_stats &s) { return static_cast<double>(s.exhausted_budget); }},
      {"lakh_pg_retry_cancelled_total", "Failures because stop was requested during backoff.",
       [](const retry_stats &s) { return static_cast<double>(s.cancelled); }},
  }};
  for (const figure &f : figures) {
    r.make_callback_gauge(
        f.name, f.help, [&rt, read = f.read] { return read(rt.stats()); }, l);
  }
  for (std::size_t i = 0; i < retry_cause_count; ++i) {
    const auto cause = static_cast<retry_cause>(i);
    const auto lc = detail::with_label(l, "cause", std::string(to_string(cause)));
    r.make_callback_gauge(
        "lakh_pg_retry_errors_total", "Errors seen, by cause, retried or not.",
        [&rt, i] { return static_cast<double>(rt.stats().errors[i]); }, lc);
    if (is_retryable(cause)) {
      r.make_callback_gauge(
          "lakh_pg_retry_retries_total", "Retries made, by cause.",
          [&rt, i] { return static_cast<double>(rt.stats().retries[i]); }, lc);
    }
  }
}

/// Registers the job queue's figures (job_queue::health()), each a callback gauge with labels
/// `l`: `lakh_pg_job_queue_jobs` with a label `state` (pending, running, done, dead; of all
/// the table's queues), `lakh_pg_job_queue_oldest_pending_seconds`,
/// `lakh_pg_job_queue_dead_tuples` and `lakh_pg_job_queue_oldest_transaction_seconds`.
/// health() is one transaction on a connection of q's pool, run once per scrape for all
/// seven (by the first of them written) and then, with a positive `max_age`, at most once
/// per max_age however often the registry is written. It runs under the registry's mutex: a
/// scrape waits for a free connection up to the queue's acquire_timeout (give the metrics a
/// job_queue of the same table with a short acquire_timeout, on a pool of their own, if the
/// work may exhaust the pool). When it fails (no connection, an error) the seven read NaN
/// until a later scrape reads them. `q` must outlive every later write of `r`.
/// Blocks: briefly, on the registry's mutex (never on the database).
/// @throws std::invalid_argument as registry::make_callback_gauge, also if `l` has a label
/// named `state` or max_age is negative (figures registered before stay registered).
inline void register_metrics(lakh::registry &r, job_queue &q, const lakh::labels &l = {},
                             std::chrono::milliseconds max_age = std::chrono::milliseconds(0)) {
  if (max_age.count() < 0) {
    throw std::invalid_argument("lakh::pg::register_metrics: max_age (" +
                                std::to_string(max_age.count()) + " ms) of job queue " + q.table() +
                                " is negative");
  }
  using health = job_queue_health;
  struct figure {
    const char *name;
    const char *state; // the `state` label, or nullptr
    const char *help;
    double (*read)(const health &);
  };
  static constexpr const char *jobs_help = "Jobs in the table, by state.";
  static constexpr std::array<figure, detail::job_queue_figures::gauges> figures{{
      {"lakh_pg_job_queue_jobs", "pending", jobs_help,
       [](const health &h) { return static_cast<double>(h.pending); }},
      {"lakh_pg_job_queue_jobs", "running", jobs_help,
       [](const health &h) { return static_cast<double>(h.running); }},
      {"lakh_pg_job_queue_jobs", "done", jobs_help,
       [](const health &h) { return static_cast<double>(h.done); }},
      {"lakh_pg_job_queue_jobs", "dead", jobs_help,
       [](const health &h) { return static_cast<double>(h.dead); }},
      {"lakh_pg_job_queue_oldest_pending_seconds", nullptr,
       "Age of the oldest runnable job, 0 when none.",
       [](const health &h) { return h.oldest_pending_seconds; }},
      {"lakh_pg_job_queue_dead_tuples", nullptr, "Dead tuples of the table (n_dead_tup).",
       [](const health &h) { return static_cast<double>(h.dead_tuples); }},
      {"lakh_pg_job_queue_oldest_transaction_seconds", nullptr,
       "Age of the oldest open transaction in the database (it holds back vacuum).",
       [](const health &h) { return h.oldest_transaction_seconds; }},
  }};
  auto shared = std::make_shared<detail::job_queue_figures>(q, max_age);
  for (std::size_t i = 0; i < figures.size(); ++i) {
    const figure &f = figures[i];
    r.make_callback_gauge(
        f.name, f.help, [shared, i, read = f.read] { return shared->get(i, read); },
        f.state != nullptr ? detail::with_label(l, "state", f.state) : l);
  }
}

/// Registers a relay's counters (outbox_relay::metrics(), wal_relay::metrics()), each a
/// callback gauge with labels `l`: `lakh_pg_outbox_relay_` + published_total,
/// duplicates_total, failed_total, parked_total, rounds_total, lag_seconds and
/// since_last_round_seconds. `m` must outlive every later write of `r`.
/// Blocks: briefly, on the registry's mutex.
/// @throws std::invalid_argument as registry::make_callback_gauge (figures registered before
/// stay registered).
inline void register_metrics(lakh::registry &r, const outbox_relay_metrics &m,
                             const lakh::labels &l = {}) {
  using figure = detail::metric_figure<outbox_relay_metrics>;
  static constexpr std::array<figure, 7> figures{{
      {"lakh_pg_outbox_relay_published_total",
       "Events marked published (acknowledged, duplicates included).",
       [](const outbox_relay_metrics &x) { return static_cast<double>(x.published.value()); }},
      {"lakh_pg_outbox_relay_duplicates_total",
       "Published events the broker reported as duplicates.",
       [](const outbox_relay_metrics &x) { return static_cast<double>(x.duplicates.value()); }},
      {"lakh_pg_outbox_relay_failed_total", "Publish attempts not acknowledged.",
       [](const outbox_relay_metrics &x) { return static_cast<double>(x.failed.value()); }},
      {"lakh_pg_outbox_relay_parked_total", "Events parked after park_after refusals.",
       [](const outbox_relay_metrics &x) { return static_cast<double>(x.parked.value()); }},
      {"lakh_pg_outbox_relay_rounds_total", "Rounds that held the relay lock or the stream.",
       [](const outbox_relay_metrics &x) { return static_cast<double>(x.rounds.value()); }},
      {"lakh_pg_outbox_relay_lag_seconds", "Age of the oldest unpublished event at the last round.",
       [](const outbox_relay_metrics &x) {
         return static_cast<double>(x.lag_ms.value()) / 1000.0;
       }},
      {"lakh_pg_outbox_relay_since_last_round_seconds",
       "Time since the relay last completed a round (grows while it is stuck).",
       [](const outbox_relay_metrics &x) {
         return std::chrono::duration<double>(x.since_last_round()).count();
       }},
  }};
  for (const figure &f : figures) {
    r.make_callback_gauge(
        f.name, f.help, [&m, read = f.read] { return read(m); }, l);
  }
}

/// register_metrics(r, relay.metrics(), l) for outbox_relay, outbox_relay_thread, wal_relay
/// and wal_relay_thread. `relay` must outlive every later write of `r`.
/// Blocks: briefly, on the registry's mutex.
/// @throws std::invalid_argument as the overload for outbox_relay_metrics.
template <class Relay>
requires requires(const Relay &relay) {
  { relay.metrics() } -> std::same_as<const outbox_relay_metrics &>;
}
void register_metrics(lakh::registry &r, const Relay &relay, const lakh::labels &l = {}) {
  register_metrics(r, relay.metrics(), l);
}

} // namespace lakh::pg
