// lakh::pg::outbox and outbox_relay against the real PostgreSQL of scripts/services. The
// broker is a recording publisher (a test double of the BROKER; the database is real).
#include <lakh/pg/outbox_relay.hpp>

#include <support/env.hpp>
#include <support/outbox.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

struct recording_publisher : lakh::pg::outbox_publisher {
  std::mutex mu;
  std::vector<lakh::pg::outbox_event> seen; // acknowledged, in publish order
  std::size_t ack_at_most = static_cast<std::size_t>(-1);
  std::set<std::int64_t> fail_ids; // reported failed (and withheld after, per key)
  bool throw_next = false;
  int calls = 0;

  void publish(std::span<const lakh::pg::outbox_event> events,
               std::span<lakh::pg::publish_outcome> outcomes) override {
    std::lock_guard g(mu);
    ++calls;
    if (throw_next) {
      throw_next = false;
      throw std::runtime_error("broker down");
    }
    std::set<std::string> failed_keys;
    for (std::size_t i = 0; i < events.size() && i < ack_at_most; ++i) {
      if (failed_keys.count(events[i].key) != 0) {
        outcomes[i] = lakh::pg::publish_outcome::not_sent;
      } else if (fail_ids.count(events[i].id) != 0) {
        failed_keys.insert(events[i].key);
      } else {
        outcomes[i] = lakh::pg::publish_outcome::acked;
        seen.push_back(events[i]);
      }
    }
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
  /// Waits until the relay may publish `n` events (see support/outbox.hpp).
  void wait_eligible(std::size_t n) { lakh::test::wait_eligible(pool, box, n); }
};

} // namespace

TEST_CASE("pg.outbox.events_exist_only_if_the_transaction_committed") {
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, {100});
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    (void)f.box.enqueue(w, "invoice.issued", "t1", "rolled back");
    w.abort();
  }
  const auto id = f.add("t1", "{\"invoice\":1}");
  f.wait_eligible(1);
  CHECK(relay.run_once().published == 1);
  REQUIRE(pub.seen.size() == 1);
  CHECK(pub.seen[0].id == id);
  CHECK(pub.seen[0].topic == "invoice.issued");
  CHECK(pub.seen[0].key == "t1");
  CHECK(pub.seen[0].payload == "{\"invoice\":1}");
  CHECK(relay.run_once().published == 0); // marked published: never again
  CHECK(f.box.pending() == 0);
}

TEST_CASE("pg.outbox.each_event_has_a_random_identity_also_in_an_older_table") {
  fixture f;
  { // the table as an older lakh created it, holding two events
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    w.exec("DROP TABLE " + f.box.table());
    w.exec("CREATE TABLE " + f.box.table() +
           " (id bigserial PRIMARY KEY, topic text NOT NULL, key text NOT NULL, "
           "payload text NOT NULL, headers text[], "
           "xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
           "created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz)");
    w.exec("INSERT INTO " + f.box.table() +
           " (topic, key, payload) VALUES ('t', 'k', 'old1'), ('t', 'k', 'old2')");
    w.commit();
  }
  f.box.create_schema();
  f.box.create_schema(); // idempotent
  (void)f.add("k", "new");
  f.wait_eligible(3);
  auto c = f.pool.acquire();
  pqxx::work w(*c);
  const auto events = f.box.ready(w, 10);
  REQUIRE(events.size() == 3);
  std::set<std::string> uuids;
  for (const auto &e : events) {
    CHECK(e.uuid.size() == 36); // 8-4-4-4-12 hex digits
    uuids.insert(e.uuid);
  }
  CHECK(uuids.size() == 3);
  CHECK(f.box.ready(w, 10)[0].uuid == events[0].uuid); // fixed, not drawn per read
}

TEST_CASE("pg.outbox.out_of_order_commit_is_held_back_not_skipped" * doctest::timeout(60)) {
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, {100});
  auto ca = f.pool.acquire();
  pqxx::work a(*ca);
  const auto id_a = f.box.enqueue(a, "invoice.issued", "k", "first"); // lower id, still open
  const auto id_b = f.add("k", "second");                             // higher id, committed
  REQUIRE(id_a < id_b);
  CHECK(relay.run_once().published == 0); // b waits for a: publishing it now would break key order
  a.commit();
  f.wait_eligible(2);
  CHECK(relay.run_once().published == 2);
  CHECK(pub.ids() == std::vector<std::int64_t>{id_a, id_b});
}

