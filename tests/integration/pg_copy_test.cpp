// Integration tests of lakh::pg::copy_from against a real PostgreSQL: rows and batches from a
// channel, count and sum checks, all-or-nothing on a bad row or a throwing mapping,
// cancellation, quoted names.
#include <lakh/channel.hpp>
#include <lakh/pg/copy.hpp>

#include <support/scratch_database.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace pg = lakh::pg;
using lakh::test::database_url;
using lakh::test::pg::exec;
using lakh::test::pg::scalar;
using lakh::test::pg::unique_name;

namespace {

struct usage {
  std::int64_t id;
  std::string tenant;
  std::int32_t qty;
  std::optional<std::string> note;
};

usage make_usage(std::int64_t i) {
  return {i, "tenant-" + std::to_string(i % 97), static_cast<std::int32_t>(i % 1000),
          i % 10 == 0 ? std::optional<std::string>("tab\there \"q\" \\ nl\n") : std::nullopt};
}

auto to_tuple = [](const usage &u) { return std::make_tuple(u.id, u.tenant, u.qty, u.note); };

const std::vector<std::string> columns{"id", "tenant", "qty", "note"};

struct usage_table {
  usage_table() : url(database_url()), name(unique_name("lakh_usage")) {
    exec(url, "CREATE TABLE " + name +
                  " (id bigint PRIMARY KEY, tenant text NOT NULL, qty int NOT NULL CHECK (qty >= "
                  "0), note text)");
  }
  ~usage_table() {
    try {
      exec(url, "DROP TABLE IF EXISTS " + name);
    } catch (...) {
    }
  }
  long count() const { return scalar<long>(url, "SELECT count(*) FROM " + name); }
  std::string url;
  std::string name;
};

template <class Ch, class Make> std::jthread produce(Ch &ch, std::int64_t n, Make make) {
  return std::jthread([&ch, n, make] {
    for (std::int64_t i = 0; i < n; ++i) {
      if (ch.send(make(i)) != lakh::status::ok) {
        return; // closed by the consumer
      }
    }
    ch.close();
  });
}

} // namespace

TEST_CASE("pg.copy.rows_from_a_channel_count_and_sum" * doctest::timeout(120)) {
  usage_table t;
  pg::pool p(t.url, 1);
  constexpr std::int64_t n = 50000;
  lakh::channel<usage> ch(1024);
  auto producer = produce(ch, n, make_usage);
  auto r = pg::copy_from(p, t.name, columns, ch, to_tuple);
  producer.join();
  CHECK(r.status == lakh::status::ok);
  CHECK(r.rows == static_cast<std::size_t>(n));
  CHECK(t.count() == n);
  std::int64_t want_qty = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    want_qty += i % 1000;
  }
  CHECK(scalar<std::int64_t>(t.url, "SELECT sum(qty) FROM " + t.name) == want_qty);
  CHECK(scalar<std::int64_t>(t.url, "SELECT sum(id) FROM " + t.name) == n * (n - 1) / 2);
  CHECK(scalar<long>(t.url, "SELECT count(note) FROM " + t.name) == n / 10); // NULLs kept
  CHECK(scalar<std::string>(t.url, "SELECT note FROM " + t.name + " WHERE id = 10") ==
        "tab\there \"q\" \\ nl\n"); // escaping round-trips
  CHECK(scalar<long>(t.url, "SELECT count(DISTINCT tenant) FROM " + t.name) == 97);
}

TEST_CASE("pg.copy.batches_from_a_channel" * doctest::timeout(120)) {
  usage_table t;
  pqxx::connection c(t.url);
  pqxx::work tx(c);
  lakh::channel<std::vector<usage>> ch(8);
  auto producer = produce(ch, 100, [](std::int64_t b) {
    std::vector<usage> batch;
    for (std::int64_t i = 0; i < 500; ++i) {
      batch.push_back(make_usage(b * 500 + i));
    }
    return batch;
  });
  auto r = pg::copy_from(tx, t.name, columns, ch, to_tuple);
  producer.join();
  CHECK(r.rows == 50000);
  CHECK(t.count() == 0); // not committed yet: invisible to others
  tx.commit();
  CHECK(t.count() == 50000);
}

