// lakh::pg::wal_relay (the wal store of lakh::pg::outbox) against the real PostgreSQL of
// scripts/services (wal_level=logical). The broker is a recording publisher (a test double of
// the BROKER; the database and its replication stream are real).
#include <lakh/pg/wal_relay.hpp>

#include <support/env.hpp>
#include <support/scratch_database.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <chrono>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

struct recording_publisher : lakh::pg::outbox_publisher {
  std::mutex mu;
  std::vector<lakh::pg::outbox_event> seen; // acknowledged, in publish order
  void publish(std::span<const lakh::pg::outbox_event> events,
               std::span<lakh::pg::publish_outcome> outcomes) override {
    std::lock_guard g(mu);
    for (std::size_t i = 0; i < events.size(); ++i) {
      outcomes[i] = lakh::pg::publish_outcome::acked;
      seen.push_back(events[i]);
    }
  }
  std::vector<std::string> payloads() {
    std::lock_guard g(mu);
    std::vector<std::string> out;
    for (const auto &e : seen) {
      out.push_back(e.payload);
    }
    return out;
  }
};

// An outbox with the wal store in a database of its own (its slot is dropped with it).
struct wal_fixture {
  lakh::test::pg::scratch_database db{"wal_relay"};
  lakh::pg::pool pool{db.url(), 8};
  lakh::pg::outbox box{pool,
                       {"app.outbox", false, std::size_t{1} << 20, lakh::pg::outbox_store::wal}};
  wal_fixture() {
    box.create_schema();
    box.create_schema(); // idempotent
  }
  ~wal_fixture() {
    try {
      (void)box.drop_wal_slot();
    } catch (...) {
    }
  }
  wal_fixture(const wal_fixture &) = delete;
  wal_fixture &operator=(const wal_fixture &) = delete;

  void add(const std::string &key, const std::string &payload, bool commit = true) {
    auto c = pool.acquire();
    pqxx::work w(*c);
    w.exec("SET LOCAL synchronous_commit = on"); // decoded once flushed
    (void)box.enqueue(w, "invoice.issued", key, payload, {{{"traceparent", "00-ab-cd-01"}}});
    if (commit) {
      w.commit();
    }
  }
};

// Rounds until `n` events were published or 30 s passed.
void relay_until(lakh::pg::wal_relay &relay, recording_publisher &pub, std::size_t n) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (pub.payloads().size() < n && std::chrono::steady_clock::now() < deadline) {
    (void)relay.run_once(100ms);
  }
}

} // namespace

TEST_CASE("wal relay: committed events in commit order, with their identity and headers") {
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

TEST_CASE("wal store: a lost slot is reported by create_schema, not silently replaced") {
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
