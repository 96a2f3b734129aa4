// lakh::pg::outbox and outbox_relay against the real PostgreSQL of scripts/services. The
// broker is a recording publisher (a test double of the BROKER; the database is real).
#include <lakh/pg/outbox.hpp>

#include <support/env.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

struct recording_publisher : lakh::pg::outbox_publisher {
  std::mutex mu;
  std::vector<lakh::pg::outbox_event> seen;
  std::size_t ack_at_most = static_cast<std::size_t>(-1);
  bool throw_next = false;

  std::size_t publish(std::span<const lakh::pg::outbox_event> events) override {
    std::lock_guard g(mu);
    if (throw_next) {
      throw_next = false;
      throw std::runtime_error("broker down");
    }
    const auto n = std::min(events.size(), ack_at_most);
    seen.insert(seen.end(), events.begin(), events.begin() + static_cast<std::ptrdiff_t>(n));
    return n;
  }
  std::vector<std::int64_t> ids() {
    std::lock_guard g(mu);
    std::vector<std::int64_t> out;
    for (const auto &e : seen) {
      out.push_back(e.id);
    }
    return out;
  }
};

struct fixture {
  lakh::pg::pool pool{lakh::test::database_url(), 8};
  lakh::pg::outbox box;
  fixture()
      : box(pool, {"outbox_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++)}) {
    box.create_schema();
    box.create_schema(); // idempotent
  }
  ~fixture() {
    try {
      pqxx::connection c(lakh::test::database_url());
      pqxx::nontransaction tx(c);
      tx.exec("DROP TABLE IF EXISTS " + box.table());
    } catch (...) {
    }
  }
  fixture(const fixture &) = delete;
  fixture &operator=(const fixture &) = delete;
  static std::atomic<int> &counter() {
    static std::atomic<int> n{0};
    return n;
  }
  std::int64_t add(const std::string &key, const std::string &payload) {
    auto c = pool.acquire();
    pqxx::work w(*c);
    auto id = box.enqueue(w, "invoice.issued", key, payload);
    w.commit();
    return id;
  }
};

} // namespace

TEST_CASE("pg.outbox.events_exist_only_if_the_transaction_committed") {
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, 100);
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    (void)f.box.enqueue(w, "invoice.issued", "t1", "rolled back");
    w.abort();
  }
  const auto id = f.add("t1", "{\"invoice\":1}");
  CHECK(relay.run_once() == 1);
  REQUIRE(pub.seen.size() == 1);
  CHECK(pub.seen[0].id == id);
  CHECK(pub.seen[0].topic == "invoice.issued");
  CHECK(pub.seen[0].key == "t1");
  CHECK(pub.seen[0].payload == "{\"invoice\":1}");
  CHECK(relay.run_once() == 0); // marked published: never again
  CHECK(f.box.pending() == 0);
}

TEST_CASE("pg.outbox.out_of_order_commit_is_held_back_not_skipped" * doctest::timeout(60)) {
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, 100);
  auto ca = f.pool.acquire();
  pqxx::work a(*ca);
  const auto id_a = f.box.enqueue(a, "invoice.issued", "k", "first"); // lower id, still open
  const auto id_b = f.add("k", "second");                             // higher id, committed
  REQUIRE(id_a < id_b);
  CHECK(relay.run_once() == 0); // b waits for a: publishing it now would break key order
  a.commit();
  CHECK(relay.run_once() == 2);
  CHECK(pub.ids() == std::vector<std::int64_t>{id_a, id_b});
}

TEST_CASE("pg.outbox.an_eligible_row_never_jumps_an_earlier_visible_one" * doctest::timeout(60)) {
  // Ids and transaction ids in opposite orders: B takes its xid first, T0 next (and stays
  // open), A inserts id a and commits, then B inserts id b > a and commits. Row b's xid is
  // below the snapshot's xmin (T0) and row a's is not: b alone would be eligible, but it
  // must wait for a.
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, 100);
  auto cb = f.pool.acquire();
  pqxx::work b(*cb);
  b.exec("SELECT pg_current_xact_id()");
  auto c0 = f.pool.acquire();
  pqxx::work t0(*c0);
  t0.exec("SELECT pg_current_xact_id()");
  const auto id_a = f.add("k", "a");
  const auto id_b = f.box.enqueue(b, "invoice.issued", "k", "b");
  b.commit();
  REQUIRE(id_a < id_b);
  CHECK(relay.run_once() == 0);
  t0.commit();
  CHECK(relay.run_once() == 2);
  CHECK(pub.ids() == std::vector<std::int64_t>{id_a, id_b});
}

