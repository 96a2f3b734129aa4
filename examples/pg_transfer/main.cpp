// lakh::pg (docs/pg.md): a bounded pool, transactions retried on deadlock under a shared
// budget, advisory locks in one sorted order, COPY fed from a channel. Needs DATABASE_URL.
// Checks: 10,000 rows are COPYed; 400 concurrent transfers both ways keep the total.
// [doc:pg]
#include <lakh/channel.hpp>
#include <lakh/pg.hpp>
// [doc:pg]

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <tuple>
#include <vector>

struct usage_row {
  long id, tenant, qty;
};
std::vector<usage_row> generate() {
  std::vector<usage_row> v;
  for (long i = 1; i <= 10000; ++i) {
    v.push_back({i, i % 7, 3});
  }
  return v;
}

int main() {
  if (std::getenv("DATABASE_URL") == nullptr) {
    std::fprintf(stderr, "DATABASE_URL is not set: run under scripts/services run\n");
    return 2;
  }
  // [doc:pg]
  lakh::pg::pool db(std::getenv("DATABASE_URL"), 8); // at most 8 connections
  lakh::pg::retry_options ro;
  ro.budget = std::make_shared<lakh::retry_budget>(50, 10); // <= 50 retries, +10/s, shared
  lakh::pg::retrier retry(ro);
  // [doc:pg]
  pqxx::nontransaction(*db.acquire())
      .exec("DROP TABLE IF EXISTS account, usage; CREATE TABLE usage (id int, tenant_id int, "
            "quantity int); CREATE TABLE account AS SELECT id, 1000::bigint AS cents "
            "FROM generate_series(1, 4) id");
  // [doc:pg]

  // Move money between two accounts: the row locks are taken in one order for everyone.
  auto transfer = [&](std::int32_t from, std::int32_t to, std::int64_t cents) {
    retry.run(db, [&](pqxx::work &tx) { // re-run on 40P01/40001/55P03/lost
      lakh::pg::lock_all_advisory(tx, lakh::pg::advisory_key(1, from),
                                  lakh::pg::advisory_key(1, to)); // sorted: no deadlock
      tx.exec_params("UPDATE account SET cents = cents - $1 WHERE id = $2", cents, from);
      tx.exec_params("UPDATE account SET cents = cents + $1 WHERE id = $2", cents, to);
    }); // run() commits
  };

  // Bulk load: a producer fills a bounded channel, COPY drains it; all rows or none.
  lakh::channel<usage_row> rows(4096);
  std::jthread producer([&] {
    for (auto &r : generate()) {
      if (rows.send(r) != lakh::status::ok) {
        return;
      }
    }
    rows.close();
  });
  auto r =
      lakh::pg::copy_from(db, "usage", {"id", "tenant_id", "quantity"}, rows,
                          [](const usage_row &u) { return std::tuple(u.id, u.tenant, u.qty); });
  // [doc:pg]
  std::vector<std::jthread> tellers;
  for (std::int32_t t = 0; t < 4; ++t) { // 1 -> 2 -> 3 -> 4 -> 1 and back, 100 each
    tellers.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        t % 2 == 0 ? transfer(1 + t, 1 + (t + 1) % 4, 7) : transfer(1 + (t + 1) % 4, 1 + t, 3);
      }
    });
  }
  tellers.clear();
  const long total =
      pqxx::nontransaction(*db.acquire()).exec1("SELECT sum(cents) FROM account")[0].as<long>();
  std::printf("copied %zu rows; total %ld cents after 400 transfers\n", r.rows, total);
  return r.rows == 10000 && r.status == lakh::status::ok && total == 4000 ? 0 : 1;
}
