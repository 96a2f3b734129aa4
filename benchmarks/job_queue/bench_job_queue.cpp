// bench_job_queue: enqueue --jobs jobs (bulk, untimed), then work them off until the queue
// is empty with --workers threads claiming batches of --batch, and print jobs/s of that phase
// (checking that every job is done):
//   --mode worker: lakh::pg::job_worker with an empty batch handler (each batch's fenced
//                  completion and the next claim are one statement, one commit per batch);
//   --mode row-lock: job_worker with job_claim::row_lock (each batch claimed as done in the
//                  transaction that runs it: its row locks are its lease, one write per job);
//   --mode calls:  job_queue::claim, then complete_batch in a second transaction (the
//                  building blocks called by hand, two commits per batch).
// --pickup N instead measures pickup latency at idle: N jobs enqueued one at a time, a few
// milliseconds apart, each timed from just before its enqueue commits to its handler's start,
// by a job_worker that LISTENs (or, with --poll-only, polls every --poll-ms; then the jobs
// arrive at random moments within a poll interval).
// DATABASE_URL names the server (scripts/bench-job-queue starts one).
#include <lakh/metrics.hpp>
#include <lakh/pg/job_queue.hpp>
#include <lakh/pg/job_worker.hpp>

#include <CLI/CLI.hpp>
#include <pqxx/pqxx>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// --pickup: enqueue -> handler start, at idle.
int pickup(lakh::pg::pool &pool, lakh::pg::job_queue &queue, int n, bool poll_only, int poll_ms) {
  std::vector<double> ms;
  std::mutex m;
  lakh::pg::job_worker_options o;
  o.queue = "pickup";
  o.workers = 2;
  o.listen = !poll_only;
  o.poll = std::chrono::milliseconds(poll_ms);
  lakh::pg::job_worker w(
      pool, queue, o, lakh::pg::job_handler([&](const lakh::pg::claimed_job &j, std::stop_token) {
        const double d = static_cast<double>(now_ns() - std::stoll(j.payload)) / 1e6;
        std::lock_guard l(m);
        ms.push_back(d);
      }));
  w.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(200)); // workers idle, LISTEN up
  std::mt19937 rng(42);
  // Arrivals at random moments: a few ms apart with LISTEN; spread over a poll interval
  // without it (so that an arrival does not always fall just after a poll).
  std::uniform_int_distribution<int> gap(5, poll_only ? std::max(20, poll_ms) : 20);
  for (int i = 0; i < n; ++i) {
    {
      auto c = pool.acquire();
      pqxx::work tx(*c);
      const auto t0 = now_ns(); // before the commit: the commit's round trip is counted
      (void)queue.enqueue(tx, {"pickup", std::to_string(t0), std::nullopt, {}, 5});
      tx.commit();
    }
    while (w.done() < static_cast<std::uint64_t>(i + 1)) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(gap(rng)));
  }
  w.stop();
  std::sort(ms.begin(), ms.end());
  const auto q = [&](double p) {
    return ms[static_cast<std::size_t>(p * static_cast<double>(ms.size() - 1))];
  };
  std::printf(
      "pickup (%s): %zu jobs at idle, enqueue commit -> handler start: p50 %.2f ms, "
      "p99 %.2f ms, max %.2f ms; NOTIFY wake-ups %llu\n",
      poll_only ? ("polling every " + std::to_string(poll_ms) + " ms").c_str() : "LISTEN/NOTIFY",
      ms.size(), q(0.5), q(0.99), ms.back(), static_cast<unsigned long long>(w.notify_wakeups()));
  return static_cast<int>(ms.size()) == n ? 0 : 1;
}

} // namespace

