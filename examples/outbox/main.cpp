// The transactional outbox (docs/outbox.md): an event is written in the transaction of the
// change it reports, a relay publishes it to NATS JetStream, and a consumer applies it once
// with an inbox. Needs DATABASE_URL, NATS_URL. Checks: the invoice issued here is charged.
// [doc:outbox]
#include <lakh/nats/jetstream.hpp> // lakh::nats::jetstream, pull_consumer
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/pg/inbox.hpp>
#include <lakh/pg/outbox.hpp> // lakh::pg::outbox, outbox_relay
// [doc:outbox]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

std::string charged; // the last payload charged
const auto charge = [](pqxx::transaction_base &, std::string_view p) { charged = p; };

int main() {
  const char *db_url = std::getenv("DATABASE_URL"), *nats_url = std::getenv("NATS_URL");
  if (db_url == nullptr || nats_url == nullptr) {
    std::fprintf(stderr, "DATABASE_URL or NATS_URL is not set: run under scripts/services run\n");
    return 2;
  }
  // [doc:outbox]
  lakh::pg::pool pool(db_url, 8);
  lakh::pg::outbox events(pool, {"example_outbox.outbox"});
  events.create_schema();
  // [doc:outbox]
  const auto invoice_id = // a draft invoice (events.create_schema() made the schema)
      pqxx::nontransaction(*pool.acquire())
          .exec1("CREATE TABLE IF NOT EXISTS example_outbox.invoices (id serial, state text);"
                 "INSERT INTO example_outbox.invoices (state) VALUES ('') RETURNING id")[0]
          .as<long>();

  const std::string json = R"({"invoice":)" + std::to_string(invoice_id) + "}";
  const std::string traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  // [doc:outbox]

  { // the business change and its event: one transaction
    auto c = pool.acquire();
    pqxx::work w(*c);
    // per-invoice order: lock the invoice before enqueuing its event
    w.exec_params("SELECT 1 FROM example_outbox.invoices WHERE id = $1 FOR UPDATE", invoice_id);
    w.exec_params("UPDATE example_outbox.invoices SET state = 'issued' WHERE id = $1", invoice_id);
    const std::vector<lakh::pg::outbox_header> h{{"traceparent", traceparent}};
    events.enqueue(w, "invoice.issued", std::to_string(invoice_id), json, h);
    w.commit();
  }

  // The relay: run it in several processes; one is active, the others stand by.
  lakh::nats::jetstream js(nats_url);
  js.ensure_stream(
      {"INVOICES", {"invoice.>"}, lakh::nats::storage::file, std::chrono::minutes(10)});
  lakh::nats::outbox_publisher publisher(js, {"billing-"});
  lakh::pg::outbox_relay relay(events, publisher, {.batch = 1000});
  std::jthread relay_thread([&](std::stop_token st) { relay.run(st); });

  // A consumer, exactly once:
  lakh::pg::inbox seen(pool, {"example_outbox.inbox"});
  seen.create_schema();
  lakh::nats::pull_consumer sub(js, "INVOICES", "invoice.issued", "payments");
  // [doc:outbox]
  for (int round = 0; round < 30 && charged != json; ++round) {
    // [doc:outbox]
    for (auto &m : sub.fetch(64, std::chrono::seconds(1))) {
      auto c = pool.acquire();
      pqxx::work w(*c);
      if (seen.first_delivery(w, "payments", m.id())) {
        charge(w, m.payload());
      }
      w.commit();
      m.ack(); // after the commit: a crash before it means a redelivery the inbox skips
    }
    // [doc:outbox]
  }
  std::printf("charged %s (expected %s)\n", charged.c_str(), json.c_str());
  return charged == json ? 0 : 1;
}
