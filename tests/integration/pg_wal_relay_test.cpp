// lakh::pg::wal_relay (the wal store of lakh::pg::outbox) against the real PostgreSQL of
// scripts/services (wal_level=logical). The broker is a recording publisher (a test double of
// the BROKER; the database and its replication stream are real).
#include <lakh/pg/wal_relay.hpp>

#include <support/env.hpp>
#include <support/wal_outbox.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using lakh::pg::publish_outcome;

// The broker double: acknowledges every event unless `decide` says otherwise, and keeps a
// key's order as lakh::nats::outbox_publisher does with key_order::strict (after an event of
// a key is not acknowledged, the later ones of that key in the span are not_sent).
struct recording_publisher : lakh::pg::outbox_publisher {
  std::mutex mu;
  std::vector<lakh::pg::outbox_event> seen;     // acknowledged, in publish order
  std::vector<lakh::pg::outbox_event> attempts; // handed to the broker, in order
  std::function<publish_outcome(const lakh::pg::outbox_event &)> decide;

  void publish(std::span<const lakh::pg::outbox_event> events,
               std::span<publish_outcome> outcomes) override {
    std::lock_guard g(mu);
    std::set<std::string> held_back;
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (held_back.count(events[i].key) != 0) {
        outcomes[i] = publish_outcome::not_sent;
        continue;
      }
      attempts.push_back(events[i]);
      outcomes[i] = decide ? decide(events[i]) : publish_outcome::acked;
      if (outcomes[i] == publish_outcome::acked) {
        seen.push_back(events[i]);
      } else {
        held_back.insert(events[i].key);
      }
    }
  }
  [[nodiscard]] std::string error(std::size_t) const override { return "refused by the test"; }

  void set_decide(std::function<publish_outcome(const lakh::pg::outbox_event &)> d) {
    std::lock_guard g(mu);
    decide = std::move(d);
  }
  std::vector<std::string> payloads() {
    std::lock_guard g(mu);
    std::vector<std::string> out;
    for (const auto &e : seen) {
      out.push_back(e.payload);
    }
    return out;
  }
  std::size_t count() {
    std::lock_guard g(mu);
    return seen.size();
  }
  std::vector<lakh::pg::outbox_event> attempts_of(const std::string &payload) {
    std::lock_guard g(mu);
    std::vector<lakh::pg::outbox_event> out;
    std::copy_if(attempts.begin(), attempts.end(), std::back_inserter(out),
                 [&](const auto &e) { return e.payload == payload; });
    return out;
  }
};

// A bigint of an LSN or xid8 query (pg_lsn - '0/0' is numeric).
std::int64_t as_int(pqxx::transaction_base &tx, const std::string &sql) {
  return tx.exec(sql)[0][0].as<std::int64_t>();
}

// An outbox with the wal store in a database of its own, and what the slot shows.
struct wal_fixture : lakh::test::wal_outbox {
  wal_fixture() : wal_outbox("wal_relay") {
    box.create_schema(); // idempotent
  }

  // Enqueues one event in a transaction of its own; returns its id (its WAL position).
  std::int64_t add(const std::string &key, const std::string &payload, bool commit = true) {
    return wal_outbox::add("invoice.issued", key, payload, commit);
  }

  // The slot's confirmed_flush_lsn as a number (0 if the slot is missing).
  std::int64_t slot_confirmed() {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    const auto r = lakh::pg::detail::exec(tx,
                                          "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM "
                                          "pg_replication_slots WHERE slot_name = $1",
                                          box.wal_slot());
    return r.empty() ? 0 : r[0][0].as<std::int64_t>(0);
  }

  // The server's current WAL position as a number.
  std::int64_t current_lsn() {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    return as_int(tx, "SELECT (pg_current_wal_lsn() - '0/0')::bigint");
  }
};

// Polls `pred` (every 20 ms) for up to 30 s; FAILs with `what` if it never holds.
template <class Pred> void wait_for(Pred pred, const char *what) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) {
      FAIL("not within 30 s: " << std::string(what));
    }
    std::this_thread::sleep_for(20ms);
  }
}

// Rounds of `relay` until `pred` holds; FAILs after 30 s.
template <class Pred> void rounds_until(lakh::pg::wal_relay &relay, Pred pred, const char *what) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) {
      FAIL("not within 30 s of relay rounds: " << std::string(what));
    }
    (void)relay.run_once(50ms);
  }
}

// Rounds until `pub` acknowledged at least `n` events.
void relay_until(lakh::pg::wal_relay &relay, recording_publisher &pub, std::size_t n) {
  rounds_until(
      relay, [&] { return pub.count() >= n; }, "the publisher acknowledged n events");
}

// The payloads of `events` whose key is `key`, in order.
std::vector<std::string> of_key(const std::vector<lakh::pg::outbox_event> &events,
                                const std::string &key) {
  std::vector<std::string> out;
  for (const auto &e : events) {
    if (e.key == key) {
      out.push_back(e.payload);
    }
  }
  return out;
}

} // namespace

