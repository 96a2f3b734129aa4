#pragma once
// examples/saas/billing/usage.hpp: usage rows as billing receives them: validated, rated with
// the spec's arithmetic (lakh::fake::charge_cents) and written in one statement; and the
// accounts kept from subscription.changed events.

#include "../common/events.hpp"
#include "../common/period.hpp"
#include "saas.grpc.pb.h"

#include <lakh/fake/usage.hpp>

#include <pqxx/pqxx>

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace billing {

namespace v1 = lakh::saas::v1;

inline constexpr int max_rows = 10000;
inline constexpr std::int64_t max_quantity = 1'000'000'000;
inline constexpr std::int64_t min_ts = 946684800;  // 2000-01-01T00:00:00Z
inline constexpr std::int64_t max_ts = 4102444800; // 2100-01-01T00:00:00Z

/// The first problem of a request's rows ("rows[3].metric must be 0..3, got 7"), or "".
inline std::string invalid_rows(const v1::IngestUsageRequest &req) {
  if (req.rows_size() < 1 || req.rows_size() > max_rows) {
    return "rows must hold 1.." + std::to_string(max_rows) + " rows, got " +
           std::to_string(req.rows_size());
  }
  for (int i = 0; i < req.rows_size(); ++i) {
    const auto &r = req.rows(i);
    const auto field = "rows[" + std::to_string(i) + "].";
    if (r.id() < 1) {
      return field + "id must be >= 1, got " + std::to_string(r.id());
    }
    if (r.user_id() < 0) {
      return field + "user_id must be >= 0, got " + std::to_string(r.user_id());
    }
    if (r.metric() < 0 || r.metric() >= static_cast<int>(lakh::fake::metric_count)) {
      return field + "metric must be 0.." + std::to_string(lakh::fake::metric_count - 1) +
             ", got " + std::to_string(r.metric());
    }
    if (r.quantity() < 1 || r.quantity() > max_quantity) {
      return field + "quantity must be 1.." + std::to_string(max_quantity) + ", got " +
             std::to_string(r.quantity());
    }
    if (r.ts_unix() < min_ts || r.ts_unix() >= max_ts) {
      return field + "ts_unix must be within 2000-01-01..2100-01-01 (" + std::to_string(min_ts) +
             ".." + std::to_string(max_ts - 1) + "), got " + std::to_string(r.ts_unix());
    }
  }
  return "";
}

/// A request's rows as PostgreSQL array literals (for unnest), rated; `period_set` holds the
/// distinct periods. Only integers and "YYYY-MM" go in: nothing needs quoting.
struct usage_columns {
  std::string ids = "{", users = "{", metrics = "{", quantities = "{", tss = "{", periods = "{",
              cents = "{", period_set = "{";
};

inline void append_element(std::string &array, std::string_view v) {
  if (array.size() > 1) {
    array += ',';
  }
  array += v;
}

inline usage_columns columns_of(const v1::IngestUsageRequest &req) {
  usage_columns c;
  std::vector<std::string> distinct;
  for (const auto &r : req.rows()) {
    const auto charge = lakh::fake::charge_cents(static_cast<lakh::fake::metric>(r.metric()),
                                                 static_cast<std::uint64_t>(r.quantity()));
    const auto period = saas::period_of(r.ts_unix());
    append_element(c.ids, std::to_string(r.id()));
    append_element(c.users, std::to_string(r.user_id()));
    append_element(c.metrics, std::to_string(r.metric()));
    append_element(c.quantities, std::to_string(r.quantity()));
    append_element(c.tss, std::to_string(r.ts_unix()));
    append_element(c.periods, period);
    append_element(c.cents, std::to_string(charge));
    if (std::find(distinct.begin(), distinct.end(), period) == distinct.end()) {
      distinct.push_back(period);
      append_element(c.period_set, period);
    }
  }
  for (auto *a :
       {&c.ids, &c.users, &c.metrics, &c.quantities, &c.tss, &c.periods, &c.cents, &c.period_set}) {
    *a += '}';
  }
  return c;
}

/// Inserts the rows not ingested before; returns the cents of each inserted row.
inline pqxx::result insert_usage(pqxx::work &w, std::int64_t tenant, const usage_columns &c) {
  return w.exec_params(
      "INSERT INTO billing.usage (tenant_id, id, user_id, metric, quantity, ts, period, cents) "
      "SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::smallint[], $5::bigint[], "
      "$6::bigint[], $7::text[], $8::bigint[]) ON CONFLICT (tenant_id, id) DO NOTHING "
      "RETURNING cents",
      tenant, c.ids, c.users, c.metrics, c.quantities, c.tss, c.periods, c.cents);
}

/// The subscription.changed handler (once per event, in the event's tenant transaction):
/// records the plan unless the account already has this version or a later one (events of a
/// tenant may be redelivered, or arrive late across restarts).
inline void on_subscription_changed(pqxx::work &w, const saas::event &ev) {
  const auto &b = ev.body;
  if (!b.contains("plan") || !b["plan"].is_string() || !b.contains("version") ||
      !b["version"].is_number_integer()) {
    saas::log("billing", "error", ev.trace, "dropped a malformed subscription.changed event",
              {{"event", ev.id}});
    return;
  }
  w.exec_params("INSERT INTO billing.accounts AS a (tenant_id, plan, version) VALUES ($1, $2, $3) "
                "ON CONFLICT (tenant_id) DO UPDATE SET plan = excluded.plan, version = "
                "excluded.version WHERE a.version < excluded.version",
                ev.tenant_id, b["plan"].get<std::string>(), b["version"].get<std::int64_t>());
}

} // namespace billing
