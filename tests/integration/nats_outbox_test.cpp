// lakh::pg::outbox relayed to a real NATS JetStream (and PostgreSQL) of scripts/services:
// every event lands once in the stream, and republished ids are dropped as duplicates.
#include <lakh/nats/outbox_publisher.hpp>

#include <support/env.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

TEST_CASE("nats.outbox.relay_to_jetstream_once_and_duplicates_dropped" * doctest::timeout(120)) {
  const std::string tag = std::to_string(::getpid());
  const std::string stream = "LAKH_TEST_" + tag;
  const std::string subject = "lakhtest" + tag + ".invoice.issued";
  lakh::nats::jetstream js(lakh::test::nats_url());
  js.delete_stream(stream);
  js.ensure_stream(stream, {"lakhtest" + tag + ".>"});
  js.ensure_stream(stream, {"lakhtest" + tag + ".>"}); // exists: left as it is

  lakh::pg::pool pool(lakh::test::database_url(), 4);
  lakh::pg::outbox box(pool, {"outbox_nats_" + tag});
  box.create_schema();
  constexpr int n = 500;
  {
    auto c = pool.acquire();
    pqxx::work w(*c);
    for (int i = 0; i < n; ++i) {
      (void)box.enqueue(w, subject, "tenant-" + std::to_string(i % 10),
                        "{\"invoice\":" + std::to_string(i) + "}");
    }
    w.commit();
  }
  lakh::nats::outbox_publisher pub(js, "t" + tag + "-");
  lakh::pg::outbox_relay relay(box, pub, 128);
  for (int round = 0; round < 50 && box.pending() > 0; ++round) {
    (void)relay.run_once();
  }
  CHECK(box.pending() == 0);
  CHECK(relay.published() == static_cast<std::uint64_t>(n));
  CHECK(js.stream_messages(stream) == static_cast<std::uint64_t>(n));

  // A relay that crashed after publishing and before marking sends the same ids again:
  // JetStream acknowledges them as duplicates and stores nothing new.
  std::vector<lakh::pg::outbox_event> again;
  {
    auto c = pool.acquire();
    pqxx::nontransaction tx(*c);
    for (const auto &row :
         tx.exec("SELECT id, topic, key, payload FROM " + box.table() + " ORDER BY id LIMIT 100")) {
      again.push_back({row[0].as<std::int64_t>(), row[1].as<std::string>(),
                       row[2].as<std::string>(), row[3].as<std::string>()});
    }
  }
  CHECK(pub.publish(again) == again.size());
  CHECK(js.stream_messages(stream) == static_cast<std::uint64_t>(n));

  js.delete_stream(stream);
  pqxx::connection c(lakh::test::database_url());
  pqxx::nontransaction tx(c);
  tx.exec("DROP TABLE IF EXISTS " + box.table());
}

TEST_CASE("nats.connect_error_names_the_server") {
  CHECK_THROWS_WITH_AS(lakh::nats::jetstream("nats://127.0.0.1:1"),
                       doctest::Contains("nats://127.0.0.1:1"), lakh::nats::error);
}
