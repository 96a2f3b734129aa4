#pragma once
// examples/billing_run/verify.hpp: the verify stage. The spec's totals recomputed three ways:
// by the generator, from the per-tenant totals the workers wrote, and from the raw usage rows
// by SQL (its own copy of the rating rule, on purpose: an independent path), plus
// invoices == tenants == events, and an empty outbox (the wal store: no event left after its
// slot's confirmed position).

#include "database.hpp"

#include <lakh/fake/usage.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace billing {

struct check {
  std::string what;
  std::string expected;
  std::string found;
  [[nodiscard]] bool ok() const { return expected == found; }
};

struct verify_result {
  std::vector<check> checks;
  std::uint64_t total_cents = 0;
  std::uint64_t checksum = 0;
  std::uint64_t invoices = 0;
  std::uint64_t events = 0;
  [[nodiscard]] bool ok() const {
    return std::all_of(checks.begin(), checks.end(), [](const check &c) { return c.ok(); });
  }
};

/// Row count, sums and checksum of (tenant, rows, cents) rows, the spec's way.
struct folded {
  std::uint64_t tenants = 0;
  std::uint64_t rows = 0;
  std::uint64_t cents = 0;
  std::uint64_t checksum = 0;
};

inline folded fold(const pqxx::result &r) {
  folded f;
  f.tenants = lakh::pg::detail::row_count(r);
  for (const auto &row : r) {
    const auto c = row[2].as<std::uint64_t>();
    f.rows += row[1].as<std::uint64_t>();
    f.cents += c;
    f.checksum += (row[0].as<std::uint64_t>() + 1) * c;
  }
  return f;
}

/// Recomputes the spec's figures from the database and compares them with the generator's.
/// With the wal store (its slot exists) no event may be left unconfirmed in the slot.
/// @throws std::runtime_error if nothing was loaded; pqxx errors.
inline verify_result verify(lakh::pg::pool &p) {
  auto wal_box = make_outbox(p, lakh::pg::outbox_store::wal);
  auto slot = wal_box.wal_slot_status();
  // A relay that just stopped leaves the slot to its server process for a moment.
  for (int i = 0; i < 100 && slot.active; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    slot = wal_box.wal_slot_status();
  }
  const auto slot_name = slot.exists ? wal_box.wal_slot() : std::string();
  return lakh::pg::with_connection(p, [&](pqxx::connection &c) {
    pqxx::read_transaction t(c); // one snapshot for every figure
    const auto prm = read_params(t);
    const auto expected = lakh::fake::reference_totals(prm.seed, prm.rows);
    verify_result v;
    auto add = [&](std::string what, auto want, auto got) {
      v.checks.push_back({std::move(what), std::to_string(want), std::to_string(got)});
    };
    const auto totals = fold(t.exec("SELECT tenant_id, rows, cents FROM billing.tenant_totals"));
    add("tenants billed", expected.tenants(), totals.tenants);
    add("rows billed (tenant totals)", expected.rows(), totals.rows);
    add("total_cents (tenant totals)", expected.total_cents(), totals.cents);
    add("checksum (tenant totals)", expected.checksum(), totals.checksum);
    // The raw rows, rated by SQL: an independent recomputation of the spec's rule.
    const auto raw = fold(
        t.exec("SELECT tenant_id, count(*), sum(CASE WHEN quantity <= 1000 THEN quantity * p "
               "ELSE 1000 * p + ((quantity - 1000) * p * 9) / 10 END) FROM billing.usage "
               "JOIN (VALUES (0, 1), (1, 3), (2, 2), (3, 50)) AS price(metric, p) USING (metric) "
               "GROUP BY tenant_id"));
    add("usage rows in the table", expected.rows(), raw.rows);
    add("checksum (usage rows rated by SQL)", expected.checksum(), raw.checksum);
    const auto invoices = fold(t.exec("SELECT tenant_id, rows, cents FROM billing.invoices"));
    add("invoices", expected.tenants(), invoices.tenants);
    add("checksum (invoices)", expected.checksum(), invoices.checksum);
    // rows = deliveries here: each tenant's event must have reached the business table once.
    const auto events = fold(t.exec("SELECT tenant_id, deliveries, cents FROM billing.notified"));
    add("invoice events counted (once each)", invoices.tenants, events.tenants);
    add("deliveries counted (duplicates would show here)", events.tenants, events.rows);
    add("checksum (invoice events)", invoices.checksum, events.checksum);
    auto jobs = t.exec("SELECT count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE "
                       "state <> 'done') FROM billing.jobs");
    add("jobs done", (prm.rows + prm.batch - 1) / prm.batch, jobs[0][0].as<std::uint64_t>());
    add("jobs not done", 0, jobs[0][1].as<std::uint64_t>());
    const auto rows = t.exec("SELECT count(*) FROM billing.outbox")[0][0].as<std::uint64_t>();
    if (!slot.exists) {
      add("outbox events unpublished", 0, rows);
    } else {
      add("outbox events parked (the wal store's rows)", 0, rows);
      // Logical messages after the slot's confirmed position: a relay would send them again.
      // Peeking decodes without consuming; it needs the slot free of a relay.
      v.checks.push_back(
          {"outbox events the wal slot has not confirmed", "0",
           slot.active
               ? "unknown: a relay streams from the slot"
               : lakh::pg::detail::exec(t,
                                        "SELECT count(*) FROM pg_logical_slot_peek_binary_changes("
                                        "$1::text, NULL, NULL, 'proto_version', '1', "
                                        "'publication_names', $1, 'messages', 'true') "
                                        "WHERE get_byte(data, 0) = ascii('M')",
                                        slot_name)[0][0]
                     .as<std::string>()});
    }
    v.total_cents = totals.cents;
    v.checksum = totals.checksum;
    v.invoices = invoices.tenants;
    v.events = events.tenants;
    return v;
  });
}

} // namespace billing
