#pragma once
// The in-memory usage pipeline of examples/pipeline, as a function the example, its tests
// and benchmarks/pipeline all call:
//
//   generators (the calling thread and a lakh::task_group for the others; each claims the
//   next batch index, fills a recycled buffer with lakh::fake rows and stamps it; the
//   buffers are slices of one arena)
//     -> lakh::channel<work> (bounded: back-pressure when the workers fall behind)
//       -> consumers on a lakh::worker_pool (each aggregates into its own usage_totals and
//          latency histogram: no shared state, no lock on the hot path; emptied buffers go
//          back through a second channel)
//         -> each consumer, once the channel is drained, merges its aggregates into the
//            first finished consumer's, under lakh::lock_all.
//
// Every row is generated once and aggregated once whatever the interleaving, so the totals
// equal lakh::fake::reference_totals(seed, rows): --verify checks exactly that.

#include <lakh/channel.hpp>
#include <lakh/fake/usage.hpp>
#include <lakh/lock_order.hpp>
#include <lakh/metrics.hpp>
#include <lakh/progress.hpp>
#include <lakh/task_group.hpp>
#include <lakh/worker_pool.hpp>

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <new>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace pipeline {

/// Settings of one run (the example's flags).
struct config {
  std::uint64_t rows = 1'000'000;
  std::uint64_t seed = lakh::fake::default_seed;
  std::size_t generators = 0; ///< 0: one per core
  std::size_t workers = 0;    ///< 0: one per core
  std::size_t batch = 8192;   ///< rows per channel message
  std::size_t capacity = 16;  ///< channel capacity, in batches
  bool progress = false;      ///< draw lakh::progress_line on stderr while running
};

/// Cores the run may use (at least 1).
inline std::size_t cores() {
  return std::max<std::size_t>(1, std::thread::hardware_concurrency());
}

/// Batch latency (generated -> aggregated) percentiles.
struct latency_summary {
  std::chrono::nanoseconds p50{}, p99{}, p999{}, max{};
};

/// What a run measured.
struct result {
  lakh::fake::usage_totals totals;
  std::chrono::nanoseconds wall{};  ///< first row generated -> last row aggregated
  std::chrono::nanoseconds setup{}; ///< threads started and buffers allocated, before `wall`
  std::uint64_t batches = 0;
  latency_summary latency;
  std::int64_t channel_high_water = 0; ///< most batches ever buffered in the channel
  std::size_t generators = 0;
  std::size_t workers = 0;

  [[nodiscard]] double rows_per_second() const {
    const auto s = std::chrono::duration<double>(wall).count();
    return s > 0 ? static_cast<double>(totals.rows()) / s : 0.0;
  }
};

/// Throws std::invalid_argument naming the first setting that cannot run.
inline void validate(const config &c) {
  auto fail = [](const std::string &what) { throw std::invalid_argument("pipeline: " + what); };
  if (c.rows == 0) {
    fail("rows must be at least 1");
  }
  if (c.batch == 0) {
    fail("batch must be at least 1");
  }
  if (c.capacity == 0) {
    fail("capacity must be at least 1 (lakh::channel has no rendezvous mode)");
  }
}

namespace detail {

/// The batch buffers of a run: `count` slices of `rows_each` rows in one anonymous mapping,
/// asked for transparent huge pages. Nothing is written before a generator fills a slice, so
/// the memory is touched once, and in 2 MiB pages where the kernel grants them instead of a
/// page fault per 4 KiB (page faults are most of a short run's setup on a VM).
class row_arena {
public:
  row_arena(std::size_t count, std::size_t rows_each)
      : rows_each_(rows_each), bytes_(round_up(count * rows_each * sizeof(row))) {
    void *p = ::mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      throw std::bad_alloc();
    }
#ifdef MADV_HUGEPAGE
    (void)::madvise(p, bytes_, MADV_HUGEPAGE); // advice: without it, 4 KiB pages
#endif
    rows_ = new (p) row[count * rows_each]; // trivial rows: begins their lifetime, writes nothing
  }
  row_arena(const row_arena &) = delete;
  row_arena &operator=(const row_arena &) = delete;
  ~row_arena() {
    (void)::munmap(rows_, bytes_);
  }

  [[nodiscard]] std::span<lakh::fake::usage_row> slice(std::size_t i) const noexcept {
    return {rows_ + i * rows_each_, rows_each_};
  }
  /// The whole slice that `part` begins.
  [[nodiscard]] std::span<lakh::fake::usage_row>
  whole(std::span<lakh::fake::usage_row> part) const noexcept {
    return {part.data(), rows_each_};
  }

private:
  using row = lakh::fake::usage_row;
  static_assert(std::is_trivially_default_constructible_v<row> &&
                std::is_trivially_destructible_v<row>);
  static std::size_t round_up(std::size_t n) {
    constexpr std::size_t huge = std::size_t{2} << 20;
    return (std::max<std::size_t>(n, 1) + huge - 1) / huge * huge;
  }
  std::size_t rows_each_;
  std::size_t bytes_;
  row *rows_ = nullptr;
};

/// One channel message: consecutive rows (a slice of the arena) and when they were generated.
struct work {
  std::uint64_t first_index = 0;
  std::span<lakh::fake::usage_row> rows;
  std::chrono::steady_clock::time_point generated;
};

/// What one consumer accumulates, alone.
struct worker_state {
  lakh::fake::usage_totals totals;
  lakh::latency_histogram latency;
  std::uint64_t batches = 0;
};

} // namespace detail