TEST_CASE("pg.copy.bad_row_midway_leaves_nothing" * doctest::timeout(120)) {
  usage_table t;
  pg::pool p(t.url, 1);
  SUBCASE("rejected by the server") {
    lakh::channel<usage> ch(256);
    std::atomic<std::int64_t> produced{0};
    auto producer = produce(ch, 1000000, [&produced](std::int64_t i) {
      ++produced;
      auto u = make_usage(i);
      if (i == 30000) {
        u.qty = -1; // violates CHECK (qty >= 0)
      }
      return u;
    });
    CHECK_THROWS_AS(pg::copy_from(p, t.name, columns, ch, to_tuple), pqxx::sql_error);
    producer.join(); // the channel was closed, so the producer did not block forever
    CHECK(ch.is_closed());
    CHECK(produced.load() < 500000); // the rejection was noticed while streaming
  }
  SUBCASE("the mapping throws") {
    lakh::channel<usage> ch(256);
    auto producer = produce(ch, 1000000, make_usage);
    pqxx::connection c(t.url);
    pqxx::work tx(c);
    CHECK_THROWS_WITH_AS(pg::copy_from(tx, t.name, columns, ch,
                                       [](const usage &u) {
                                         if (u.id == 20000) {
                                           throw std::runtime_error("bad usage row 20000");
                                         }
                                         return to_tuple(u);
                                       }),
                         "bad usage row 20000", std::runtime_error);
    producer.join();
    CHECK_THROWS(tx.commit()); // aborted: a partial load cannot be committed
  }
  CHECK(t.count() == 0);
  CHECK(p.stats().replaced == 0); // the connection survived the failed COPY
}

TEST_CASE("pg.copy.server_notices_do_not_lose_rows" * doctest::timeout(120)) {
  // A trigger that raises NOTICEs mid-COPY makes copy_from end and restart its COPY (it
  // cannot tell a notice from an error without ending it): every row must still arrive.
  usage_table t;
  exec(t.url, "CREATE FUNCTION " + t.name +
                  "_notice() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.id % 7000 = 0 "
                  "THEN RAISE NOTICE 'row %', NEW.id; END IF; RETURN NEW; END $$");
  exec(t.url, "CREATE TRIGGER notice BEFORE INSERT ON " + t.name +
                  " FOR EACH ROW EXECUTE "
                  "FUNCTION " +
                  t.name + "_notice()");
  pg::pool p(t.url, 1);
  lakh::channel<usage> ch(1024);
  auto producer = produce(ch, 30000, make_usage);
  auto r = pg::copy_from(p, t.name, columns, ch, to_tuple);
  producer.join();
  CHECK(r.rows == 30000);
  CHECK(t.count() == 30000);
  CHECK(scalar<std::int64_t>(t.url, "SELECT sum(id) FROM " + t.name) == 30000LL * 29999 / 2);
  exec(t.url, "DROP TABLE " + t.name);
  exec(t.url, "DROP FUNCTION " + t.name + "_notice()");
}

TEST_CASE("pg.copy.cancelled_by_stop_token_writes_nothing" * doctest::timeout(60)) {
  usage_table t;
  pg::pool p(t.url, 1);
  lakh::channel<usage> ch(64);
  std::stop_source ss;
  auto producer = produce(ch, 1000000, make_usage);
  std::int64_t seen = 0;
  auto r = pg::copy_from(
      p, t.name, columns, ch,
      [&](const usage &u) {
        if (++seen == 5000) {
          ss.request_stop();
        }
        return to_tuple(u);
      },
      ss.get_token());
  producer.join();
  CHECK(r.status == lakh::status::cancelled);
  CHECK(r.rows == 5000);
  CHECK(t.count() == 0);
}

TEST_CASE("pg.copy.stop_while_waiting_for_rows" * doctest::timeout(60)) {
  usage_table t;
  pg::pool p(t.url, 1);
  lakh::channel<usage> ch(4); // nobody sends: copy_from waits in recv(st)
  std::stop_source ss;
  std::jthread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    ss.request_stop();
  });
  auto r = pg::copy_from(p, t.name, columns, ch, to_tuple, ss.get_token());
  CHECK(r.status == lakh::status::cancelled);
  CHECK(r.rows == 0);
  CHECK(ch.is_closed()); // producers that come later see closed
  CHECK(ch.send(make_usage(1)) == lakh::status::closed);
  CHECK(t.count() == 0);
}

TEST_CASE("pg.copy.quoted_names_and_bad_arguments") {
  auto url = database_url();
  auto table = unique_name("lakh_Mixed");
  exec(url, "CREATE TABLE \"" + table + "\" (\"Id\" int, \"select\" text)");
  pqxx::connection c(url);
  {
    pqxx::work tx(c);
    lakh::channel<std::tuple<int, std::string>> ch(4);
    (void)ch.send({1, "a"});
    (void)ch.send({2, "b"});
    ch.close();
    auto r = pg::copy_from(tx, table, {"Id", "select"}, ch);
    CHECK(r.rows == 2);
    tx.commit();
  }
  CHECK(scalar<long>(url, "SELECT sum(\"Id\") FROM \"" + table + "\"") == 3);
  exec(url, "DROP TABLE \"" + table + "\"");

  pqxx::work tx(c);
  lakh::channel<std::tuple<int>> ch(1);
  CHECK_THROWS_WITH_AS(pg::copy_from(tx, "", {"a"}, ch), "lakh::pg::copy_from: table name is empty",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(pg::copy_from(tx, "t", {}, ch),
                       "lakh::pg::copy_from: no columns given for table \"t\"",
                       std::invalid_argument);
}
