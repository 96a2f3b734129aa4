// A job queue loop by hand (docs/job_queue.md, "The building blocks by hand"): claim jobs
// with a lease, and commit each job's effects with its fenced completion in one transaction.
// Needs DATABASE_URL (scripts/services run). Checks: every job wrote one invoice and is done.
#include <lakh/pg/job_queue.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

void write_invoice(pqxx::transaction_base &w, const std::string &subscription) {
  w.exec_params("INSERT INTO example_hand.invoices (subscription) VALUES ($1)",
                std::stoi(subscription));
}

int main() {
  if (std::getenv("DATABASE_URL") == nullptr) {
    std::fprintf(stderr, "DATABASE_URL is not set: run under scripts/services run\n");
    return 2;
  }
  lakh::pg::pool pool(std::getenv("DATABASE_URL"), 4);
  lakh::pg::job_queue jobs(pool, {"example_hand.jobs"});
  jobs.create_schema();
  {
    auto c = pool.acquire();
    pqxx::work w(*c);
    w.exec("TRUNCATE example_hand.jobs; DROP TABLE IF EXISTS example_hand.invoices;"
           "CREATE TABLE example_hand.invoices (subscription int)");
    for (int id = 1; id <= 10; ++id) {
      jobs.enqueue(w, {"invoices", std::to_string(id), {}, {}, 5});
    }
    w.commit();
  }
  // [doc:loop]
  // Effects and completion in one transaction; a stale token rolls both back.
  for (auto &job : jobs.claim("invoices", 100, std::chrono::seconds(30))) {
    auto c = pool.acquire();
    pqxx::work w(*c);
    write_invoice(w, job.payload);
    if (jobs.complete(w, job)) {
      w.commit();
    } // else: another worker owns the job now; the transaction rolls back
  }
  // [doc:loop]
  const auto done = jobs.list("done", "invoices").size();
  auto c = pool.acquire();
  const long invoices =
      pqxx::nontransaction(*c).exec1("SELECT count(*) FROM example_hand.invoices")[0].as<long>();
  std::printf("%zu jobs done, %ld invoices\n", done, invoices);
  return done == 10 && invoices == 10 ? 0 : 1;
}
