// The transactional outbox (docs/outbox.md): an event is written in the transaction of the
// change it reports, a relay publishes it to NATS JetStream, and a consumer applies it once
// with an inbox. Needs DATABASE_URL, NATS_URL. Checks: the invoice issued here is charged.
// [doc:outbox]
#include <lakh/nats/jetstream.hpp>
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/nats/pull_consumer.hpp> // lakh::nats::consume
#include <lakh/pg/inbox.hpp>
#include <lakh/pg/outbox.hpp>
#include <lakh/pg/outbox_relay.hpp> // lakh::pg::outbox_relay_thread
// [doc:outbox]

#include <lakh/channel.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

lakh::channel<std::string> charges(16); // what charge() did, for main() to check
void charge(pqxx::transaction_base &, std::string_view payload) {
  (void)charges.try_send(std::string(payload));
}

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
  // [doc:outbox]

  { // the business change and its event: one transaction
    auto c = pool.acquire();
    pqxx::work w(*c);
    // the UPDATE locks the invoice row: one invoice's events are enqueued in order
    w.exec_params("UPDATE example_outbox.invoices SET state = 'issued' WHERE id = $1", invoice_id);
    const std::vector<lakh::pg::outbox_header> h{
        {"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}};
    events.enqueue(w, "invoice.issued", std::to_string(invoice_id), json, h);
    w.commit();
  }

  // The relay: run it in several processes; one is active, the others stand by.
  lakh::nats::jetstream js(nats_url);
  js.ensure_stream(
      {"INVOICES", {"invoice.>"}, lakh::nats::storage::file, std::chrono::minutes(10)});
  lakh::nats::outbox_publisher publisher(js, {"billing-"});
  lakh::pg::outbox_relay_thread relay(events, publisher, {.batch = 1000});

  // A consumer, exactly once: the effect and its inbox row commit together; consume() acks
  // after the handler returns, reconnects with backoff and stops on the token.
  lakh::pg::inbox seen(pool, {"example_outbox.inbox"});
  seen.create_schema();
  std::jthread consumer([&](std::stop_token st) {
    const auto apply = [&](lakh::nats::delivery &m) {
      auto c = pool.acquire();
      pqxx::work w(*c);
      if (seen.first_delivery(w, "payments", m.id())) {
        charge(w, m.payload());
      }
      w.commit();
    };
    lakh::nats::consume(js, {"INVOICES", "invoice.issued", "payments"}, apply, st);
  });
  // [doc:outbox]
  std::string charged; // a rerun on the same servers may see earlier invoices first
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (charged != json && charges.try_recv_until(charged, until) == lakh::status::ok) {
  }
  std::printf("charged %s (expected %s)\n", charged.c_str(), json.c_str());
  return charged == json ? 0 : 1;
}