TEST_CASE("pg.outbox.an_eligible_row_never_jumps_an_earlier_visible_one" * doctest::timeout(60)) {
  // Ids and transaction ids in opposite orders: B takes its xid first, T0 next (and stays
  // open), A inserts id a and commits, then B inserts id b > a and commits. Row b's xid is
  // below the snapshot's xmin (T0) and row a's is not: b alone would be eligible, but it
  // must wait for a.
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, {100});
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
  CHECK(relay.run_once().published == 0);
  t0.commit();
  f.wait_eligible(2);
  CHECK(relay.run_once().published == 2);
  CHECK(pub.ids() == std::vector<std::int64_t>{id_a, id_b});
}

TEST_CASE("pg.outbox.concurrent_producers_every_event_once_in_key_order" * doctest::timeout(120)) {
  bool overlap = true;
  SUBCASE("overlapped rounds") {
    overlap = true;
  }
  SUBCASE("sequential rounds") {
    overlap = false;
  }
  CAPTURE(overlap);
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, {64, 1ms, 10ms, 5000ms, overlap});
  std::stop_source stop;
  std::jthread relay_thread([&] { relay.run(stop.get_token()); });
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
          lakh::pg::detail::exec(w, "SELECT pg_advisory_xact_lock(hashtext($1))", key);
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
  lakh::pg::outbox_relay relay(f.box, pub, {100});
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(f.add("k", std::to_string(i)));
  }
  f.wait_eligible(5);
  pub.throw_next = true;
  CHECK(relay.run_once().published == 0);
  CHECK(f.box.pending() == 5);
  pub.ack_at_most = 3;
  CHECK(relay.run_once().published == 3);
  CHECK(f.box.pending() == 2);
  pub.ack_at_most = static_cast<std::size_t>(-1);
  CHECK(relay.run_once().published == 2);
  CHECK(pub.ids() == ids);
}

TEST_CASE("pg.outbox.one_relay_at_a_time") {
  fixture f;
  recording_publisher pub1;
  recording_publisher pub2;
  (void)f.add("k", "x");
  f.wait_eligible(1);
  auto first = std::make_unique<lakh::pg::outbox_relay>(f.box, pub1);
  lakh::pg::outbox_relay second(f.box, pub2);
  CHECK(first->run_once().published == 1);
  (void)f.add("k", "y");
  f.wait_eligible(1);
  const auto standby = second.run_once(); // the first holds the relay lock
  CHECK_FALSE(standby.active);
  CHECK(standby.published == 0);
  CHECK(pub2.seen.empty());
  first.reset(); // its connection closes: the lock is released
  CHECK(second.run_once().published == 1);
  CHECK(pub2.seen.size() == 1);
}

