// Several PROCESSES (lakh_idempotency_child, started with posix_spawn) and many threads in
// each fire the same idempotency key at once, against the real PostgreSQL and Redis of
// scripts/services: the operation runs exactly once across all of them (the store of
// record's business counter says 1), and every caller gets the winner's response.
#include <lakh/pg/idempotency_store.hpp>
#include <lakh/redis/connection.hpp>

#include <support/env.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

extern char **environ;

namespace {

constexpr int processes = 3;
constexpr int threads_per_process = 22; // 66 callers per key

struct child {
  pid_t pid = -1;
  int to_child = -1;
  FILE *from_child = nullptr;
};

child spawn_child(const std::vector<std::string> &args) {
  int in[2];
  int out[2];
  REQUIRE(::pipe(in) == 0);
  REQUIRE(::pipe(out) == 0);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
  for (int fd : {in[0], in[1], out[0], out[1]}) {
    posix_spawn_file_actions_addclose(&fa, fd);
  }
  std::vector<char *> argv;
  for (const auto &a : args) {
    argv.push_back(const_cast<char *>(a.c_str())); // NOLINT: posix_spawn's signature
  }
  argv.push_back(nullptr);
  child c;
  const int rc = ::posix_spawn(&c.pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  REQUIRE_MESSAGE(rc == 0, "posix_spawn " << args[0] << ": " << std::strerror(rc));
  c.to_child = in[1];
  c.from_child = ::fdopen(out[0], "r");
  REQUIRE(c.from_child != nullptr);
  return c;
}

std::string read_line(FILE *f) {
  std::string line;
  for (int ch = 0; (ch = std::fgetc(f)) != EOF && ch != '\n';) {
    line += static_cast<char>(ch);
  }
  return line;
}

// Runs one round: every child calls the guard with `key`; returns the result lines.
std::vector<std::string> run_round(const std::string &kind, const std::string &url,
                                   const std::string &ns, const std::string &key) {
  std::vector<child> children;
  for (int p = 0; p < processes; ++p) {
    children.push_back(spawn_child(
        {LAKH_IDEMPOTENCY_CHILD, kind, url, ns, key, std::to_string(threads_per_process)}));
  }
  for (auto &c : children) {
    REQUIRE(read_line(c.from_child) == "ready");
  }
  for (auto &c : children) { // go: as close together as the parent can make it
    REQUIRE(::write(c.to_child, "g", 1) == 1);
  }
  std::vector<std::string> lines;
  for (auto &c : children) {
    for (std::string l = read_line(c.from_child); !l.empty(); l = read_line(c.from_child)) {
      lines.push_back(l);
    }
    std::fclose(c.from_child);
    ::close(c.to_child);
    int status = 0;
    REQUIRE(::waitpid(c.pid, &status, 0) == c.pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
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
