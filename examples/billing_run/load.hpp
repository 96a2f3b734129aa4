#pragma once
// examples/billing_run/load.hpp: the load stage. Generator -> lakh::channel -> COPY, one
// transaction per chunk of rows that also records the chunk and enqueues its job
// (lakh::pg::job_queue): a chunk and its job exist together or not at all, and a retried
// chunk is skipped once committed. The period manifest (rows per tenant for January) is
// written first, as an ingest ledger would know it; a tenant's invoice is due when its count
// is reached.

#include "database.hpp"

#include <lakh/channel.hpp>
#include <lakh/fake/usage.hpp>
#include <lakh/pg/array.hpp>
#include <lakh/pg/copy.hpp>
#include <lakh/task_group.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <tuple>
#include <vector>

namespace billing {

struct load_result {
  std::uint64_t rows_copied = 0;    ///< rows written by this call (skipped chunks excluded)
  std::uint64_t chunks_copied = 0;  ///< chunks committed by this call
  std::uint64_t chunks_skipped = 0; ///< chunks found committed already (a resumed load)
  double seconds = 0;
};

namespace detail {

/// A row_source over one batch, for copy_from: yields the batch once.
struct one_batch {
  const lakh::fake::usage_batch *batch;
  bool sent = false;
  std::optional<std::span<const lakh::fake::usage_row>> recv() {
    if (sent) {
      return std::nullopt;
    }
    sent = true;
    return std::span<const lakh::fake::usage_row>(batch->rows);
  }
  void close() noexcept {}
};

} // namespace detail

/// Records the load's parameters and the period manifest (one transaction), unless they are
/// there already: a rerun with the same parameters resumes, one with others is refused.
/// @throws std::runtime_error if the database holds a load with other parameters.
inline void record_params(lakh::pg::retrier &retry, lakh::pg::pool &p, std::uint64_t seed,
                          std::uint64_t rows, std::uint32_t batch) {
  retry.run(p, [&](pqxx::work &w) {
    w.exec("LOCK TABLE billing.params IN EXCLUSIVE MODE");
    auto r = w.exec("SELECT seed, rows, batch FROM billing.params");
    if (!r.empty()) {
      if (r[0][0].as<std::uint64_t>() != seed || r[0][1].as<std::uint64_t>() != rows ||
          r[0][2].as<std::uint32_t>() != batch) {
        throw std::runtime_error(
            std::string("billing_run load: this database already holds a load of ") +
            r[0][1].c_str() + " rows (seed " + r[0][0].c_str() + ", batch " + r[0][2].c_str() +
            "); use another database or `run` (which starts afresh)");
      }
      return;
    }
    lakh::pg::detail::exec(w, "INSERT INTO billing.params (seed, rows, batch) VALUES ($1, $2, $3)",
                           static_cast<std::int64_t>(seed), static_cast<std::int64_t>(rows),
                           static_cast<std::int64_t>(batch));
    const auto expected = lakh::fake::reference_totals(seed, rows);
    std::vector<std::uint32_t> tenants;
    std::vector<std::uint64_t> counts;
    for (std::uint32_t t = 0; t < lakh::fake::tenant_count; ++t) {
      if (const auto n = expected.tenant(t).rows; n != 0) {
        tenants.push_back(t);
        counts.push_back(n);
      }
    }
    lakh::pg::detail::exec(
        w, "INSERT INTO billing.manifest SELECT * FROM unnest($1::int[], $2::bigint[])",
        lakh::pg::int_array(tenants), lakh::pg::int_array(counts));
  });
}

/// Claims of a chunk's job before it is dead. The job's SQL is the same at every attempt, so an
/// attempt is lost only to its worker's death or an outage, and --chaos kills workers every
/// few hundred milliseconds: on a loaded machine, where a chunk takes seconds, one chunk can
/// lose ten attempts in a row. The budget is for chaos, not for a poison job.
inline constexpr int chunk_attempts = 100;

/// Copies one batch (chunk first_index / batch) in one transaction with its chunk record and
/// its job. Returns false if the chunk was committed already (a resumed load: skipped).
inline bool copy_chunk(lakh::pg::retrier &retry, lakh::pg::pool &p, lakh::pg::job_queue &queue,
                       const lakh::fake::usage_batch &b, std::uint32_t batch, std::stop_token st) {
  const std::uint64_t chunk = b.first_index / batch;
  const auto first_id = static_cast<std::int64_t>(b.first_index + 1);
  const auto last_id = static_cast<std::int64_t>(b.first_index + b.rows.size());
  return retry.run(
      p,
      [&](pqxx::work &w) {
        // Serialize the (rare) race of two loaders on one chunk; skip a committed chunk.
        lakh::pg::detail::exec(w, "SELECT pg_advisory_xact_lock($1, $2)", tenant_lock_ns - 1,
                               static_cast<std::int32_t>(chunk));
        if (!lakh::pg::detail::exec(w, "SELECT 1 FROM billing.chunks WHERE chunk = $1",
                                    static_cast<std::int64_t>(chunk))
                 .empty()) {
          return false;
        }
        detail::one_batch src{&b};
        lakh::pg::copy_from(
            w, "billing.usage", {"id", "tenant_id", "user_id", "metric", "quantity", "ts"}, src,
            [](const lakh::fake::usage_row &r) {
              return std::make_tuple(static_cast<std::int64_t>(r.id), r.tenant_id, r.user_id,
                                     static_cast<int>(r.kind), r.quantity, r.ts);
            });
        const auto job = queue.enqueue(
            w, {queue_name, std::to_string(first_id) + "," + std::to_string(last_id),
                "chunk-" + std::to_string(chunk), std::chrono::milliseconds(0), chunk_attempts});
        if (!job) {
          throw std::logic_error("billing_run load: chunk " + std::to_string(chunk) +
                                 " has a live job but no chunk record");
        }
        lakh::pg::detail::exec(w, "INSERT INTO billing.chunks VALUES ($1, $2, $3, $4)",
                               static_cast<std::int64_t>(chunk), first_id, last_id, *job);
        return true;
      },
      st);
}

/// Loads rows [0, rows) of `seed` in chunks of `batch` rows (one job each): `generators`
/// threads stream batches into a bounded channel, `loaders` threads COPY each batch in its own
/// transaction with its chunk record and job. Resumable: committed chunks are skipped, and a
/// second load with other parameters is refused.
/// @throws std::invalid_argument on rows == 0, batch == 0 or > 1,000,000, generators or
/// loaders == 0; std::runtime_error if the database holds a load with other parameters;
/// pqxx errors that outlast the retrier.
inline load_result load(lakh::pg::pool &p, std::uint64_t seed, std::uint64_t rows,
                        std::uint32_t batch, unsigned generators, unsigned loaders,
                        std::atomic<std::uint64_t> *progress = nullptr) {
  if (rows == 0 || batch == 0 || batch > 1'000'000 || generators == 0 || loaders == 0) {
    throw std::invalid_argument("billing_run load: rows (" + std::to_string(rows) +
                                ") and batch (" + std::to_string(batch) +
                                ", at most 1000000) and the thread counts must be positive");
  }
  const auto t0 = clock::now();
  auto retry = patient_retrier();
  record_params(retry, p, seed, rows, batch);
  const std::uint64_t chunks = (rows + batch - 1) / batch;
  lakh::channel<lakh::fake::usage_batch> ch(2 * loaders);
  std::atomic<std::uint64_t> next_chunk{0};
  std::atomic<std::uint64_t> copied{0};
  std::atomic<std::uint64_t> copied_chunks{0};
  std::atomic<std::uint64_t> skipped{0};
  auto queue = make_queue(p);
  {
    lakh::task_group producers;
    lakh::task_group consumers;
    for (unsigned g = 0; g < generators; ++g) {
      producers.spawn([&](std::stop_token st) {
        // Chunks are claimed one at a time so that the channel fills in chunk order.
        for (std::uint64_t c; (c = next_chunk.fetch_add(1)) < chunks;) {
          const std::uint64_t first = c * batch;
          const std::uint64_t n = std::min<std::uint64_t>(batch, rows - first);
          if (lakh::fake::stream_usage(ch, seed, first, n, batch, st) != lakh::status::ok) {
            return;
          }
        }
      });
    }
    for (unsigned l = 0; l < loaders; ++l) {
      consumers.spawn([&](std::stop_token st) {
        while (auto b = ch.recv(st)) {
          if (copy_chunk(retry, p, queue, *b, batch, st)) {
            copied += b->rows.size();
            ++copied_chunks;
          } else {
            ++skipped;
          }
          if (progress != nullptr) {
            progress->fetch_add(b->rows.size());
          }
        }
      });
    }
    producers.wait();
    ch.close();
    consumers.wait();
  }
  retry.run(p, [&](pqxx::work &w) {
    const auto n = w.exec("SELECT count(*) FROM billing.chunks")[0][0].as<std::uint64_t>();
    if (n != chunks) {
      throw std::runtime_error("billing_run load: " + std::to_string(n) + " of " +
                               std::to_string(chunks) + " chunks committed");
    }
    w.exec("UPDATE billing.params SET loaded_at = coalesce(loaded_at, now())");
  });
  return {copied.load(), copied_chunks.load(), skipped.load(),
          std::chrono::duration<double>(clock::now() - t0).count()};
}

} // namespace billing