TEST_CASE("pg.outbox.two_running_relays_never_race_and_hand_over" * doctest::timeout(120)) {
  // Two relays run at once (as two processes would: each its own session); producers keep
  // committing. Only one is active at a time; the active one is stopped halfway and the
  // standby takes over. Together they publish every event exactly once, in per-key order.
  for (int producers : {1, 3}) {
    CAPTURE(producers);
    fixture f;
    recording_publisher pub1;
    recording_publisher pub2;
    const bool overlap = producers > 1; // both round kinds
    lakh::pg::outbox_relay r1(f.box, pub1, {16, 1ms, 10ms, 5000ms, overlap});
    lakh::pg::outbox_relay r2(f.box, pub2, {16, 1ms, 10ms, 5000ms, !overlap});
    std::stop_source stop1;
    std::stop_source stop2;
    std::jthread t1([&] { r1.run(stop1.get_token()); });
    std::this_thread::sleep_for(50ms); // r1 takes the lock first
    std::jthread t2([&] { r2.run(stop2.get_token()); });
    constexpr int per_producer = 200;
    const auto produce = [&](int from, int to) {
      std::vector<std::jthread> ts;
      for (int p = 0; p < producers; ++p) {
        ts.emplace_back([&, p] {
          for (int i = from; i < to; ++i) {
            auto c = f.pool.acquire();
            pqxx::work w(*c);
            const std::string key = "key-" + std::to_string((p + i) % 5);
            lakh::pg::detail::exec(w, "SELECT pg_advisory_xact_lock(hashtext($1))", key);
            (void)f.box.enqueue(w, "t", key, std::to_string(p) + ":" + std::to_string(i));
            w.commit();
          }
        });
      }
    };
    produce(0, per_producer / 2);
    // The relay publishes only below the cluster's snapshot xmin, which another test's open
    // transaction may hold back for a while (ctest -j): hand over once r1 has published.
    const auto until = std::chrono::steady_clock::now() + 60s;
    while (r1.metrics().published.value() == 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(5ms);
    }
    {
      std::jthread second_half([&] { produce(per_producer / 2, per_producer); });
      stop1.request_stop(); // hand over mid-stream, while producers commit
    }
    t1.join();
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (f.box.pending() > 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    stop2.request_stop();
    t2.join();
    CHECK(f.box.pending() == 0);
    CHECK(r1.metrics().published.value() > 0);
    CHECK(r2.metrics().published.value() > 0); // the standby took over
    // r1 published strictly before r2 took over: their logs concatenated are the order.
    std::vector<lakh::pg::outbox_event> all = pub1.seen;
    all.insert(all.end(), pub2.seen.begin(), pub2.seen.end());
    REQUIRE(all.size() == static_cast<std::size_t>(producers * per_producer));
    std::set<std::int64_t> ids;
    std::map<std::string, std::int64_t> last;
    bool in_order = true;
    for (const auto &e : all) {
      ids.insert(e.id);
      in_order = in_order && (last.count(e.key) == 0 || last[e.key] < e.id);
      last[e.key] = e.id;
    }
    CHECK(ids.size() == all.size()); // no event twice
    CHECK(in_order);
  }
}

TEST_CASE("pg.outbox.failed_event_withholds_later_events_of_its_key_only") {
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, {100});
  const auto a1 = f.add("a", "a1");
  const auto b1 = f.add("b", "b1");
  const auto a2 = f.add("a", "a2");
  const auto b2 = f.add("b", "b2");
  pub.fail_ids = {a1};
  f.wait_eligible(4);
  const auto r = relay.run_once();
  CHECK(r.ready == 4);
  CHECK(r.published == 2); // b1, b2
  CHECK(r.failed == 2);    // a1 failed, a2 withheld
  CHECK(relay.metrics().failed.value() == 1);
  CHECK(pub.ids() == std::vector<std::int64_t>{b1, b2});
  pub.fail_ids.clear();
  CHECK(relay.run_once().published == 2);
  CHECK(pub.ids() == std::vector<std::int64_t>{b1, b2, a1, a2}); // a1 before a2
  CHECK(f.box.pending() == 0);
  CHECK(relay.metrics().published.value() == 4);
}

TEST_CASE("pg.outbox.relay_marks_only_per_key_acked_prefixes") {
  // A publisher that breaks the contract (acks a2 after failing a1) cannot make the relay
  // mark a2: it is published again after a1.
  struct sloppy : lakh::pg::outbox_publisher {
    std::int64_t fail = 0;
    void publish(std::span<const lakh::pg::outbox_event> events,
                 std::span<lakh::pg::publish_outcome> outcomes) override {
      for (std::size_t i = 0; i < events.size(); ++i) {
        outcomes[i] = events[i].id == fail ? lakh::pg::publish_outcome::failed
                                           : lakh::pg::publish_outcome::acked;
      }
    }
  } pub;
  fixture f;
  lakh::pg::outbox_relay relay(f.box, pub, {100});
  pub.fail = f.add("a", "a1");
  (void)f.add("a", "a2");
  (void)f.add("b", "b1");
  f.wait_eligible(3);
  const auto r = relay.run_once();
  CHECK(r.published == 1); // b1 only
  CHECK(f.box.pending() == 2);
}

