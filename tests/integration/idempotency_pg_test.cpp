// lakh::idempotency_guard over lakh::pg::idempotency_store against a real PostgreSQL
// (DATABASE_URL from scripts/services): the shared suite, where the "business write" is a row
// in a business table written in the guard's transaction, plus PostgreSQL-specific cases.
#include <lakh/pg/idempotency_store.hpp>

#include <support/env.hpp>
#include <support/idempotency_suite.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;

std::string unique(const std::string &prefix) {
  static std::atomic<int> n{0};
  return prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(n.fetch_add(1));
}

void exec(const std::string &sql) {
  pqxx::connection c(lakh::test::database_url());
  pqxx::nontransaction tx(c);
  tx.exec(sql);
}

long scalar(const std::string &sql) {
  pqxx::connection c(lakh::test::database_url());
  pqxx::nontransaction tx(c);
  return tx.exec(sql)[0][0].as<long>();
}

struct pg_fixture {
  using store_type = lakh::pg::idempotency_store;
  // The business write of a throwing operation is rolled back with its transaction.
  static constexpr long throwing_op_persists = 0;

  pg_fixture()
      : table_(unique("idem_keys")), business_(unique("idem_business")),
        pool_(lakh::test::database_url(), 16), store_(pool_, {table_}) {
    store_.create_schema();
    store_.create_schema(); // idempotent
    exec("CREATE TABLE " + business_ + " (id bigserial PRIMARY KEY, note text NOT NULL)");
  }
  ~pg_fixture() {
    try {
      pool_.close();
      exec("DROP TABLE IF EXISTS " + table_ + ", " + business_);
    } catch (...) {
    }
  }
  pg_fixture(const pg_fixture &) = delete;
  pg_fixture &operator=(const pg_fixture &) = delete;

  store_type &store() { return store_; }

  auto op(int status, std::string body, std::chrono::milliseconds work = {}) {
    return [this, status, body = std::move(body), work](pqxx::work &w) {
      lakh::pg::detail::exec(w, "INSERT INTO " + business_ + " (note) VALUES ($1)",
                             body.substr(0, 100));
      if (work.count() > 0) {
        std::this_thread::sleep_for(work);
      }
      return lakh::stored_response{status, body};
    };
  }
  auto throwing_op() {
    return [this](pqxx::work &w) -> lakh::stored_response {
      w.exec("INSERT INTO " + business_ + " (note) VALUES ('rolled back')");
      throw std::runtime_error("boom");
    };
  }
  long executions() const { return scalar("SELECT count(*) FROM " + business_); }

  std::string table_;
  std::string business_;
  lakh::pg::pool pool_;
  store_type store_;
};

} // namespace

LAKH_IDEMPOTENCY_SUITE("pg", pg_fixture)

TEST_CASE("idempotency.pg.bad_table_name_rejected") {
  lakh::pg::pool p(lakh::test::database_url(), 1);
  CHECK_THROWS_AS(lakh::pg::idempotency_store(p, {"Bad-Name"}), std::invalid_argument);
  CHECK_THROWS_AS(lakh::pg::idempotency_store(p, {"x; DROP TABLE y"}), std::invalid_argument);
  CHECK_NOTHROW(lakh::pg::idempotency_store(p, {"public.ok_name"}));
}

TEST_CASE("idempotency.pg.result_commits_with_business_writes" * doctest::timeout(30)) {
  pg_fixture fx;
  lakh::idempotency_guard g(fx.store(), lakh::test::idem::fast_options());
  auto fp = lakh::fingerprint("POST", "/x", "");
  // A failing COMMIT-time constraint rolls back both the business row and the response.
  exec("ALTER TABLE " + fx.business_ + " ADD CONSTRAINT no_bad CHECK (note <> 'bad')");
  CHECK_THROWS_AS(g.run("t", "k", fp, fx.op(201, "bad")), pqxx::check_violation);
  CHECK(fx.executions() == 0);
  CHECK(scalar("SELECT count(*) FROM " + fx.table_) == 0); // key released
  auto r = g.run("t", "k", fp, fx.op(201, "good"));
  CHECK(r.outcome == lakh::idempotency_outcome::executed);
  CHECK(scalar("SELECT count(*) FROM " + fx.table_ + " WHERE state = 'done' AND status = 201") ==
        1);
  CHECK(fx.executions() == 1);
}

