// The nats-server of scripts/services (LAKH_SERVICES_DIR) is stopped and started again while a
// lakh::pg::wal_relay_thread relays a wal-store outbox to JetStream: the events committed
// before, during and after the outage all reach the stream exactly once. Runs alone (SERIAL):
// other tests would see the outage.
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/pg/wal_relay.hpp>

#include <servers.hpp>
#include <support/env.hpp>
#include <support/nats.hpp>
#include <support/wal_outbox.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <thread>

using namespace std::chrono_literals;

TEST_CASE("nats.wal_relay.restart_loses_nothing_and_duplicates_nothing" * doctest::timeout(180)) {
  (void)lakh::test::require_env("LAKH_SERVICES_DIR"); // the script finds the server there
  const std::string tag = std::to_string(::getpid());
  const std::string subject = "lakhwalrestart" + tag + ".invoice";
  lakh::nats::jetstream js(lakh::test::nats_url());
  lakh::test::scratch_stream stream(js, {"LAKH_WAL_RESTART_" + tag, {subject}});
  lakh::test::wal_outbox db("wal_restart");
  // Events from..to-1, in transactions of 10.
  auto add = [&](int from, int to) {
    for (int i = from; i < to; i += 10) {
      auto c = db.pool.acquire();
      pqxx::work w(*c);
      w.exec("SET LOCAL synchronous_commit = on");
      for (int j = i; j < std::min(to, i + 10); ++j) {
        (void)db.box.enqueue(w, subject, "k" + std::to_string(j % 5), std::to_string(j));
      }
      w.commit();
    }
  };
  lakh::nats::outbox_publisher pub(js, {"wr" + tag + "-", lakh::nats::key_order::strict, 500ms});
  lakh::pg::wal_relay_options o;
  o.batch = 50;
  o.backoff_base = 5ms;
  o.backoff_cap = 200ms;
  lakh::pg::wal_relay_thread relay(db.box, pub, o);
  auto wait_stored = [&](std::uint64_t n) {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (js.stream_messages(stream.name()) < n && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    REQUIRE(js.stream_messages(stream.name()) >= n);
  };

  add(0, 300);
  wait_stored(100); // the outage comes once the stream flows
  REQUIRE_NOTHROW(lakh_examples::services("stop", "nats"));
  add(300, 600); // committed while the broker is down: must wait, not vanish
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (relay.metrics().failed.value() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  CHECK(relay.metrics().failed.value() > 0); // the outage was seen
  REQUIRE_NOTHROW(lakh_examples::services("start", "nats"));
  add(600, 900);
  wait_stored(900);
  relay.stop();
  CHECK(js.stream_messages(stream.name()) == 900); // each once: republished ids deduplicated
  CHECK(relay.metrics().published.value() >= 900);

  std::set<std::string> ids;
  std::set<int> seen;
  std::map<int, int> last; // key -> last event
  bool in_order = true;
  for (std::uint64_t seq = 1; seq <= 900; ++seq) {
    const auto m = lakh::test::get_message(js, stream.name(), seq);
    ids.insert(m.id);
    const int i = std::stoi(m.payload);
    seen.insert(i);
    in_order = in_order && (last.count(i % 5) == 0 || last[i % 5] < i);
    last[i % 5] = i;
  }
  CHECK(ids.size() == 900);
  CHECK(seen.size() == 900);
  CHECK(*seen.begin() == 0);
  CHECK(*seen.rbegin() == 899);
  CHECK(in_order);
}