TEST_CASE("pg.wal_relay.committed_events_in_commit_order_with_identity_and_headers" *
          doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher pub;
  lakh::pg::wal_relay relay(f.box, pub);
  relay.check();
  f.add("k1", "one");
  f.add("k2", "rolled back", false);
  f.add("k1", "two");
  relay_until(relay, pub, 2);
  CHECK(pub.payloads() == std::vector<std::string>{"one", "two"});
  std::lock_guard g(pub.mu);
  REQUIRE(pub.seen.size() == 2);
  CHECK(pub.seen[0].uuid.size() == 36);
  CHECK(pub.seen[0].uuid != pub.seen[1].uuid);
  CHECK(pub.seen[0].topic == "invoice.issued");
  CHECK(pub.seen[0].headers ==
        std::vector<lakh::pg::outbox_header>{{"traceparent", "00-ab-cd-01"}});
  CHECK(relay.metrics().published.value() == 2);
}

TEST_CASE("pg.wal_relay.commit_order_not_begin_or_xid_order" * doctest::timeout(60)) {
  // T1 begins, takes its xid and enqueues first; T2 begins later and commits first; T1 writes
  // once more after T2's commit, then commits. Commit order: T2's events, then T1's.
  wal_fixture f;
  recording_publisher pub;
  lakh::pg::wal_relay relay(f.box, pub);
  auto c1 = f.pool.acquire();
  pqxx::work t1(*c1);
  t1.exec("SET LOCAL synchronous_commit = on");
  const auto xid1 = as_int(t1, "SELECT pg_current_xact_id()::text::bigint");
  const auto id1a = f.box.enqueue(t1, "invoice.issued", "k", "t1-a");
  {
    auto c2 = f.pool.acquire();
    pqxx::work t2(*c2);
    t2.exec("SET LOCAL synchronous_commit = on");
    const auto xid2 = as_int(t2, "SELECT pg_current_xact_id()::text::bigint");
    const auto id2a = f.box.enqueue(t2, "invoice.issued", "k", "t2-a");
    (void)f.box.enqueue(t2, "invoice.issued", "k", "t2-b");
    t2.commit();
    CHECK(xid1 < xid2);
    CHECK(id1a < id2a);
  }
  (void)f.box.enqueue(t1, "invoice.issued", "k", "t1-b");
  t1.commit();
  relay_until(relay, pub, 4);
  CHECK(pub.payloads() == std::vector<std::string>{"t2-a", "t2-b", "t1-a", "t1-b"});
  std::lock_guard g(pub.mu);
  REQUIRE(pub.seen.size() == 4);
  CHECK(pub.seen[2].id == id1a); // the id is the WAL position: not the publish order
  CHECK(pub.seen[2].id < pub.seen[0].id);
}

TEST_CASE("pg.wal_relay.rolled_back_work_publishes_nothing" * doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher pub;
  lakh::pg::wal_relay relay(f.box, pub);
  f.add("k", "dropped: never committed", false);
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    (void)f.box.enqueue(w, "invoice.issued", "k", "aborted explicitly");
    w.abort();
  }
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    w.exec("SET LOCAL synchronous_commit = on");
    (void)f.box.enqueue(w, "invoice.issued", "k", "kept-1");
    w.exec("SAVEPOINT a");
    (void)f.box.enqueue(w, "invoice.issued", "k", "in a rolled-back savepoint");
    w.exec("ROLLBACK TO SAVEPOINT a");
    w.exec("SAVEPOINT b");
    (void)f.box.enqueue(w, "invoice.issued", "k", "in a released savepoint");
    w.exec("RELEASE SAVEPOINT b");
    (void)f.box.enqueue(w, "invoice.issued", "k", "kept-2");
    w.commit();
  }
  f.add("k", "last"); // committed after everything above: published after all of it
  relay_until(relay, pub, 4);
  CHECK(pub.payloads() ==
        std::vector<std::string>{"kept-1", "in a released savepoint", "kept-2", "last"});
}

TEST_CASE("pg.wal_relay.long_open_transaction_holds_nothing_back" * doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher pub;
  auto cl = f.pool.acquire();
  pqxx::work long_tx(*cl);
  long_tx.exec("SET LOCAL synchronous_commit = on");
  (void)as_int(long_tx, "SELECT pg_current_xact_id()::text::bigint");
  const auto id_long = f.box.enqueue(long_tx, "invoice.issued", "k", "long");
  f.add("k", "a");
  f.add("k", "b");
  const auto id_c = f.add("k", "c");
  {
    lakh::pg::wal_relay relay(f.box, pub);
    relay_until(relay, pub, 3);
    CHECK(pub.payloads() == std::vector<std::string>{"a", "b", "c"});
    // Confirmed past the open transaction's own message: it retains WAL, not the position.
    CHECK(relay.confirmed_lsn() > static_cast<std::uint64_t>(id_c));
    CHECK(relay.confirmed_lsn() > static_cast<std::uint64_t>(id_long));
  }
  // Committed after that position was confirmed, to a relay started afresh: still decoded
  // (the slot's restart point stayed before it), and nothing earlier comes again.
  long_tx.commit();
  lakh::pg::wal_relay relay(f.box, pub);
  relay_until(relay, pub, 4);
  CHECK(pub.payloads() == std::vector<std::string>{"a", "b", "c", "long"});
}

