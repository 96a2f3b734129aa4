// lakh_job_worker: one process of tests/integration/pg_job_queue_test.cpp. THREADS threads
// claim batches of BATCH jobs of QUEUE from TABLE and, per batch, in ONE transaction: log
// each job in LOG (job_id is its primary key: a job processed twice fails the transaction)
// and complete the batch with its fencing tokens. Stops when a claim finds nothing.
// Prints "completed N" and exits 0, or prints the error and exits 1.
//
//   lakh_job_worker URL TABLE QUEUE LOG THREADS BATCH
#include <lakh/pg/job_queue.hpp>

#include <child_process.hpp>

#include <pqxx/pqxx>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char **argv) {
  lakh_examples::die_with_parent();
  if (argc != 7) {
    std::fprintf(stderr, "usage: lakh_job_worker URL TABLE QUEUE LOG THREADS BATCH\n");
    return 2;
  }
  const std::string url = argv[1];
  const std::string queue_name = argv[3];
  const std::string log = argv[4];
  const int threads = std::stoi(argv[5]);
  const int batch = std::stoi(argv[6]);
  try {
    lakh::pg::pool pool(url, static_cast<std::size_t>(threads) * 2);
    lakh::pg::job_queue queue(pool, {argv[2]});
    std::atomic<long> completed{0};
    std::atomic<bool> failed{false};
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < threads; ++t) {
        ts.emplace_back([&] {
          try {
            for (;;) {
              auto jobs = queue.claim(queue_name, batch, std::chrono::seconds(60));
              if (jobs.empty()) {
                return;
              }
              auto c = pool.acquire();
              pqxx::work w(*c);
              std::string ids = "{";
              std::string values = "{";
              for (std::size_t i = 0; i < jobs.size(); ++i) {
                ids += (i == 0 ? "" : ",") + std::to_string(jobs[i].id);
                values += (i == 0 ? "" : ",") + jobs[i].payload;
              }
              lakh::pg::detail::exec(
                  w,
                  "INSERT INTO " + log +
                      " (job_id, value) SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                  ids + "}", values + "}");
              auto done = queue.complete_batch(w, jobs);
              if (done.size() != jobs.size()) {
                throw std::runtime_error("completed " + std::to_string(done.size()) + " of " +
                                         std::to_string(jobs.size()) + " claimed jobs");
              }
              w.commit();
              completed.fetch_add(static_cast<long>(done.size()));
            }
          } catch (const std::exception &e) {
            std::printf("error %s\n", e.what());
            failed = true;
          }
        });
      }
    }
    std::printf("completed %ld\n", completed.load());
    return failed ? 1 : 0;
  } catch (const std::exception &e) {
    std::printf("error %s\n", e.what());
    return 1;
  }
}
