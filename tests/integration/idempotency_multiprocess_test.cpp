// Several PROCESSES (lakh_idempotency_child, started with posix_spawn) and many threads in
// each fire the same idempotency key at once, against the real PostgreSQL and Redis of
// scripts/services: the operation runs exactly once across all of them (the store of
// record's business counter says 1), and every caller gets the winner's response. The
// children open their connections and start their threads first, then the parent releases
// all of them at once (a byte on each child's stdin); each caller reports its outcome, the
// response and when its call began and ended.
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/redis/connection.hpp>

#include <support/env.hpp>
#include <support/process.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int processes = 3;
constexpr int threads_per_process = 22; // 66 callers per key

// One caller's report: "<outcome> <begin ns> <end ns> <status> <body>" from a child.
struct call {
  int process = 0;
  std::string outcome;
  long long begin_ns = 0; // CLOCK_MONOTONIC: comparable across the processes
  long long end_ns = 0;
  std::string response; // "<status> <body>" ("0 " for in_progress; the message for error)
};

call parse_call(int process, const std::string &line) {
  std::istringstream in(line);
  call c;
  c.process = process;
  in >> c.outcome >> c.begin_ns >> c.end_ns;
  REQUIRE_MESSAGE(in, "malformed child line: " << line);
  in.get(); // the space before the rest
  std::getline(in, c.response);
  return c;
}

// Runs one round: every child calls the guard with `key`; returns every caller's report.
std::vector<call> run_round(const std::string &kind, const std::string &url, const std::string &ns,
                            const std::string &key) {
  // If the round fails half-way (a REQUIRE throws), the children not yet finished are killed
  // and reaped (~child_process), so none outlives the test case holding connections.
  std::vector<lakh::test::child_process> children;
  for (int p = 0; p < processes; ++p) {
    children.push_back(lakh::test::spawn_child(
        {LAKH_IDEMPOTENCY_CHILD, kind, url, ns, key, std::to_string(threads_per_process)}));
  }
  // "ready": the child has its connections open and its threads started.
  for (auto &c : children) {
    REQUIRE(c.read_line() == "ready");
  }
  for (auto &c : children) { // go: as close together as the parent can make it
    REQUIRE(::write(c.to_child(), "g", 1) == 1);
  }
  std::vector<call> calls;
  for (int p = 0; p < processes; ++p) {
    for (auto &l : lakh::test::finish_child(children[static_cast<std::size_t>(p)])) {
      calls.push_back(parse_call(p, l));
    }
  }
  return calls;
}

// Exactly one "executed" call, every other one "replayed" with the winner's response (or
// "in_progress", without one, had its 20 s wait run out); no error, mismatch or lease_lost.
// And the race was real: callers in at least one other process than the winner's started
// before the winner's call returned (its operation alone takes 100 ms).
void check_once(const std::vector<call> &calls) {
  REQUIRE(calls.size() == static_cast<std::size_t>(processes * threads_per_process));
  std::map<std::string, int> by_outcome;
  const call *winner = nullptr;
  for (const auto &c : calls) {
    ++by_outcome[c.outcome];
    if (c.outcome == "executed") {
      winner = &c;
    }
    if (c.outcome == "error") {
      MESSAGE("process " << c.process << ": " << c.response);
    }
  }
  CHECK(by_outcome["executed"] == 1);
  CHECK(by_outcome["replayed"] + by_outcome["in_progress"] + 1 == processes * threads_per_process);
  CHECK(by_outcome["error"] == 0);
  CHECK(by_outcome["mismatch"] == 0);
  CHECK(by_outcome["lease_lost"] == 0);
  REQUIRE(winner != nullptr);
  REQUIRE(winner->response.rfind("201 winner ", 0) == 0);
  std::set<int> overlapping; // processes with a caller that started during the winner's call
  for (const auto &c : calls) {
    if (c.outcome == "replayed") {
      CHECK(c.response == winner->response);
    }
    if (c.outcome == "in_progress") {
      CHECK(c.response == "0 ");
    }
    if (c.begin_ns < winner->end_ns) {
      overlapping.insert(c.process);
    }
  }
  CAPTURE(winner->process);
  CHECK(overlapping.size() >= 2);
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
    // The store of record: the operation's INCR ran once per key.
    auto count = pool.command({"GET", ns + "business_count"});
    REQUIRE(count->type == REDIS_REPLY_STRING);
    CHECK(std::string(count->str, count->len) == std::to_string(round + 1));
  }
  (void)pool.command({"DEL", ns + "business_count"}); // the records expire (TTL 60 s)
}
