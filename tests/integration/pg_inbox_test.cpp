// lakh::pg::inbox against the real PostgreSQL of scripts/services: a message delivered many
// times, also concurrently, is processed once; a rolled-back processing is redone.
#include <lakh/pg/inbox.hpp>

#include <support/env.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

struct fixture {
  lakh::pg::pool pool{lakh::test::database_url(), 12};
  lakh::pg::inbox box{pool, {"inbox_" + std::to_string(::getpid())}};
  std::string effects = "inbox_effects_" + std::to_string(::getpid());
  fixture() {
    box.create_schema();
    box.create_schema(); // idempotent
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    tx.exec("CREATE TABLE " + effects + " (message_id text NOT NULL)");
  }
  ~fixture() {
    try {
      auto c = pool.acquire();
      pqxx::nontransaction tx(*c);
      tx.exec("DROP TABLE IF EXISTS " + box.table() + ", " + effects);
    } catch (...) {
    }
  }
  fixture(const fixture &) = delete;
  fixture &operator=(const fixture &) = delete;

  // One delivery: the effect and the inbox row commit together. Returns whether it processed.
  bool deliver(const std::string &id, bool fail = false) {
    auto c = pool.acquire();
    pqxx::work w(*c);
    if (!box.first_delivery(w, "billing", id)) {
      w.commit();
      return false;
    }
    lakh::pg::detail::exec(w, "INSERT INTO " + effects + " VALUES ($1)", id);
    if (fail) {
      throw std::runtime_error("processing failed"); // w rolls back: no effect, no id
    }
    w.commit();
    return true;
  }
  long effects_of(const std::string &id) {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    return lakh::pg::detail::exec(tx, "SELECT count(*) FROM " + effects + " WHERE message_id = $1",
                                  id)[0][0]
        .as<long>();
  }
};

} // namespace

TEST_CASE("pg.inbox.redelivery_is_skipped_and_rollback_is_redone") {
  fixture f;
  CHECK(f.deliver("msg-1"));
  CHECK_FALSE(f.deliver("msg-1"));
  CHECK_FALSE(f.deliver("msg-1"));
  CHECK(f.effects_of("msg-1") == 1);
  CHECK_THROWS_AS(f.deliver("msg-2", true), std::runtime_error);
  CHECK(f.effects_of("msg-2") == 0);
  CHECK(f.deliver("msg-2"));
  CHECK(f.effects_of("msg-2") == 1);
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    CHECK(f.box.first_delivery(w, "notification", "msg-1")); // another consumer: its own record
    CHECK_THROWS_AS((void)f.box.first_delivery(w, "", "x"), std::invalid_argument);
    CHECK_THROWS_WITH_AS((void)f.box.first_delivery(w, "c", std::string(256, 'm')),
                         "lakh::pg::inbox::first_delivery: message_id (256 bytes) must be 1..255 "
                         "bytes",
                         std::invalid_argument);
    w.commit();
  }
  CHECK(f.box.purge(std::chrono::hours(1)) == 0);
}

TEST_CASE("pg.inbox.concurrent_deliveries_process_once" * doctest::timeout(60)) {
  fixture f;
  for (int round = 0; round < 5; ++round) {
    const std::string id = "concurrent-" + std::to_string(round);
    std::atomic<int> processed{0};
    std::latch start(8);
    {
      std::vector<std::jthread> ts;
      for (int t = 0; t < 8; ++t) {
        ts.emplace_back([&] {
          start.arrive_and_wait();
          processed += f.deliver(id) ? 1 : 0;
        });
      }
    }
    CHECK(processed.load() == 1);
    CHECK(f.effects_of(id) == 1);
  }
}