TEST_CASE("pg.wal_relay.setup_errors_say_what_is_missing" * doctest::timeout(60)) {
  // (wal_level other than logical is not tested: the shared server runs with logical, and
  // changing it needs a restart of the server every test uses.)
  wal_fixture f;
  recording_publisher pub;

  lakh::pg::outbox rows(f.pool, {"app.rows"}); // outbox_store::table
  CHECK_THROWS_AS(lakh::pg::wal_relay(rows, pub), std::invalid_argument);
  lakh::pg::wal_relay_options no_batch;
  no_batch.batch = 0;
  CHECK_THROWS_AS(lakh::pg::wal_relay(f.box, pub, no_batch), std::invalid_argument);
  CHECK_THROWS_AS((void)f.box.pending(), std::logic_error);
  CHECK_THROWS_AS((void)f.box.oldest_pending_age(), std::logic_error);
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    CHECK_THROWS_AS((void)f.box.ready(w, 10), std::logic_error);
    CHECK_THROWS_AS(f.box.mark_published(w, {}), std::logic_error);
  }

  lakh::pg::wal_relay relay(f.box, pub);
  CHECK_NOTHROW(relay.check());
  const auto slot = f.box.wal_slot();
  REQUIRE(f.box.drop_wal_slot());
  CHECK_FALSE(f.box.wal_slot_status().exists);
  auto names_the_fix = [&](const auto &call) {
    try {
      call();
      FAIL("no wal_setup_error");
    } catch (const lakh::pg::wal_setup_error &e) {
      const std::string what = e.what();
      INFO(what);
      CHECK(what.find("\"" + slot + "\"") != std::string::npos);
      CHECK(what.find("create_schema") != std::string::npos);
    }
  };
  names_the_fix([&] { relay.check(); });
  names_the_fix([&] { (void)relay.run_once(10ms); });
  CHECK_FALSE(relay.active());

  f.box.create_schema(); // the fix the message names
  CHECK_NOTHROW(relay.check());
  f.add("k", "after the fix");
  relay_until(relay, pub, 1);
  CHECK(pub.payloads() == std::vector<std::string>{"after the fix"});
}

TEST_CASE("pg.wal_relay.standby_takes_over_at_the_confirmed_position" * doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher first_pub;
  recording_publisher second_pub;
  lakh::pg::wal_relay_options o;
  o.standby_poll = 50ms;
  auto first = std::make_unique<lakh::pg::wal_relay>(f.box, first_pub, o);
  lakh::pg::wal_relay second(f.box, second_pub, o);
  std::vector<std::string> all;
  for (int i = 0; i < 5; ++i) {
    all.push_back("e" + std::to_string(i));
    f.add("k", all.back());
  }
  REQUIRE(first->run_once(10ms).active);
  CHECK(f.box.wal_slot_status().active);
  CHECK_FALSE(second.run_once(10ms).active); // the server lets one stream at a time
  CHECK_FALSE(second.active());
  CHECK_THROWS_AS((void)f.box.drop_wal_slot(), pqxx::sql_error); // in use: not dropped
  CHECK(f.box.wal_slot_status().exists);
  relay_until(*first, first_pub, 5);
  CHECK_FALSE(second.run_once(10ms).active);
  for (int i = 5; i < 10; ++i) {
    all.push_back("e" + std::to_string(i));
    f.add("k", all.back());
  }
  const auto confirmed = first->confirmed_lsn();
  first.reset(); // its stream closes; the server frees the slot a moment later
  relay_until(second, second_pub, 5);
  CHECK(second.active());
  // Every event at least once, in commit order across both; the second began at the first's
  // confirmed position, so it sent nothing the first had confirmed.
  const auto a = first_pub.payloads();
  const auto b = second_pub.payloads();
  CHECK(a == std::vector<std::string>(all.begin(), all.begin() + 5));
  CHECK(b == std::vector<std::string>(all.begin() + 5, all.end()));
  std::lock_guard g(second_pub.mu);
  for (const auto &e : second_pub.seen) {
    CHECK(static_cast<std::uint64_t>(e.id) > confirmed);
  }
}

