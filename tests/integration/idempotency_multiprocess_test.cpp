// Several PROCESSES (lakh_idempotency_child, started with posix_spawn) and many threads in
// each fire the same idempotency key at once, against the real PostgreSQL and Redis of
// scripts/services: the operation runs exactly once across all of them (the store of
// record's business counter says 1), and every caller gets the winner's response.
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/redis/connection.hpp>

#include <support/env.hpp>
#include <support/process.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace {

constexpr int processes = 3;
constexpr int threads_per_process = 22; // 66 callers per key

// Runs one round: every child calls the guard with `key`; returns the result lines.
std::vector<std::string> run_round(const std::string &kind, const std::string &url,
                                   const std::string &ns, const std::string &key) {
  std::vector<lakh::test::child_process> children;
  for (int p = 0; p < processes; ++p) {
    children.push_back(lakh::test::spawn_child(
        {LAKH_IDEMPOTENCY_CHILD, kind, url, ns, key, std::to_string(threads_per_process)}));
  }
  for (auto &c : children) {
    REQUIRE(lakh::test::read_line(c.from_child) == "ready");
  }
  for (auto &c : children) { // go: as close together as the parent can make it
    REQUIRE(::write(c.to_child, "g", 1) == 1);
  }
  std::vector<std::string> lines;
  for (auto &c : children) {
    for (auto &l : lakh::test::finish_child(c)) {
      lines.push_back(l);
    }
  }
  return lines;
}

// Exactly one "executed" line, every other line "replayed" (or "in_progress" if the wait
// ran out) with the winner's response; nothing else.
void check_once(const std::vector<std::string> &lines) {
  REQUIRE(lines.size() == static_cast<std::size_t>(processes * threads_per_process));
  std::map<std::string, int> by_outcome;
  std::string winner;
  for (const auto &l : lines) {
    const auto space = l.find(' ');
    const std::string outcome = l.substr(0, space);
    ++by_outcome[outcome];
    if (outcome == "executed") {
      winner = l.substr(space + 1);
    }
  }
  CHECK(by_outcome["executed"] == 1);
  CHECK(by_outcome["replayed"] + by_outcome["in_progress"] + 1 == processes * threads_per_process);
  CHECK(by_outcome["error"] == 0);
  CHECK(by_outcome["mismatch"] == 0);
  CHECK(by_outcome["lease_lost"] == 0);
  REQUIRE(winner.rfind("201 winner ", 0) == 0);
  for (const auto &l : lines) {
    if (l.rfind("replayed ", 0) == 0) {
      CHECK(l.substr(std::strlen("replayed ")) == winner);
    }
  }
}

long pg_scalar(const std::string &sql) {
  pqxx::connection c(lakh::test::database_url());
  pqxx::nontransaction tx(c);
  return tx.exec(sql)[0][0].as<long>();
}

void pg_exec(const std::string &sql) {
  pqxx::connection c(lakh::test::database_url());
  pqxx::nontransaction tx(c);
  tx.exec(sql);
}

} // namespace

TEST_CASE("idempotency.multiprocess.pg.same_key_runs_once_across_processes" *
          doctest::timeout(180)) {
  const std::string ns = "idem_mp_" + std::to_string(::getpid());
  {
    lakh::pg::pool pool(lakh::test::database_url(), 1);
    lakh::pg::idempotency_store store(pool, {ns});
    store.create_schema();
  }
  pg_exec("CREATE TABLE " + ns + "_business (id bigserial PRIMARY KEY, note text NOT NULL)");
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    const std::string key = "charge-" + std::to_string(round);
    check_once(run_round("pg", lakh::test::database_url(), ns, key));
    // The store of record: one business row per key, written with the stored result.
    CHECK(pg_scalar("SELECT count(*) FROM " + ns + "_business") == round + 1);
  }
  pg_exec("DROP TABLE IF EXISTS " + ns + ", " + ns + "_business");
}

TEST_CASE("idempotency.multiprocess.redis.same_key_runs_once_across_processes" *
          doctest::timeout(180)) {
  const std::string ns = "lakh:test:mp:" + std::to_string(::getpid()) + ":";
  lakh::redis::connection_pool pool(lakh::test::redis_url());
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    const std::string key = "charge-" + std::to_string(round);
    check_once(run_round("redis", lakh::test::redis_url(), ns, key));
    auto count = pool.command({"GET", ns + "business_count"});
    REQUIRE(count->type == REDIS_REPLY_STRING);
    CHECK(std::string(count->str, count->len) == std::to_string(round + 1));
  }
}
