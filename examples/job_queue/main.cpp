// A durable job queue in PostgreSQL (docs/job_queue.md): a job is enqueued in the transaction
// of the change that asks for it; a job_worker runs it, its writes and its completion in one
// transaction. Needs DATABASE_URL. Checks: each of 20 jobs wrote exactly one invoice.
// [doc:jobs]
#include <lakh/pg/job_worker.hpp>
// [doc:jobs]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

void write_invoice(pqxx::transaction_base &w, const std::string &subscription) {
  if (subscription.empty()) {
    return; // the periodic job: nothing to invoice
  }
  w.exec_params("INSERT INTO example_jobs.invoices (subscription) VALUES ($1)",
                std::stoi(subscription));
}

int main() {
  if (std::getenv("DATABASE_URL") == nullptr) {
    std::fprintf(stderr, "DATABASE_URL is not set: run under scripts/services run\n");
    return 2;
  }
  // [doc:jobs]
  lakh::pg::pool pool(std::getenv("DATABASE_URL"), 8);
  lakh::pg::job_queue jobs(pool, {"example_jobs.jobs"}); // schema "example_jobs" is created
  jobs.create_schema();                                  // or apply share/lakh/job_queue.sql
  // [doc:jobs]
  pqxx::nontransaction(*pool.acquire())
      .exec("TRUNCATE example_jobs.jobs; DROP TABLE IF EXISTS example_jobs.invoices, "
            "example_jobs.subscriptions; CREATE TABLE example_jobs.invoices (subscription int); "
            "CREATE TABLE example_jobs.subscriptions AS SELECT id, 'basic' AS plan "
            "FROM generate_series(1, 20) id");
  for (int id = 1; id <= 20; ++id) {
    const std::string plan = "pro";
    // [doc:jobs]
    // Producer: the job commits with the business change that asked for it.
    auto c = pool.acquire();
    pqxx::work w(*c);
    w.exec_params("UPDATE example_jobs.subscriptions SET plan = $1 WHERE id = $2", plan, id);
    jobs.enqueue(w, {"invoices", std::to_string(id), "sub:" + std::to_string(id), {}, 5});
    w.commit();
    // [doc:jobs]
  }
  std::stop_source shutdown;
  const auto shutdown_token = shutdown.get_token();
  // [doc:jobs]
  // Workers: the handler's writes and the fenced completion commit together.
  lakh::pg::job_worker_options opts;
  opts.queue = "invoices";
  opts.workers = 8; // never deadlocks on a pool of 8: heartbeats and LISTEN use their own
  opts.periodic = {{"close-periods", std::chrono::minutes(5), "", 3}}; // once per slot
  lakh::pg::job_worker worker(
      pool, jobs, opts,
      lakh::pg::job_handler_tx(
          [](const lakh::pg::claimed_job &job, pqxx::transaction_base &w, std::stop_token) {
            write_invoice(w, job.payload); // throw to fail: the text is kept, the job retried
          }));
  worker.start(shutdown_token); // or worker.stop(); the destructor stops too
  // [doc:jobs]
  // Wait for the invoices themselves: worker.done() also counts the periodic job.
  pqxx::connection c(std::getenv("DATABASE_URL"));
  const auto count = [&c] {
    return pqxx::nontransaction(c).exec(
        "SELECT count(*), count(DISTINCT subscription) FROM example_jobs.invoices")[0];
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (count()[0].as<long>() < 20 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  shutdown.request_stop();
  worker.stop();
  const auto r = count();
  const auto rows = r[0].as<long>(), distinct = r[1].as<long>();
  std::printf("%llu jobs done, %ld invoices for %ld subscriptions\n",
              static_cast<unsigned long long>(worker.done()), rows, distinct);
  return rows == 20 && distinct == 20 ? 0 : 1;
}