TEST_CASE("pg.wal_relay.confirms_what_was_published_and_the_slot_shows_it" * doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher pub;
  const auto initial = f.box.wal_slot_status();
  REQUIRE(initial.exists);
  CHECK_FALSE(initial.active);
  const std::string big(std::size_t{64} << 10, 'x');
  std::int64_t last = 0;
  for (int i = 0; i < 8; ++i) {
    last = f.add("k", std::to_string(i) + big);
  }
  const auto before = f.box.wal_slot_status();
  CHECK(before.unconfirmed_bytes >= 8 * std::int64_t{64 << 10}); // our events, unrelayed
  const auto confirmed_before = f.slot_confirmed();
  CHECK(confirmed_before < last);

  lakh::pg::wal_relay relay(f.box, pub);
  relay_until(relay, pub, 8);
  CHECK(relay.confirmed_lsn() > static_cast<std::uint64_t>(last));
  // The walsender applies a report when it reads it: wait for the slot to show it.
  wait_for([&] { return f.slot_confirmed() >= last; }, "the slot's confirmed_flush_lsn passed "
                                                       "the last published event");
  const auto after = f.box.wal_slot_status();
  const auto now = f.current_lsn();
  CHECK(after.exists);
  CHECK(after.active);                          // the relay holds the stream
  CHECK(after.unconfirmed_bytes <= now - last); // what other databases wrote since, at most
  CHECK(f.slot_confirmed() - confirmed_before >= 8 * std::int64_t{64 << 10});
}

TEST_CASE("pg.wal_relay.failed_event_is_retried_in_key_order" * doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher pub;
  int failures_left = 2;
  pub.set_decide([&](const lakh::pg::outbox_event &e) {
    return e.payload == "e2" && failures_left-- > 0 ? publish_outcome::failed
                                                    : publish_outcome::acked;
  });
  const auto keys = std::vector<std::string>{"k1", "k2", "k1", "k1", "k2"};
  for (std::size_t i = 0; i < keys.size(); ++i) {
    f.add(keys[i], "e" + std::to_string(i));
  }
  lakh::pg::wal_relay relay(f.box, pub);
  relay_until(relay, pub, 5);
  CHECK(pub.attempts_of("e2").size() == 3);
  CHECK(relay.metrics().failed.value() == 2);
  CHECK(relay.metrics().published.value() == 5);
  std::lock_guard g(pub.mu);
  CHECK(of_key(pub.seen, "k1") == std::vector<std::string>{"e0", "e2", "e3"});
  CHECK(of_key(pub.seen, "k2") == std::vector<std::string>{"e1", "e4"});
  CHECK(of_key(pub.attempts, "k1") == std::vector<std::string>{"e0", "e2", "e2", "e2", "e3"});
}

TEST_CASE("pg.wal_relay.failed_event_is_not_confirmed_past_and_comes_again" *
          doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher failing;
  failing.set_decide([](const lakh::pg::outbox_event &e) {
    return e.payload == "e2" ? publish_outcome::failed : publish_outcome::acked;
  });
  const auto keys = std::vector<std::string>{"k1", "k2", "k1", "k1", "k2"};
  std::vector<std::int64_t> ids;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ids.push_back(f.add(keys[i], "e" + std::to_string(i)));
  }
  {
    lakh::pg::wal_relay relay(f.box, failing);
    rounds_until(
        relay, [&] { return failing.count() >= 3 && failing.attempts_of("e2").size() >= 2; },
        "e0, e1, e4 acknowledged and e2 failed twice");
    CHECK(failing.payloads() == std::vector<std::string>{"e0", "e1", "e4"});
    CHECK(relay.confirmed_lsn() > static_cast<std::uint64_t>(ids[1]));
    CHECK(relay.confirmed_lsn() < static_cast<std::uint64_t>(ids[2]));
    CHECK(f.slot_confirmed() < ids[2]);
  }
  // A fresh relay starts at the confirmed position: e2 and everything committed after it
  // (e4 again: the broker's dedupe drops it), nothing before it.
  recording_publisher pub;
  lakh::pg::wal_relay relay(f.box, pub);
  relay_until(relay, pub, 3);
  CHECK(pub.payloads() == std::vector<std::string>{"e2", "e3", "e4"});
  wait_for([&] { return f.slot_confirmed() > ids[4]; }, "the slot confirmed past e4");
}

