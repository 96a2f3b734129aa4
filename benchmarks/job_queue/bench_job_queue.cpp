// bench_job_queue: enqueue --jobs jobs (bulk, untimed), then --workers threads claim batches
// of --batch with a lease and complete each batch with its fencing tokens in one transaction,
// until the queue is empty. Prints jobs/s of the claim+complete phase and checks that every
// job is done. DATABASE_URL names the server (scripts/bench-job-queue starts one).
#include <lakh/metrics.hpp>
#include <lakh/pg/job_queue.hpp>

#include <CLI/CLI.hpp>
#include <pqxx/pqxx>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char **argv) {
  long jobs_n = 1'000'000;
  int workers = 2;
  int batch = 1000;
  CLI::App app{"bench_job_queue: claim + complete throughput of lakh::pg::job_queue"};
  app.add_option("--jobs", jobs_n, "jobs to enqueue and process")
      ->check(CLI::Range(1L, 100'000'000L));
  app.add_option("--workers", workers, "claiming threads")->check(CLI::Range(1, 256));
  app.add_option("--batch", batch, "jobs per claim")->check(CLI::Range(1, 10000));
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
  lakh::latency_histogram claim_latency;
  const auto start = std::chrono::steady_clock::now();
  {
    std::vector<std::jthread> ts;
    for (int t = 0; t < workers; ++t) {
      ts.emplace_back([&] {
        for (;;) {
          const auto t0 = std::chrono::steady_clock::now();
          auto jobs = queue.claim("bench", batch, std::chrono::seconds(60));
          claim_latency.record(std::chrono::steady_clock::now() - t0);
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
  std::printf("jobs %ld, workers %d, batch %d: %.2f s, %.0f jobs/s claimed+completed; claim "
              "p50 %.2f ms p99 %.2f ms; done %lld\n",
              jobs_n, workers, batch, s, static_cast<double>(completed.value()) / s,
              std::chrono::duration<double, std::milli>(claim_latency.quantile(0.5)).count(),
              std::chrono::duration<double, std::milli>(claim_latency.quantile(0.99)).count(),
              static_cast<long long>(h.done));
  return h.done == jobs_n && static_cast<long>(completed.value()) == jobs_n ? 0 : 1;
}