TEST_CASE("idempotency.pg.long_run_is_not_taken_over_after_lease" * doctest::timeout(30)) {
  // The owner's lease expires while its transaction still runs: the row lock it holds keeps
  // others from taking over, so the operation still runs once and its result is stored.
  pg_fixture fx;
  auto o = lakh::test::idem::fast_options();
  o.lease = 50ms;
  o.wait = 0ms;
  lakh::idempotency_guard g(fx.store(), o);
  auto fp = lakh::fingerprint("POST", "/x", "");
  lakh::idempotency_result slow;
  // The slow operation holds its transaction until the duplicate has been answered (not for
  // a fixed time, which a loaded machine running tests in parallel can outlast).
  std::atomic<bool> started{false}, answered{false};
  auto slow_op = fx.op(201, "slow");
  std::thread t([&] {
    slow = g.run("t", "k", fp, [&](pqxx::work &w) {
      auto r = slow_op(w);
      started = true;
      const auto until = std::chrono::steady_clock::now() + 20s;
      while (!answered && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(5ms);
      }
      return r;
    });
  });
  while (!started) {
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(2 * o.lease); // the owner's lease has expired
  auto dup = g.run("t", "k", fp, fx.op(201, "dup"));
  answered = true;
  t.join();
  CHECK(dup.outcome == lakh::idempotency_outcome::in_progress);
  CHECK(slow.outcome == lakh::idempotency_outcome::executed);
  auto r = g.run("t", "k", fp, fx.op(201, "x"));
  CHECK(r.outcome == lakh::idempotency_outcome::replayed);
  CHECK(r.response.body == "slow");
  CHECK(fx.executions() == 1);
}

TEST_CASE("idempotency.pg.purge_expired") {
  pg_fixture fx;
  auto o = lakh::test::idem::fast_options();
  o.ttl = 20ms;
  lakh::idempotency_guard g(fx.store(), o);
  for (int i = 0; i < 5; ++i) {
    (void)g.run("t", "k" + std::to_string(i), 1, fx.op(200, "x"));
  }
  std::this_thread::sleep_for(100ms);
  CHECK(fx.store().purge_expired() == 5);
  CHECK(scalar("SELECT count(*) FROM " + fx.table_) == 0);
}

// ---- run_in: the key recorded in the caller's transaction (across a service hop) ----------

namespace {

/// The business write of `note`: a parameterised statement, or, in a batched transaction,
/// a statement queued for the commit.
void write_note(pqxx::transaction_base &tx, const std::string &table, const std::string &note) {
  lakh::pg::detail::exec(tx, "INSERT INTO " + table + " (note) VALUES ($1)", note);
}
void write_note(lakh::pg::batched_transaction &tx, const std::string &table,
                const std::string &note) {
  tx.defer("INSERT INTO " + table + " (note) VALUES (" + tx.quote(note) + ")");
}

/// run_in in its own transaction (a Tx: pqxx::work or lakh::pg::batched_transaction) on
/// `fx`'s pool, inserting `note` as the business write.
template <class Tx>
lakh::idempotency_result run_in_tx(pg_fixture &fx, const std::string &key, std::uint64_t fp,
                                   const std::string &note, bool commit = true,
                                   std::chrono::milliseconds work = {}) {
  auto c = fx.pool_.acquire();
  Tx w(*c);
  auto r = fx.store().run_in(w, "t", key, fp, [&](Tx &tx) {
    write_note(tx, fx.business_, note);
    if (work.count() > 0) {
      std::this_thread::sleep_for(work);
    }
    return lakh::stored_response{201, note};
  });
  if (commit) {
    w.commit();
  } else {
    w.abort();
  }
  return r;
}

} // namespace

template <class Tx> void effect_and_record_commit_together() {
  pg_fixture fx;
  const auto fp = lakh::fingerprint("POST", "/v1/users", "{}");
  // Rolled back: neither the effect nor the key remains, so the retry runs.
  CHECK(run_in_tx<Tx>(fx, "k", fp, "first", false).outcome == lakh::idempotency_outcome::executed);
  CHECK(fx.executions() == 0);
  CHECK(scalar("SELECT count(*) FROM " + fx.table_) == 0);
  auto r = run_in_tx<Tx>(fx, "k", fp, "second");
  CHECK(r.outcome == lakh::idempotency_outcome::executed);
  // Committed: a retry replays the original response and does not run.
  auto again = run_in_tx<Tx>(fx, "k", fp, "third");
  CHECK(again.outcome == lakh::idempotency_outcome::replayed);
  CHECK(again.response == lakh::stored_response{201, "second"});
  CHECK(fx.executions() == 1);
  CHECK(run_in_tx<Tx>(fx, "k", fp + 1, "other").outcome == lakh::idempotency_outcome::mismatch);
  CHECK(fx.executions() == 1);
  // The guard's two-step API sees the same record.
  lakh::idempotency_guard g(fx.store(), lakh::test::idem::fast_options());
  CHECK(g.run("t", "k", fp, fx.op(200, "x")).outcome == lakh::idempotency_outcome::replayed);
  CHECK_THROWS_AS(run_in_tx<Tx>(fx, "bad key", fp, "x"), std::invalid_argument);
}

TEST_CASE("idempotency.pg.run_in.effect_and_record_commit_together") {
  effect_and_record_commit_together<pqxx::work>();
}
TEST_CASE("idempotency.pg.run_in_batched.effect_and_record_commit_together") {
  effect_and_record_commit_together<lakh::pg::batched_transaction>();
}

template <class Tx> void concurrent_duplicate_waits_then_replays() {
  pg_fixture fx;
  const auto fp = lakh::fingerprint("POST", "/v1/usage", "[]");
  lakh::idempotency_result first;
  std::thread t([&] { first = run_in_tx<Tx>(fx, "k", fp, "slow", true, 300ms); });
  std::this_thread::sleep_for(100ms); // the first holds the key in its open transaction
  const auto t0 = std::chrono::steady_clock::now();
  auto dup = run_in_tx<Tx>(fx, "k", fp, "dup");
  const auto waited = std::chrono::steady_clock::now() - t0;
  t.join();
  CHECK(first.outcome == lakh::idempotency_outcome::executed);
  CHECK(dup.outcome == lakh::idempotency_outcome::replayed);
  CHECK(dup.response.body == "slow");
  CHECK(waited >= 100ms); // it waited for the first transaction instead of running
  CHECK(fx.executions() == 1);
}

TEST_CASE("idempotency.pg.run_in.concurrent_duplicate_waits_then_replays" * doctest::timeout(30)) {
  concurrent_duplicate_waits_then_replays<pqxx::work>();
}
TEST_CASE("idempotency.pg.run_in_batched.concurrent_duplicate_waits_then_replays" *
          doctest::timeout(30)) {
  concurrent_duplicate_waits_then_replays<lakh::pg::batched_transaction>();
}

template <class Tx> void duplicate_after_a_rollback_runs() {
  pg_fixture fx;
  const auto fp = lakh::fingerprint("POST", "/v1/usage", "[]");
  lakh::idempotency_result first;
  std::thread t([&] { first = run_in_tx<Tx>(fx, "k", fp, "rolled back", false, 300ms); });
  std::this_thread::sleep_for(100ms);
  auto dup = run_in_tx<Tx>(fx, "k", fp, "kept");
  t.join();
  CHECK(dup.outcome == lakh::idempotency_outcome::executed);
  CHECK(fx.executions() == 1);
  CHECK(run_in_tx<Tx>(fx, "k", fp, "x").response.body == "kept");
}

TEST_CASE("idempotency.pg.run_in.duplicate_after_a_rollback_runs" * doctest::timeout(30)) {
  duplicate_after_a_rollback_runs<pqxx::work>();
}
TEST_CASE("idempotency.pg.run_in_batched.duplicate_after_a_rollback_runs" * doctest::timeout(30)) {
  duplicate_after_a_rollback_runs<lakh::pg::batched_transaction>();
}

template <class Tx> void expired_record_is_taken_over() {
  pg_fixture fx;
  const auto fp = lakh::fingerprint("POST", "/x", "");
  {
    auto c = fx.pool_.acquire();
    Tx w(*c);
    lakh::idempotency_options o;
    o.ttl = 1ms;
    (void)fx.store().run_in(
        w, "t", "k", fp,
        [](Tx &) {
          return lakh::stored_response{200, "old"};
        },
        o);
    w.commit();
  }
  std::this_thread::sleep_for(20ms);
  auto r = run_in_tx<Tx>(fx, "k", fp + 1, "new"); // expired: the key is new again, any request
  CHECK(r.outcome == lakh::idempotency_outcome::executed);
  CHECK(run_in_tx<Tx>(fx, "k", fp + 1, "x").response.body == "new");
}

TEST_CASE("idempotency.pg.run_in.expired_record_is_taken_over") {
  expired_record_is_taken_over<pqxx::work>();
}
TEST_CASE("idempotency.pg.run_in_batched.expired_record_is_taken_over") {
  expired_record_is_taken_over<lakh::pg::batched_transaction>();
}