TEST_CASE("pg.wal_relay.refused_event_is_parked_retried_with_its_identity_or_dropped" *
          doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher pub;
  std::set<std::string> refused{"bad", "bad2"};
  std::mutex refused_mu;
  pub.set_decide([&](const lakh::pg::outbox_event &e) {
    std::lock_guard g(refused_mu);
    return refused.count(e.payload) != 0 ? publish_outcome::rejected : publish_outcome::acked;
  });
  lakh::pg::wal_relay_options o;
  o.park_after = 3;
  lakh::pg::wal_relay relay(f.box, pub, o);
  f.add("k1", "e0");
  f.add("k1", "bad");
  f.add("k1", "e2");
  f.add("k2", "e3");
  rounds_until(
      relay, [&] { return pub.count() >= 3 && !f.box.parked().empty(); },
      "bad parked and e0, e2, e3 published");
  CHECK(pub.attempts_of("bad").size() == 3);
  CHECK(relay.metrics().parked.value() == 1);
  {
    std::lock_guard g(pub.mu);
    CHECK(of_key(pub.seen, "k1") == std::vector<std::string>{"e0", "e2"}); // its key goes on
    CHECK(of_key(pub.seen, "k2") == std::vector<std::string>{"e3"});
  }
  const auto parked = f.box.parked();
  REQUIRE(parked.size() == 1);
  const auto &p = parked[0];
  CHECK(p.event.topic == "invoice.issued");
  CHECK(p.event.key == "k1");
  CHECK(p.event.payload == "bad");
  CHECK(p.event.headers == std::vector<lakh::pg::outbox_header>{{"traceparent", "00-ab-cd-01"}});
  CHECK(p.event.uuid == pub.attempts_of("bad").front().uuid);
  CHECK(p.attempts == 3);
  CHECK(p.last_error == "refused by the test");

  const auto e4 = f.add("k1", "e4"); // the stream goes on
  relay_until(relay, pub, 4);
  CHECK(pub.payloads().back() == "e4");
  CHECK(relay.confirmed_lsn() > static_cast<std::uint64_t>(e4));

  { // the broker takes it now: re-emitted with the same identity, published
    std::lock_guard g(refused_mu);
    refused.erase("bad");
  }
  const std::vector<std::int64_t> retry{p.event.id};
  CHECK(f.box.retry_parked(retry) == 1);
  CHECK(f.box.parked().empty());
  relay_until(relay, pub, 5);
  {
    std::lock_guard g(pub.mu);
    CHECK(pub.seen.back().payload == "bad");
    CHECK(pub.seen.back().uuid == p.event.uuid);
    CHECK(pub.seen.back().key == "k1");
    CHECK(pub.seen.back().headers == p.event.headers);
  }
  CHECK(f.box.retry_parked(retry) == 0); // no longer parked

  f.add("k3", "bad2");
  rounds_until(
      relay, [&] { return !f.box.parked().empty(); }, "bad2 parked");
  const auto dropped = f.box.parked();
  REQUIRE(dropped.size() == 1);
  CHECK(dropped[0].event.payload == "bad2");
  const std::vector<std::int64_t> drop{dropped[0].event.id};
  CHECK(f.box.drop_parked(drop) == 1);
  CHECK(f.box.drop_parked(drop) == 0);
  CHECK(f.box.parked().empty());
  f.add("k3", "e5");
  relay_until(relay, pub, 6);
  const auto published = pub.payloads();
  CHECK(published.back() == "e5");
  CHECK(std::count(published.begin(), published.end(), "bad2") == 0);
}

TEST_CASE("pg.wal_relay_thread.fails_at_start_without_a_slot_and_stops_promptly" *
          doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher pub;
  REQUIRE(f.box.drop_wal_slot());
  CHECK_THROWS_AS(lakh::pg::wal_relay_thread(f.box, pub), lakh::pg::wal_setup_error);
  f.box.create_schema();

  lakh::pg::wal_relay_options o;
  o.status_interval = 60s; // the longest a round waits: stop() must not wait for it
  o.standby_poll = 50ms;
  lakh::pg::wal_relay_thread relay(f.box, pub, o);
  constexpr int n = 40;
  std::int64_t last = 0;
  for (int t = 0; t < n / 5; ++t) {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    w.exec("SET LOCAL synchronous_commit = on");
    for (int i = 0; i < 5; ++i) {
      last = f.box.enqueue(w, "invoice.issued", "k" + std::to_string(i), std::to_string(t * 5 + i));
    }
    w.commit();
  }
  wait_for([&] { return pub.count() >= static_cast<std::size_t>(n); }, "40 events published");
  std::vector<std::string> expected;
  for (int i = 0; i < n; ++i) {
    expected.push_back(std::to_string(i));
  }
  CHECK(pub.payloads() == expected);
  // The position is confirmed after the publisher returned: wait for it, not for the count.
  wait_for([&] { return relay.confirmed_lsn() > static_cast<std::uint64_t>(last); },
           "the last event's position confirmed");
  const auto t0 = std::chrono::steady_clock::now();
  relay.stop();
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < 5s); // woken out of its wait, not after status_interval
  relay.stop();     // idempotent
  wait_for([&] { return !f.box.wal_slot_status().active; }, "the slot free after stop()");
  CHECK(relay.metrics().published.value() == static_cast<std::uint64_t>(n));
}