/// Runs the pipeline once. Thread-safety: safe (each call has its own channels and pool).
/// Blocks: until every row is aggregated, or stop is requested on `st`.
/// @throws std::invalid_argument on a bad config (see validate).
/// @throws std::runtime_error if the run was stopped before every row was aggregated.
/// Allocates: the pool, the channels, and one arena of capacity + generators + workers batch
/// buffers (reserved, touched as rows are generated).
inline result run(const config &cfg, std::stop_token st = {}) {
  validate(cfg);
  using clock = std::chrono::steady_clock;
  const auto setup_start = clock::now();
  const std::size_t n_workers = cfg.workers != 0 ? cfg.workers : cores();
  const std::size_t n_generators = cfg.generators != 0 ? cfg.generators : cores();
  const std::uint64_t n_batches = (cfg.rows + cfg.batch - 1) / cfg.batch;

  lakh::channel<detail::work> queue(cfg.capacity);
  // Every buffer is in `spare`, in `queue`, or held by one generator or one worker: as many as
  // fit in all of them at once, so that a generator never waits for a spare one for long.
  const std::size_t n_buffers = cfg.capacity + n_generators + n_workers;
  const detail::row_arena arena(
      n_buffers, static_cast<std::size_t>(std::min<std::uint64_t>(cfg.batch, cfg.rows)));
  lakh::channel<std::span<lakh::fake::usage_row>> spare(n_buffers);
  std::vector<std::unique_ptr<detail::worker_state>> states;
  for (std::size_t w = 0; w < n_workers; ++w) {
    states.push_back(std::make_unique<detail::worker_state>());
  }
  lakh::gauge buffered;
  lakh::counter aggregated_rows;
  std::atomic<std::uint64_t> next_batch{0};

  // The merge: each consumer, when done, adds its figures to `sum` (the first one done lends
  // its own), under two locks taken in one order whatever the argument order.
  lakh::ranked_mutex totals_mu(10, "pipeline.totals");
  lakh::ranked_mutex latency_mu(20, "pipeline.latency");
  detail::worker_state *sum = nullptr;

  lakh::worker_pool pool(n_workers, n_workers);
  std::unique_ptr<lakh::progress_line> progress;

  // Setup, before the clock: buffers reserved, consumers waiting on the channel, generators
  // spawned and waiting on `go`. `wall` is the pipeline itself: first row generated to last
  // row aggregated (setup is reported apart, as setup).
  for (std::size_t i = 0; i < n_buffers; ++i) {
    (void)spare.try_send(arena.slice(i));
  }
  std::latch ready(static_cast<std::ptrdiff_t>(n_generators - 1));
  std::atomic<bool> go{false};
  std::vector<std::future<void>> consumers;
  for (std::size_t w = 0; w < n_workers; ++w) {
    auto submitted = pool.submit(
        [&, state = states[w].get()](std::stop_token worker_stop) {
          for (;;) {
            auto item = queue.recv(worker_stop);
            if (!item) { // closed and drained, or stopped
              auto held = lakh::lock_all(latency_mu, totals_mu);
              if (sum == nullptr) {
                sum = state;
              } else {
                sum->totals.merge(state->totals);
                sum->latency.merge(state->latency);
                sum->batches += state->batches;
              }
              return;
            }
            try {
              state->totals.add(item->rows); // throws only for a row not from the spec
            } catch (...) {
              queue.close(); // generators blocked in send return instead of waiting forever,
              spare.close(); // and those waiting for a buffer this worker will not give back
              throw;         // to this worker's future, rethrown by run()
            }
            state->latency.record(clock::now() - item->generated);
            ++state->batches;
            aggregated_rows.add(item->rows.size());
            (void)spare.try_send(arena.whole(item->rows));
          }
        },
        st);
    if (!submitted) {
      throw std::runtime_error("pipeline: could not start worker " + std::to_string(w) + ": " +
                               std::string(lakh::to_string(submitted.status)));
    }
    consumers.push_back(std::move(submitted.future));
  }

  // One generator's loop: claim the next batch, fill a spare buffer, send it.
  auto generate = [&](const std::stop_token &gen_stop) {
    for (;;) {
      const std::uint64_t b = next_batch.fetch_add(1, std::memory_order_relaxed);
      if (b >= n_batches || gen_stop.stop_requested() || st.stop_requested()) {
        return;
      }
      const std::uint64_t first = b * cfg.batch;
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(cfg.batch, cfg.rows - first));
      auto buffer = spare.recv(st);
      if (!buffer) {
        return;
      }
      detail::work item{first, buffer->first(n), {}};
      lakh::fake::fill_rows(cfg.seed, first, item.rows);
      item.generated = clock::now();
      if (queue.send(std::move(item), st) != lakh::status::ok) {
        return;
      }
      buffered.set(static_cast<std::int64_t>(queue.size()));
    }
  };
  clock::time_point start;
  {
    // The calling thread is one of the generators: one thread fewer to start.
    lakh::task_group generators;
    for (std::size_t g = 1; g < n_generators; ++g) {
      generators.spawn([&](std::stop_token gen_stop) {
        ready.count_down();
        go.wait(false, std::memory_order_acquire);
        generate(gen_stop);
      });
    }
    ready.wait();
    if (cfg.progress) { // last of the setup, so that its rate is the pipeline's
      progress = std::make_unique<lakh::progress_line>(
          "rows", cfg.rows, [&aggregated_rows] { return aggregated_rows.value(); });
    }
    start = clock::now();
    go.store(true, std::memory_order_release);
    go.notify_all();
    generate(generators.get_stop_token());
    generators.wait();
  }
  queue.close();
  for (auto &c : consumers) {
    c.get();
  }
  const auto end = clock::now();
  if (progress) {
    progress->finish();
  }

  if (sum == nullptr || sum->totals.rows() != cfg.rows) {
    throw std::runtime_error("pipeline: stopped after " +
                             std::to_string(sum == nullptr ? 0 : sum->totals.rows()) + " of " +
                             std::to_string(cfg.rows) + " rows");
  }
  // The totals move into the result: no table of its own to allocate and fill.
  result r{.totals = std::move(sum->totals),
           .wall = std::chrono::duration_cast<std::chrono::nanoseconds>(end - start),
           .setup = std::chrono::duration_cast<std::chrono::nanoseconds>(start - setup_start),
           .batches = sum->batches,
           .latency = {sum->latency.quantile(0.5), sum->latency.quantile(0.99),
                       sum->latency.quantile(0.999), sum->latency.max()},
           .channel_high_water = buffered.max(),
           .generators = n_generators,
           .workers = n_workers};
  return r;
}

} // namespace pipeline
