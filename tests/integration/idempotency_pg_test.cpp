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
      w.exec_params("INSERT INTO " + business_ + " (note) VALUES ($1)", body.substr(0, 100));
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
  std::thread t([&] { slow = g.run("t", "k", fp, fx.op(201, "slow", 400ms)); });
  std::this_thread::sleep_for(200ms);
  auto dup = g.run("t", "k", fp, fx.op(201, "dup"));
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