TEST_CASE("pg.wal_relay.a_relay_that_takes_over_again_never_moves_the_slot_back" *
          doctest::timeout(60)) {
  // A streams and confirms X, loses its stream; B takes over and confirms Y > X; B goes, and
  // A takes over again while its broker fails: what A reports must not take the slot back to
  // X (the next relay would send again what B confirmed, past the broker's dedupe window).
  wal_fixture f;
  recording_publisher a_pub;
  recording_publisher b_pub;
  lakh::pg::wal_relay_options o;
  o.status_interval = 50ms;
  auto a = std::make_unique<lakh::pg::wal_relay>(f.box, a_pub, o);
  f.add("k", "e0");
  relay_until(*a, a_pub, 1);
  const auto x = a->confirmed_lsn();
  {
    auto c = f.pool.acquire();
    pqxx::nontransaction tx(*c);
    lakh::pg::detail::exec(
        tx,
        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE "
        "slot_name = $1",
        f.box.wal_slot());
  }
  CHECK_THROWS_AS((void)a->run_once(5s), std::runtime_error); // the server ended the stream
  CHECK_FALSE(a->active());
  auto b = std::make_unique<lakh::pg::wal_relay>(f.box, b_pub, o);
  f.add("k", "e1");
  const auto e2 = f.add("k", "e2");
  relay_until(*b, b_pub, 2);
  CHECK(b_pub.payloads() == std::vector<std::string>{"e1", "e2"});
  wait_for([&] { return f.slot_confirmed() > e2; }, "B's position confirmed");
  const auto y = f.slot_confirmed();
  CHECK(static_cast<std::uint64_t>(y) > x);
  b.reset();
  a_pub.set_decide([](const lakh::pg::outbox_event &) { return publish_outcome::failed; });
  f.add("k", "e3");
  rounds_until(
      *a, [&] { return a_pub.attempts_of("e3").size() >= 5; }, "A took over and failed e3");
  CHECK(f.slot_confirmed() >= y);
  a.reset();
  recording_publisher c_pub;
  lakh::pg::wal_relay c(f.box, c_pub, o);
  relay_until(c, c_pub, 1);
  CHECK(c_pub.payloads().front() == "e3"); // nothing B had confirmed comes again
}

TEST_CASE("pg.wal_relay.a_transaction_is_confirmed_whole_or_not_at_all" * doctest::timeout(60)) {
  // T holds a, b, c (three keys); b fails. The position may not pass T: a fresh relay sends
  // all of T again (a and c are duplicates for the broker), and nothing before T.
  wal_fixture f;
  recording_publisher failing;
  failing.set_decide([](const lakh::pg::outbox_event &e) {
    return e.payload == "b" ? publish_outcome::failed : publish_outcome::acked;
  });
  f.add("k0", "before");
  std::int64_t id_a = 0;
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    w.exec("SET LOCAL synchronous_commit = on");
    id_a = f.box.enqueue(w, "invoice.issued", "k1", "a");
    (void)f.box.enqueue(w, "invoice.issued", "k2", "b");
    (void)f.box.enqueue(w, "invoice.issued", "k3", "c");
    w.commit();
  }
  {
    lakh::pg::wal_relay relay(f.box, failing);
    rounds_until(
        relay, [&] { return failing.count() >= 3 && !failing.attempts_of("b").empty(); },
        "before, a and c acknowledged, b failed");
    CHECK(failing.payloads() == std::vector<std::string>{"before", "a", "c"});
    CHECK(relay.confirmed_lsn() > 0);
    CHECK(relay.confirmed_lsn() < static_cast<std::uint64_t>(id_a));
  }
  recording_publisher pub;
  lakh::pg::wal_relay relay(f.box, pub);
  relay_until(relay, pub, 3);
  CHECK(pub.payloads() == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("pg.wal_relay.a_transaction_larger_than_a_batch_goes_out_whole" * doctest::timeout(60)) {
  wal_fixture f;
  struct sizes_publisher : recording_publisher {
    std::vector<std::size_t> sizes;
    void publish(std::span<const lakh::pg::outbox_event> events,
                 std::span<publish_outcome> outcomes) override {
      sizes.push_back(events.size());
      recording_publisher::publish(events, outcomes);
    }
  } pub;
  lakh::pg::wal_relay_options o;
  o.batch = 10;
  lakh::pg::wal_relay relay(f.box, pub, o);
  std::vector<std::string> expected;
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    w.exec("SET LOCAL synchronous_commit = on");
    for (int i = 0; i < 35; ++i) {
      expected.push_back("big-" + std::to_string(i));
      (void)f.box.enqueue(w, "invoice.issued", "k" + std::to_string(i % 4), expected.back());
    }
    w.commit();
  }
  for (int i = 0; i < 12; ++i) {
    expected.push_back("small-" + std::to_string(i));
    f.add("k", expected.back());
  }
  relay_until(relay, pub, expected.size());
  CHECK(pub.payloads() == expected);
  REQUIRE_FALSE(pub.sizes.empty());
  CHECK(pub.sizes.front() >= 35); // the whole transaction in one publish
  CHECK(*std::max_element(pub.sizes.begin() + 1, pub.sizes.end()) <= 10);
}