TEST_CASE("pg.outbox.headers_round_trip_and_delete_on_publish") {
  lakh::pg::pool pool{lakh::test::database_url(), 2};
  const std::string schema = "outbox_s" + std::to_string(::getpid());
  lakh::pg::outbox box(pool, {schema + ".events", true});
  box.create_schema();
  box.create_schema();
  recording_publisher pub;
  lakh::pg::outbox_relay relay(box, pub, {10});
  const std::vector<lakh::pg::outbox_header> headers{
      {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
      {"X-Quote", "a \"quoted\", {braced} \\ value"},
      {"X-Empty", ""}};
  {
    auto c = pool.acquire();
    pqxx::work w(*c);
    (void)box.enqueue(w, "t.h", "k", "with headers", headers);
    (void)box.enqueue(w, "t.h", "k", "without");
    w.commit();
  }
  lakh::test::wait_eligible(pool, box, 2);
  CHECK(relay.run_once().published == 2);
  REQUIRE(pub.seen.size() == 2);
  CHECK(pub.seen[0].headers == headers);
  CHECK(pub.seen[1].headers.empty());
  CHECK(box.pending() == 0);
  auto c = pool.acquire();
  pqxx::nontransaction tx(*c);
  CHECK(tx.exec("SELECT count(*) FROM " + box.table())[0][0].as<int>() == 0); // deleted
  tx.exec("DROP SCHEMA " + schema + " CASCADE");
}

TEST_CASE("pg.outbox.run_backs_off_on_failures_and_stops_on_request" * doctest::timeout(60)) {
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, {100, 1ms, 20ms, 40ms});
  const auto id = f.add("k", "x");
  pub.fail_ids = {id};
  f.wait_eligible(1); // else an open transaction of another test eats the 300 ms below
  std::stop_source stop;
  std::jthread t([&] { relay.run(stop.get_token()); });
  std::this_thread::sleep_for(300ms);
  const int calls_failing = [&] {
    std::lock_guard g(pub.mu);
    return pub.calls;
  }();
  // Backoff: at most 300/1 calls without it; with it (uniform in [0, 20..40 ms]) far fewer.
  CHECK(calls_failing >= 2);
  CHECK(calls_failing < 100);
  {
    std::lock_guard g(pub.mu);
    pub.fail_ids.clear();
  }
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (relay.metrics().published.value() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  stop.request_stop();
  t.join();
  CHECK(relay.metrics().published.value() == 1);
  CHECK(relay.metrics().failed.value() >= 2);
  CHECK(pub.ids() == std::vector<std::int64_t>{id});
  CHECK_FALSE(relay.active()); // run() gave the lock up
}

TEST_CASE("pg.outbox.run_backs_off_per_key_and_other_keys_flow" * doctest::timeout(120)) {
  // Key a's event fails on every publish. Its pause grows (up to 4 s), but it is a's alone:
  // each event of key b goes out within the idle pause, not after a's backoff.
  fixture f;
  recording_publisher pub;
  pub.fail_ids = {f.add("a", "failing")};
  lakh::pg::outbox_relay_options opts;
  opts.idle = 5ms;
  opts.backoff_base = 400ms;
  opts.backoff_cap = 4s;
  lakh::pg::outbox_relay_thread relay(f.box, pub, opts);
  std::this_thread::sleep_for(1500ms); // a has failed a few times
  for (int i = 0; i < 5; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const auto id = f.add("b", "b" + std::to_string(i));
    auto published = [&] {
      const auto ids = pub.ids();
      return std::find(ids.begin(), ids.end(), id) != ids.end();
    };
    while (!published() && std::chrono::steady_clock::now() - start < 20s) {
      std::this_thread::sleep_for(5ms);
    }
    CHECK(std::chrono::steady_clock::now() - start < 1500ms);
  }
  CHECK(relay.metrics().failed.value() >= 2);
  relay.stop();
  CHECK(f.box.pending() == 1);
}

TEST_CASE("pg.outbox.relay_thread_runs_until_stopped_then_hands_over" * doctest::timeout(60)) {
  fixture f;
  recording_publisher pub1;
  recording_publisher pub2;
  const std::vector<std::int64_t> ids{f.add("a", "1"), f.add("b", "2"), f.add("a", "3")};
  lakh::pg::outbox_relay_thread running(f.box, pub1, {100, 1ms});
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (running.metrics().published.value() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  CHECK(running.metrics().published.value() == 3);
  CHECK(pub1.ids() == ids);
  running.stop();
  running.stop(); // idempotent
  // Stopped: it publishes nothing more, and it gave the relay lock up.
  (void)f.add("a", "4");
  f.wait_eligible(1);
  auto other = std::make_unique<lakh::pg::outbox_relay>(f.box, pub2);
  CHECK(other->run_once().published == 1);
  CHECK(pub1.ids() == ids);
  CHECK(pub2.seen.size() == 1);
  other.reset();
  // The destructor stops it too, and gives up the lock it held.
  {
    lakh::pg::outbox_relay_thread scoped(f.box, pub1, {100, 1ms});
    while (scoped.metrics().rounds.value() == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    REQUIRE(scoped.metrics().rounds.value() > 0); // it held the relay lock
  }
  (void)f.add("b", "5");
  f.wait_eligible(1);
  lakh::pg::outbox_relay last(f.box, pub2);
  CHECK(last.run_once().published == 1);
  CHECK(pub2.seen.size() == 2);
  CHECK_THROWS_AS(lakh::pg::outbox_relay_thread(f.box, pub1, {0}), std::invalid_argument);
}

TEST_CASE("pg.outbox.lag_metric_reports_a_held_back_event") {
  fixture f;
  recording_publisher pub;
  lakh::pg::outbox_relay relay(f.box, pub, {100});
  auto ca = f.pool.acquire();
  pqxx::work a(*ca);
  (void)f.box.enqueue(a, "t", "k", "open");
  const auto id = f.add("k", "waits");
  (void)id;
  std::this_thread::sleep_for(50ms);
  // Row `id` is visible but not eligible (a's lower id may still commit).
  const auto r = relay.run_once();
  CHECK(r.active);
  CHECK(r.ready == 0);
  CHECK(relay.metrics().lag_ms.value() >= 40);
  a.abort(); // the lower id never commits: the held-back row goes out alone
  f.wait_eligible(1);
  CHECK(relay.run_once().published == 1);
  CHECK(pub.ids() == std::vector<std::int64_t>{id});
}

TEST_CASE("pg.outbox.lag_grows_while_the_relay_is_stuck" * doctest::timeout(60)) {
  // The publisher hangs (as on a half-open connection): the relay makes no progress, and
  // the lag a monitor reads must keep growing instead of freezing at its last value.
  fixture f;
  struct stuck_publisher : lakh::pg::outbox_publisher {
    std::atomic<bool> entered{false};
    std::atomic<bool> release{false};
    void publish(std::span<const lakh::pg::outbox_event>,
                 std::span<lakh::pg::publish_outcome> outcomes) override {
      entered = true;
      while (!release) {
        std::this_thread::sleep_for(1ms);
      }
      std::fill(outcomes.begin(), outcomes.end(), lakh::pg::publish_outcome::acked);
    }
  } pub;
  (void)f.add("k", "stuck");
  lakh::pg::outbox_relay_thread relay(f.box, pub);
  while (!pub.entered) {
    std::this_thread::sleep_for(1ms);
  }
  const auto age1 = f.box.oldest_pending_age();
  const auto since1 = relay.metrics().since_last_round();
  std::this_thread::sleep_for(400ms);
  CHECK(f.box.oldest_pending_age() >= age1 + 300ms);
  CHECK(relay.metrics().since_last_round() >= since1 + 300ms);
  CHECK(relay.metrics().since_last_round() >= 300ms);
  pub.release = true;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (f.box.pending() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  CHECK(f.box.oldest_pending_age() == 0ms); // nothing waits
  std::this_thread::sleep_for(200ms);       // idle rounds go on
  CHECK(relay.metrics().since_last_round() < 2s);
  relay.stop();
}

TEST_CASE("pg.outbox.bad_input") {
  fixture f;
  recording_publisher pub;
  for (const char *bad : {"1bad", "Outbox", "a.b.c", "x;drop", "", "a.", ".a"}) {
    CHECK_THROWS_AS(lakh::pg::outbox(f.pool, {bad}), std::invalid_argument);
  }
  CHECK_THROWS_WITH_AS(lakh::pg::outbox(f.pool, {"1bad"}),
                       "lakh::pg::outbox: table name \"1bad\" must be a lower-case identifier "
                       "([a-z_][a-z0-9_]*, at most 63 bytes), optionally schema-qualified",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(lakh::pg::outbox_relay(f.box, pub, {0}),
                       "lakh::pg::outbox_relay: batch (0) must be at least 1",
                       std::invalid_argument);
  CHECK_THROWS_AS(lakh::pg::outbox_relay(f.box, pub, {-5}), std::invalid_argument);
  CHECK_THROWS_AS(lakh::pg::outbox_relay(f.box, pub, {10, -1ms}), std::invalid_argument);
  CHECK_THROWS_AS(lakh::pg::outbox_relay(f.box, pub, {10, 1ms, 0ms}), std::invalid_argument);
  auto c = f.pool.acquire();
  pqxx::work w(*c);
  CHECK_THROWS_WITH_AS((void)f.box.enqueue(w, "", "k", "p"),
                       "lakh::pg::outbox::enqueue: topic (0 bytes) must be 1..255 bytes",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)f.box.enqueue(w, "t", std::string(256, 'k'), "p"),
                       "lakh::pg::outbox::enqueue: key (256 bytes) must be at most 255 bytes",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)f.box.enqueue(w, std::string(256, 't'), "k", "p"), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)f.box.enqueue(w, "t", "k", std::string("a\0b", 3)),
                       "lakh::pg::outbox::enqueue: payload contains a NUL byte",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)f.box.enqueue(w, "t", std::string("k\0", 2), "p"), std::invalid_argument);
  const std::vector<lakh::pg::outbox_header> bad_name{{"has space", "v"}};
  CHECK_THROWS_WITH_AS((void)f.box.enqueue(w, "t", "k", "p", bad_name),
                       "lakh::pg::outbox::enqueue: header name \"has space\" must be 1..255 "
                       "printable ASCII bytes without ':' or spaces",
                       std::invalid_argument);
  const std::vector<lakh::pg::outbox_header> bad_value{{"X-A", "line\r\nbreak"}};
  CHECK_THROWS_AS((void)f.box.enqueue(w, "t", "k", "p", bad_value), std::invalid_argument);
  const std::vector<lakh::pg::outbox_header> too_many(65, {"X-A", "v"});
  CHECK_THROWS_AS((void)f.box.enqueue(w, "t", "k", "p", too_many), std::invalid_argument);
  CHECK_THROWS_AS((void)f.box.ready(w, 0), std::invalid_argument);
  CHECK_THROWS_WITH_AS((void)f.box.enqueue(w, "t", "k", std::string((1 << 20) + 1, 'p')),
                       "lakh::pg::outbox::enqueue: payload (1048577 bytes) exceeds max_payload "
                       "(1048576 bytes)",
                       std::invalid_argument);
  lakh::pg::outbox small(f.pool, {f.box.table(), false, 10});
  CHECK_THROWS_AS((void)small.enqueue(w, "t", "k", "01234567890"), std::invalid_argument);
  lakh::pg::outbox_relay_options no_park;
  no_park.park_after = 0;
  CHECK_THROWS_WITH_AS(lakh::pg::outbox_relay(f.box, pub, no_park),
                       "lakh::pg::outbox_relay: park_after (0) must be at least 1",
                       std::invalid_argument);
  CHECK_THROWS_AS((void)f.box.parked(0), std::invalid_argument);
  w.commit();
  CHECK(f.box.pending() == 0); // nothing half-written
  CHECK(f.box.parked().empty());
  CHECK(f.box.retry_parked({}) == 0);
}