int main(int argc, char **argv) {
  long jobs_n = 1'000'000;
  int workers = 2;
  int batch = 1000;
  std::string mode = "worker";
  int pickup_n = 0;
  bool poll_only = false;
  int poll_ms = 1000;
  CLI::App app{"bench_job_queue: claim + complete throughput of lakh::pg::job_queue"};
  app.add_option("--jobs", jobs_n, "jobs to enqueue and process")
      ->check(CLI::Range(1L, 100'000'000L));
  app.add_option("--workers", workers, "claiming threads")->check(CLI::Range(1, 256));
  app.add_option("--batch", batch, "jobs per claim")->check(CLI::Range(1, 10000));
  app.add_option("--mode", mode,
                 "worker (lakh::pg::job_worker, leases), row-lock (job_worker, row locks) or "
                 "calls (claim, complete)")
      ->check(CLI::IsMember({"worker", "row-lock", "calls"}));
  app.add_option("--pickup", pickup_n, "measure pickup latency over N jobs instead")
      ->check(CLI::Range(1, 100000));
  app.add_flag("--poll-only", poll_only, "with --pickup: no LISTEN, poll only");
  app.add_option("--poll-ms", poll_ms, "with --pickup: the poll interval")
      ->check(CLI::Range(1, 60000));
  CLI11_PARSE(app, argc, argv);
  const char *url = std::getenv("DATABASE_URL");
  if (url == nullptr) {
    std::fprintf(stderr,
                 "bench_job_queue: DATABASE_URL is not set (run scripts/bench-job-queue)\n");
    return 2;
  }
  lakh::pg::pool pool(url, static_cast<std::size_t>(workers) * 2);
  lakh::pg::job_queue queue(pool, {"bench_jobs"});
  {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    tx.exec("DROP TABLE IF EXISTS bench_jobs");
  }
  queue.create_schema();
  if (pickup_n > 0) {
    return pickup(pool, queue, pickup_n, poll_only, poll_ms);
  }
  for (long done = 0; done < jobs_n;) {
    std::vector<std::string> payloads;
    for (long i = 0; i < 100'000 && done < jobs_n; ++i) {
      payloads.push_back(std::to_string(++done));
    }
    auto c = pool.acquire();
    pqxx::work w(*c);
    (void)queue.enqueue_bulk(w, "bench", payloads);
    w.commit();
  }
  {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    tx.exec("VACUUM ANALYZE bench_jobs");
  }
  lakh::counter completed;
  const auto start = std::chrono::steady_clock::now();
  if (mode != "calls") {
    lakh::pg::job_worker_options o;
    o.claim = mode == "row-lock" ? lakh::pg::job_claim::row_lock : lakh::pg::job_claim::lease;
    o.queue = "bench";
    o.workers = workers;
    o.batch = batch;
    o.lease = std::chrono::seconds(60);
    o.listen = false;
    lakh::pg::job_worker w(
        pool, queue, o,
        lakh::pg::job_batch_handler([](const std::vector<lakh::pg::claimed_job> &,
                                       pqxx::transaction_base &, std::stop_token) {}));
    w.start();
    while (w.done() < static_cast<std::uint64_t>(jobs_n)) {
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    completed.add(w.done());
  } else {
    std::vector<std::jthread> ts;
    for (int t = 0; t < workers; ++t) {
      ts.emplace_back([&] {
        for (;;) {
          auto jobs = queue.claim("bench", batch, std::chrono::seconds(60));
          if (jobs.empty()) {
            return;
          }
          auto c = pool.acquire();
          pqxx::work w(*c);
          completed.add(queue.complete_batch(w, jobs).size());
          w.commit();
        }
      });
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto h = queue.health();
  std::printf("%s: jobs %ld, workers %d, batch %d: %.2f s, %.0f jobs/s claimed+completed; "
              "done %lld\n",
              mode == "worker"     ? "job_worker"
              : mode == "row-lock" ? "job_worker (row locks)"
                                   : "claim+complete_batch",
              jobs_n, workers, batch, s, static_cast<double>(completed.value()) / s,
              static_cast<long long>(h.done));
  return h.done == jobs_n && static_cast<long>(completed.value()) == jobs_n ? 0 : 1;
}