TEST_CASE("pg.wal_relay.odd_fields_round_trip_and_other_outboxes_are_not_relayed" *
          doctest::timeout(60)) {
  wal_fixture f;
  // Another outbox in the same database, its table name a prefix of ours: its own slot, its
  // own events.
  lakh::pg::outbox other(f.pool,
                         {"app.outbox2", false, std::size_t{1} << 20, lakh::pg::outbox_store::wal});
  other.create_schema();
  struct dropped_at_end {
    lakh::pg::outbox &box;
    ~dropped_at_end() { lakh::test::drop_slot(box); }
  } drop_other{other};
  CHECK(other.wal_slot() != f.box.wal_slot());

  std::vector<lakh::pg::outbox_header> headers;
  for (int i = 0; i < 64; ++i) {
    headers.push_back({"h" + std::to_string(i), i == 0 ? std::string(4096, 'v') : "3:x:12:"});
  }
  const std::vector<std::string> payloads{"", "5:abc:12:", "{\"a\": \"\\u00e9 ü\"}",
                                          std::string(1 << 16, ':')};
  {
    auto c = f.pool.acquire();
    pqxx::work w(*c);
    w.exec("SET LOCAL synchronous_commit = on");
    (void)other.enqueue(w, "other.topic", "k", "not ours");
    for (const auto &p : payloads) {
      (void)f.box.enqueue(w, "t:1:x", "", p, headers);
    }
    (void)other.enqueue(w, "other.topic", "k", "not ours either");
    w.exec("SELECT pg_logical_emit_message(true, 'lakh_outbox:app.outbox', 'not an event')");
    w.commit();
  }
  f.add("k", "last");
  recording_publisher pub;
  lakh::pg::wal_relay relay(f.box, pub);
  relay_until(relay, pub, payloads.size() + 1);
  auto expected = payloads;
  expected.push_back("last");
  CHECK(pub.payloads() == expected);
  CHECK(relay.metrics().failed.value() == 1); // the message that is not an event: skipped
  std::lock_guard g(pub.mu);
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    CHECK(pub.seen[i].topic == "t:1:x");
    CHECK(pub.seen[i].key.empty());
    CHECK(pub.seen[i].headers == headers);
  }

  recording_publisher other_pub;
  lakh::pg::wal_relay other_relay(other, other_pub);
  relay_until(other_relay, other_pub, 2);
  CHECK(other_pub.payloads() == std::vector<std::string>{"not ours", "not ours either"});
}

TEST_CASE("pg.wal_relay.a_slot_of_another_database_is_a_setup_error" * doctest::timeout(60)) {
  // Slots are per cluster: an outbox of another database naming the same slot must not
  // stream this database's events.
  wal_fixture f;
  const auto slot = lakh::test::pg::unique_name("lakh_test_slot");
  lakh::pg::outbox mine(
      f.pool, {"app.named", false, std::size_t{1} << 20, lakh::pg::outbox_store::wal, slot});
  mine.create_schema();
  struct dropped_at_end {
    lakh::pg::outbox &box;
    ~dropped_at_end() { lakh::test::drop_slot(box); }
  } drop_mine{mine};
  lakh::test::pg::scratch_database other_db("wal_other");
  lakh::pg::pool other_pool(other_db.url(), 2);
  lakh::pg::outbox theirs(
      other_pool, {"app.named", false, std::size_t{1} << 20, lakh::pg::outbox_store::wal, slot});
  // The slot exists (in the first database): create_schema says so, and leaves it as it is.
  CHECK_THROWS_WITH_AS(theirs.create_schema(),
                       doctest::Contains("is not a pgoutput slot of this database"),
                       lakh::pg::wal_setup_error);
  recording_publisher pub;
  lakh::pg::wal_relay relay(theirs, pub);
  try {
    relay.check();
    FAIL("no wal_setup_error");
  } catch (const lakh::pg::wal_setup_error &e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find("\"" + slot + "\"") != std::string::npos);
    CHECK(what.find("this database") != std::string::npos);
  }
  CHECK_THROWS_AS((void)relay.run_once(10ms), lakh::pg::wal_setup_error);
  CHECK_FALSE(relay.active());
}

TEST_CASE("pg.wal_relay_thread.standby_takes_over_when_the_active_one_stops" *
          doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher first_pub;
  recording_publisher second_pub;
  lakh::pg::wal_relay_options o;
  o.standby_poll = 20ms;
  auto first = std::make_unique<lakh::pg::wal_relay_thread>(f.box, first_pub, o);
  wait_for([&] { return f.box.wal_slot_status().active; }, "the first relay streams");
  lakh::pg::wal_relay_thread second(f.box, second_pub, o);
  std::vector<std::string> all;
  for (int i = 0; i < 20; ++i) {
    if (i == 10) {
      wait_for([&] { return first_pub.count() >= 10; }, "the first relay published 10");
      first->stop(); // confirms what it published, then frees the slot
      first.reset();
    }
    all.push_back("e" + std::to_string(i));
    f.add("k", all.back());
  }
  wait_for([&] { return second_pub.count() >= 10; }, "the standby took over and published 10");
  CHECK(first_pub.payloads() == std::vector<std::string>(all.begin(), all.begin() + 10));
  CHECK(second_pub.payloads() == std::vector<std::string>(all.begin() + 10, all.end()));
  // The counter is raised once the publisher has returned, so just after its record.
  wait_for([&] { return second.metrics().published.value() >= 10; }, "the standby counted 10");
  CHECK(second.metrics().published.value() == 10);
}

