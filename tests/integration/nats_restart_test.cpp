// The nats-server of scripts/services (LAKH_SERVICES_DIR) is stopped and started again (by
// `scripts/services stop|start nats`) while an outbox relay runs: every event still reaches the
// stream exactly once; and while lakh::nats::consume runs: it resumes and every message is
// handled. Runs alone (SERIAL): other tests would see the outage.
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/nats/pull_consumer.hpp>

#include <servers.hpp>
#include <support/env.hpp>
#include <support/nats.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <set>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// The nats-server of scripts/services, stopped (returns once it is gone) or started again on
/// its port and store (returns once it answers).
void nats(std::string_view action) {
  REQUIRE_NOTHROW(lakh_examples::services(action, "nats"));
}

} // namespace

TEST_CASE("nats.restart.relay_loses_nothing_and_duplicates_nothing" * doctest::timeout(180)) {
  (void)lakh::test::require_env("LAKH_SERVICES_DIR"); // the script finds the server there
  const std::string url = lakh::test::nats_url();
  const std::string tag = std::to_string(::getpid());
  const std::string stream = "LAKH_RESTART_" + tag;
  lakh::nats::jetstream js(url);
  js.delete_stream(stream);
  js.ensure_stream({stream, {"lakhrestart" + tag + ".>"}});
  lakh::pg::pool pool(lakh::test::database_url(), 4);
  lakh::pg::outbox box(pool, {"outbox_restart_" + tag});
  box.create_schema();
  auto add = [&](int from, int to) {
    auto c = pool.acquire();
    pqxx::work w(*c);
    for (int i = from; i < to; ++i) {
      (void)box.enqueue(w, "lakhrestart" + tag + ".event", "k" + std::to_string(i % 5),
                        std::to_string(i));
    }
    w.commit();
  };
  lakh::nats::outbox_publisher pub(js, {"r" + tag + "-", lakh::nats::key_order::strict, 500ms});
  lakh::pg::outbox_relay relay(box, pub, {50, 5ms, 10ms, 200ms});
  std::stop_source stop;
  std::jthread relay_thread([&] { relay.run(stop.get_token()); });

  add(0, 300);
  std::this_thread::sleep_for(100ms);
  nats("stop");
  add(300, 600);                       // committed while the broker is down: must wait, not vanish
  std::this_thread::sleep_for(1500ms); // longer than the 500 ms ack timeout: rounds fail
  CHECK(box.pending() > 0);
  nats("start");
  add(600, 900);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (box.pending() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  stop.request_stop();
  relay_thread.join();
  CHECK(box.pending() == 0);
  REQUIRE(js.stream_messages(stream) == 900); // each event once: republished ones deduplicated
  CHECK(relay.metrics().published.value() == 900);
  CHECK(relay.metrics().failed.value() > 0); // the outage was seen
  // Per key in enqueue order, even across the outage and the retries.
  std::map<int, int> last;
  std::set<int> seen;
  bool in_order = true;
  for (std::uint64_t seq = 1; seq <= 900; ++seq) {
    const int i = std::stoi(lakh::test::get_message(js, stream, seq).payload);
    seen.insert(i);
    in_order = in_order && (last.count(i % 5) == 0 || last[i % 5] < i);
    last[i % 5] = i;
  }
  CHECK(seen.size() == 900);
  CHECK(in_order);

  js.delete_stream(stream);
  pqxx::connection c(lakh::test::database_url());
  pqxx::nontransaction tx(c);
  tx.exec("DROP TABLE IF EXISTS " + box.table());
}

TEST_CASE("nats.restart.consume_resumes_and_handles_everything" * doctest::timeout(180)) {
  (void)lakh::test::require_env("LAKH_SERVICES_DIR");
  const std::string tag = std::to_string(::getpid());
  lakh::nats::jetstream js(lakh::test::nats_url());
  lakh::test::scratch_stream stream(js, {"LAKH_RESTART_C_" + tag, {"lakhrestartc" + tag + ".>"}});
  const std::string subject = "lakhrestartc" + tag + ".ev";
  // Publishes payloads from..to-1 (ids dedupe a retried batch), retrying while the connection
  // comes back.
  auto publish = [&](int from, int to) {
    std::vector<lakh::nats::message> msgs;
    msgs.reserve(static_cast<std::size_t>(to - from));
    for (int i = from; i < to; ++i) {
      msgs.push_back({subject, std::to_string(i), "rc" + tag + "-" + std::to_string(i)});
    }
    bool ok = false;
    for (int attempt = 0; attempt < 40 && !ok; ++attempt) {
      ok = js.publish_batch(msgs, 1s).all_acknowledged();
      if (!ok) {
        std::this_thread::sleep_for(250ms);
      }
    }
    REQUIRE(ok);
  };
  publish(0, 300);

  std::mutex mu;
  std::set<int> handled;
  std::atomic<int> errors{0};
  lakh::nats::consume_options o{stream.name(), subject, "restart" + tag, 5s};
  o.batch = 10;
  o.retry = lakh::backoff(20ms, 500ms);
  o.on_error = [&](const std::exception &) { ++errors; };
  auto count = [&] {
    std::lock_guard g(mu);
    return handled.size();
  };
  std::stop_source stop;
  std::jthread loop([&] {
    lakh::nats::consume(
        js, o,
        [&](lakh::nats::delivery &d) {
          std::this_thread::sleep_for(2ms); // slow enough for the outage to find work left
          std::lock_guard g(mu);
          handled.insert(std::stoi(std::string(d.payload())));
        },
        stop.get_token());
  });
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (count() < 50 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  nats("stop");
  const auto before = count();
  CHECK(before < 300); // the outage came while messages were left
  std::this_thread::sleep_for(1500ms);
  nats("start");
  publish(300, 600);
  while (count() < 600 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  stop.request_stop();
  loop.join();
  CHECK(count() == 600); // every message handled (some perhaps twice: at least once)
  MESSAGE("handled " << before << " before the outage; " << errors.load() << " errors reported");
}