TEST_CASE("pg.inbox.batch_form_marks_first_deliveries_per_position") {
  fixture f;
  auto c = f.pool.acquire();
  {
    pqxx::work w(*c);
    CHECK(f.box.first_delivery(w, "batch", "b"));
    w.commit();
  }
  {
    pqxx::work w(*c);
    // "b" was seen before; "a" is new and repeated inside the batch; "c" is new.
    const auto first = f.box.first_deliveries(w, "batch", {"a", "b", "a", "c"});
    CHECK(first == std::vector<bool>{true, false, false, true});
    CHECK(f.box.first_deliveries(w, "batch", {}).empty());
    w.commit();
  }
  {
    pqxx::work w(*c);
    CHECK(f.box.first_deliveries(w, "batch", {"a", "c", "d"}) ==
          std::vector<bool>{false, false, true});
    w.abort(); // "d" rolled back: a later delivery is the first again
  }
  {
    pqxx::work w(*c);
    CHECK(f.box.first_deliveries(w, "batch", {"d", "quote\"back\\slash"}) ==
          std::vector<bool>{true, true});
    CHECK(f.box.first_delivery(w, "batch", "quote\"back\\slash") == false);
    CHECK_THROWS_WITH_AS((void)f.box.first_deliveries(w, "batch", {"ok", ""}),
                         "lakh::pg::inbox::first_deliveries: message_id (0 bytes) must be 1..255 "
                         "bytes",
                         std::invalid_argument);
    w.commit();
  }
}

namespace {

// Waits (up to 10 s) until backend `pid` waits for a lock.
void wait_blocked(lakh::pg::pool &pool, int pid) {
  for (int i = 0; i < 1000; ++i) {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    if (lakh::pg::detail::exec(
            tx, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid)
            .at(0)
            .at(0)
            .as<bool>(false)) {
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("backend " << pid << " did not block within 10 s");
}

} // namespace

TEST_CASE("pg.inbox.overlapping_batches_in_opposite_orders_do_not_deadlock" *
          doctest::timeout(60)) {
  // Batch 1 is {a, x, b} and batch 2 {b, y, a}, as two consumers fetch overlapping
  // redeliveries. Two open transactions hold x and y, so that each batch stops in the middle;
  // inserted in the batches' own orders, batch 1 would then hold a and wait for b while
  // batch 2 holds b and waits for a: a deadlock (40P01) once x and y are released.
  fixture f;
  auto hold = [&](const std::string &id) {
    auto c = f.pool.acquire();
    auto w = std::make_unique<pqxx::work>(*c);
    REQUIRE(f.box.first_delivery(*w, "batch", id));
    return std::pair{std::move(c), std::move(w)};
  };
  auto [cx, hold_x] = hold("x");
  auto [cy, hold_y] = hold("y");
  struct result {
    std::vector<bool> first;
    std::string sqlstate;
  };
  auto consume = [&](std::vector<std::string> ids, int &pid, std::latch &started) {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    pid = c->backendpid();
    started.count_down();
    result r;
    try {
      r.first = f.box.first_deliveries(w, "batch", ids);
      w.commit();
    } catch (const pqxx::deadlock_detected &) { // libpqxx 6 gives rollbacks no sqlstate()
      r.sqlstate = "40P01";
    } catch (const pqxx::sql_error &e) {
      r.sqlstate = e.sqlstate();
    }
    return r;
  };
  int pid1 = 0;
  int pid2 = 0;
  std::latch started1(1);
  std::latch started2(1);
  auto t1 = std::async(std::launch::async, consume, std::vector<std::string>{"a", "x", "b"},
                       std::ref(pid1), std::ref(started1));
  started1.wait();
  wait_blocked(f.pool, pid1);
  auto t2 = std::async(std::launch::async, consume, std::vector<std::string>{"b", "y", "a"},
                       std::ref(pid2), std::ref(started2));
  started2.wait();
  wait_blocked(f.pool, pid2);
  hold_x->abort();
  hold_y->abort();
  const auto r1 = t1.get();
  const auto r2 = t2.get();
  CHECK(r1.sqlstate == "");
  CHECK(r2.sqlstate == "");
  // Whichever committed first processes a and b; both process their own x or y.
  if (r1.sqlstate.empty() && r2.sqlstate.empty()) {
    CHECK(r1.first[1]);
    CHECK(r2.first[1]);
    CHECK(r1.first[0] != r2.first[2]); // a: one of the two
    CHECK(r1.first[2] != r2.first[0]); // b: one of the two
  }
}