TEST_CASE("pg.wal_relay.run_reports_a_missing_slot_and_resumes_once_it_exists" *
          doctest::timeout(60)) {
  wal_fixture f;
  recording_publisher pub;
  REQUIRE(f.box.drop_wal_slot());
  std::mutex mu;
  std::vector<std::string> setup_errors;
  lakh::pg::wal_relay_options o;
  o.backoff_cap = 50ms;
  o.on_error = [&](const std::exception &e) {
    if (dynamic_cast<const lakh::pg::wal_setup_error *>(&e) != nullptr) {
      std::lock_guard g(mu);
      setup_errors.emplace_back(e.what());
    }
  };
  lakh::pg::wal_relay relay(f.box, pub, o);
  std::stop_source stop;
  std::jthread t([&] { relay.run(stop.get_token()); });
  wait_for(
      [&] {
        std::lock_guard g(mu);
        return setup_errors.size() >= 2;
      },
      "run() reported the missing slot (and retried)");
  f.box.create_schema();
  f.add("k", "after the slot came back");
  wait_for([&] { return pub.count() >= 1; }, "run() resumed and published");
  stop.request_stop();
  t.join();
  CHECK(pub.payloads() == std::vector<std::string>{"after the slot came back"});
  std::lock_guard g(mu);
  CHECK(setup_errors.front().find("create_schema") != std::string::npos);
}

TEST_CASE("pg.wal_relay.a_lost_slot_is_reported_by_create_schema_not_replaced" *
          doctest::timeout(60)) {
  wal_fixture f;
  const auto slot = f.box.wal_slot();
  lakh::test::pg::exec(f.db.url(), "SELECT pg_drop_replication_slot('" + slot + "')");
  CHECK_FALSE(f.box.wal_slot_status().exists);
  CHECK_THROWS_WITH_AS(f.box.create_schema(), doctest::Contains("the slot was lost"),
                       lakh::pg::wal_setup_error);
  CHECK(f.box.drop_wal_slot() == false); // the publication goes; there was no slot
  f.box.create_schema();                 // the gap accepted: a new slot
  const auto state = f.box.wal_slot_status();
  CHECK(state.exists);
  CHECK_FALSE(state.active);
}

// pgoutput finds the publication in the catalog as of each change it decodes: a slot made
// before its publication fails ("publication does not exist") on every table change committed
// in between, and its relay never gets past it. Here tables change all the time while
// create_schema runs.
TEST_CASE("pg.wal_relay.table_writes_while_create_schema_runs_do_not_stop_the_stream" *
          doctest::timeout(90)) {
  lakh::test::pg::scratch_database db("wal_busy");
  lakh::test::pg::exec(db.url(), "CREATE TABLE busy (n int)");
  std::atomic<bool> done{false};
  std::atomic<long> writes{0};
  std::jthread writer([&] {
    pqxx::connection c(db.url());
    while (!done) {
      pqxx::work w(c);
      w.exec("INSERT INTO busy VALUES (1)");
      w.commit();
      ++writes;
    }
  });
  wait_for([&] { return writes > 10; }, "the writer commits");
  lakh::pg::pool pool(db.url(), 4);
  lakh::pg::outbox box(pool,
                       {"app.outbox", false, std::size_t{1} << 20, lakh::pg::outbox_store::wal});
  box.create_schema();
  const auto after = writes.load();
  wait_for([&] { return writes > after + 10; }, "more commits after create_schema");
  {
    auto c = pool.acquire();
    pqxx::work w(*c);
    w.exec("SET LOCAL synchronous_commit = on");
    (void)box.enqueue(w, "invoice.issued", "k", "through the busy tables");
    w.commit();
  }
  done = true;
  writer.join();
  recording_publisher pub;
  lakh::pg::wal_relay relay(box, pub);
  std::string error;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (pub.count() == 0 && std::chrono::steady_clock::now() < deadline) {
    try {
      (void)relay.run_once(50ms);
    } catch (const std::exception &e) {
      error = e.what();
      break;
    }
  }
  CHECK_MESSAGE(error.empty(), error);
  CHECK(pub.payloads() == std::vector<std::string>{"through the busy tables"});
  lakh::test::drop_slot(box);
}

TEST_CASE("pg.wal_relay.check_says_when_the_role_may_not_replicate" * doctest::timeout(60)) {
  wal_fixture f;
  const auto role = lakh::test::pg::unique_name("lakh_no_replication");
  lakh::test::pg::exec(f.db.url(), "CREATE ROLE " + role + " LOGIN NOREPLICATION");
  struct dropped_at_end {
    std::string url, role;
    ~dropped_at_end() {
      try {
        lakh::test::pg::exec(url, "DROP ROLE IF EXISTS " + role);
      } catch (...) {
      }
    }
  } drop_role{f.db.url(), role};
  recording_publisher pub;
  lakh::pg::wal_relay_options o;
  o.conninfo = f.db.url() + " user=" + role; // a key=value string (with_database)
  lakh::pg::wal_relay relay(f.box, pub, o);
  CHECK_THROWS_WITH_AS(relay.check(), doctest::Contains("REPLICATION"), std::runtime_error);
  CHECK_THROWS_WITH_AS(lakh::pg::wal_relay_thread(f.box, pub, o),
                       doctest::Contains("replication connection"), std::runtime_error);
  CHECK_FALSE(relay.active());
}