TEST_CASE("pg.outbox.concurrent_producers_every_event_once_in_key_order" * doctest::timeout(120)) {
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, 64);
  std::stop_source stop;
  std::jthread relay_thread([&] { relay.run(stop.get_token(), 1ms); });
  constexpr int producers = 4;
  constexpr int per_producer = 300;
  std::vector<std::int64_t> committed;
  std::mutex committed_mu;
  {
    std::vector<std::jthread> ts;
    for (int p = 0; p < producers; ++p) {
      ts.emplace_back([&, p] {
        std::mt19937 rng(static_cast<unsigned>(p));
        for (int i = 0; i < per_producer; ++i) {
          auto c = f.pool.acquire();
          pqxx::work w(*c);
          // Writers of one key are serialized, as events whose order matters must be.
          const std::string key = "key-" + std::to_string(rng() % 7);
          w.exec_params("SELECT pg_advisory_xact_lock(hashtext($1))", key);
          const auto id =
              f.box.enqueue(w, "usage", key, std::to_string(p) + ":" + std::to_string(i));
          if (rng() % 4 == 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000)); // commit late
          }
          w.commit();
          std::lock_guard g(committed_mu);
          committed.push_back(id);
        }
      });
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (pub.ids().size() < committed.size() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  stop.request_stop();
  relay_thread.join();
  const auto ids = pub.ids();
  REQUIRE(ids.size() == committed.size());
  std::map<std::int64_t, int> times;
  for (auto id : ids) {
    ++times[id];
  }
  for (auto id : committed) {
    CHECK(times[id] == 1);
  }
  // Per key, in id order (= commit order, since the writers of a key are serialized).
  std::map<std::string, std::int64_t> last;
  bool in_order = true;
  for (const auto &e : pub.seen) {
    in_order = in_order && (last.count(e.key) == 0 || last[e.key] < e.id);
    last[e.key] = e.id;
  }
  CHECK(in_order);
  CHECK(f.box.pending() == 0);
}

TEST_CASE("pg.outbox.unacknowledged_events_are_retried") {
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, 100);
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(f.add("k", std::to_string(i)));
  }
  pub.throw_next = true;
  CHECK(relay.run_once() == 0);
  CHECK(f.box.pending() == 5);
  pub.ack_at_most = 3;
  CHECK(relay.run_once() == 3);
  CHECK(f.box.pending() == 2);
  pub.ack_at_most = static_cast<std::size_t>(-1);
  CHECK(relay.run_once() == 2);
  CHECK(pub.ids() == ids);
}

TEST_CASE("pg.outbox.one_relay_at_a_time") {
  fixture f;
  recording_publisher pub1;
  recording_publisher pub2;
  (void)f.add("k", "x");
  auto first = std::make_unique<lakh::pg::outbox_relay>(f.box, pub1, 100);
  lakh::pg::outbox_relay second(f.box, pub2, 100);
  CHECK(first->run_once() == 1);
  (void)f.add("k", "y");
  CHECK(second.run_once() == 0); // the first holds the relay lock
  CHECK(pub2.seen.empty());
  first.reset(); // its connection closes: the lock is released
  CHECK(second.run_once() == 1);
  CHECK(pub2.seen.size() == 1);
}

TEST_CASE("pg.outbox.bad_input") {
  fixture f;
  recording_publisher pub;
  CHECK_THROWS_WITH_AS(lakh::pg::outbox(f.pool, {"1bad"}),
                       "lakh::pg::outbox: table name \"1bad\" must be a lower-case identifier "
                       "([a-z_][a-z0-9_]*, at most 63 bytes), optionally schema-qualified",
                       std::invalid_argument);
  CHECK_THROWS_AS(lakh::pg::outbox_relay(f.box, pub, 0), std::invalid_argument);
  auto c = f.pool.acquire();
  pqxx::work w(*c);
  CHECK_THROWS_WITH_AS((void)f.box.enqueue(w, "", "k", "p"),
                       "lakh::pg::outbox::enqueue: topic (0 bytes) must be 1..255 bytes",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)f.box.enqueue(w, "t", std::string(256, 'k'), "p"), std::invalid_argument);
  CHECK_THROWS_AS((void)f.box.enqueue(w, "t", "k", std::string("a\0b", 3)), std::invalid_argument);
  CHECK_THROWS_AS((void)f.box.ready(w, 0), std::invalid_argument);
  w.commit();
  CHECK(f.box.pending() == 0);
}
