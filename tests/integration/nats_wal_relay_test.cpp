// lakh::pg::wal_relay to a real NATS JetStream (and PostgreSQL) of scripts/services, its relay
// processes SIGKILLed at random points and between a publish and the report of the position
// while producers commit: every committed event reaches the stream exactly once (JetStream
// drops the republished ids) and a consumer with lakh::pg::inbox handles each exactly once.
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/nats/pull_consumer.hpp>
#include <lakh/pg/inbox.hpp>
#include <lakh/pg/wal_relay.hpp>

#include <support/env.hpp>
#include <support/nats.hpp>
#include <support/process.hpp>
#include <support/wal_outbox.hpp>

#include <pqxx/pqxx>

#include <doctest/doctest.h>

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace std::chrono_literals;

namespace {

// Commits events "<producer>-<n>" (key "<producer>-k<n % 3>") in transactions of 1..4 events,
// and some transactions that roll back, until stopped; records what committed.
class producer {
public:
  producer(lakh::test::wal_outbox &db, std::string name, std::string subject)
      : db_(&db), name_(std::move(name)), subject_(std::move(subject)),
        thread_([this](std::stop_token st) { run(st); }) {}
  producer(const producer &) = delete;
  producer &operator=(const producer &) = delete;
  ~producer() { stop(); }

  void stop() {
    thread_.request_stop();
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  std::vector<std::string> committed() {
    std::lock_guard g(mu_);
    return committed_;
  }

private:
  void run(std::stop_token st) {
    std::minstd_rand rng(static_cast<unsigned>(::getpid()) + std::hash<std::string>{}(name_));
    int n = 0;
    while (!st.stop_requested() && n < 2000) {
      const auto size = 1 + static_cast<int>(rng() % 4);
      const bool commit = rng() % 8 != 0;
      std::vector<std::string> events;
      auto c = db_->pool.acquire();
      pqxx::work w(*c);
      w.exec("SET LOCAL synchronous_commit = on");
      for (int i = 0; i < size; ++i, ++n) {
        events.push_back(name_ + "-" + std::to_string(n));
        (void)db_->box.enqueue(w, subject_, name_ + "-k" + std::to_string(n % 3), events.back());
      }
      if (commit) {
        w.commit();
        std::lock_guard g(mu_);
        committed_.insert(committed_.end(), events.begin(), events.end());
      } else {
        w.abort();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1 + rng() % 4));
    }
  }

  lakh::test::wal_outbox *db_;
  std::string name_;
  std::string subject_;
  std::mutex mu_;
  std::vector<std::string> committed_;
  std::jthread thread_;
};

// The child's first line, waiting up to 30 s for it (a child that never publishes FAILs the
// test instead of hanging it; its owner kills it).
std::string first_line(lakh::test::child_process &c) {
  pollfd fd{::fileno(c.from_child()), POLLIN, 0};
  if (::poll(&fd, 1, 30000) != 1) {
    FAIL("the relay child printed nothing within 30 s");
  }
  return c.read_line();
}

} // namespace

TEST_CASE("nats.wal_relay.killed_relays_lose_nothing_and_duplicate_nothing" *
          doctest::timeout(180)) {
  const std::string tag = std::to_string(::getpid());
  const std::string subject = "lakhwal" + tag + ".invoice";
  const std::string prefix = "w" + tag + "-";
  lakh::nats::jetstream js(lakh::test::nats_url());
  lakh::test::scratch_stream stream(js, {"LAKH_WAL_" + tag, {subject}});
  lakh::test::wal_outbox db("wal_kill");
  auto child = [&](const char *mode) {
    return lakh::test::spawn_child(
        {LAKH_WAL_RELAY_CHILD, db.db.url(), db.box.table(), lakh::test::nats_url(), prefix, mode});
  };
  auto kill_it = [](lakh::test::child_process &c) {
    REQUIRE(::kill(c.pid(), SIGKILL) == 0);
    const int status = c.wait();
    CHECK(WIFSIGNALED(status)); // it was still relaying: it never stops on its own
  };

  std::mt19937 rng(static_cast<unsigned>(::getpid()));
  std::set<std::string> committed;
  auto p1 = std::make_unique<producer>(db, "p1", subject);
  auto p2 = std::make_unique<producer>(db, "p2", subject);
  for (int round = 0; round < 9; ++round) {
    if (round % 2 == 0) {
      // Killed after the broker acknowledged a publish and before the position was reported:
      // the next relay sends those events again. A fresh event guarantees that the child has
      // something to publish (the producers may be done).
      const auto fresh = "fresh-" + std::to_string(round);
      (void)db.add(subject, "fresh-k", fresh);
      committed.insert(fresh);
      auto c = child("pause");
      const auto line = first_line(c);
      INFO("child: " << line);
      CHECK(line.rfind("published ", 0) == 0);
      kill_it(c);
    } else {
      auto c = child("run");
      std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 350));
      kill_it(c);
    }
    if (round == 6) {
      p1->stop();
      p2->stop();
    }
  }
  for (auto *p : {p1.get(), p2.get()}) {
    const auto events = p->committed();
    committed.insert(events.begin(), events.end());
  }
  REQUIRE(committed.size() > 50);

  // The last kill came right after a publish: the draining relay sends those again.
  lakh::nats::outbox_publisher pub(js, {prefix});
  {
    lakh::pg::wal_relay_options o;
    o.standby_poll = 20ms;
    lakh::pg::wal_relay relay(db.box, pub, o);
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (js.stream_messages(stream.name()) < committed.size() &&
           std::chrono::steady_clock::now() < deadline) {
      (void)relay.run_once(100ms);
    }
    // A few more rounds: anything beyond the committed events would show up now.
    for (int i = 0; i < 3; ++i) {
      (void)relay.run_once(50ms);
    }
    CHECK(relay.metrics().duplicates.value() > 0); // the unconfirmed tail came again
    MESSAGE(committed.size() << " committed; drain: " << relay.metrics().published.value()
                             << " published, " << relay.metrics().duplicates.value()
                             << " duplicates");
  }

  // The stream: each committed event once, nothing else, each key in commit order.
  const auto stored = js.stream_messages(stream.name());
  CHECK(stored == committed.size());
  std::set<std::string> ids;
  std::set<std::string> payloads;
  std::map<std::string, int> last; // producer key -> last event number
  bool in_order = true;
  for (std::uint64_t seq = 1; seq <= stored; ++seq) {
    const auto m = lakh::test::get_message(js, stream.name(), seq);
    ids.insert(m.id);
    payloads.insert(m.payload);
    CHECK(m.id.rfind(prefix, 0) == 0);
    if (m.payload.rfind("fresh-", 0) != 0) {
      const auto dash = m.payload.find('-');
      const int n = std::stoi(m.payload.substr(dash + 1));
      const auto key = m.payload.substr(0, dash) + std::to_string(n % 3);
      in_order = in_order && (last.count(key) == 0 || last[key] < n);
      last[key] = n;
    }
  }
  CHECK(ids.size() == stored);  // no id twice
  CHECK(payloads == committed); // nothing lost, nothing rolled back
  CHECK(in_order);

  // A consumer keyed on the Nats-Msg-Id: every event handled exactly once.
  lakh::pg::inbox inbox(db.pool, {"app.inbox"});
  inbox.create_schema();
  {
    auto c = db.pool.acquire();
    pqxx::nontransaction tx(*c);
    tx.exec("CREATE TABLE app.effects (event text NOT NULL)");
  }
  lakh::nats::pull_consumer consumer(js, stream.name(), subject, "walkill" + tag, 5s);
  std::size_t handled = 0;
  std::size_t skipped = 0;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (handled + skipped < stored && std::chrono::steady_clock::now() < deadline) {
    for (auto &m : consumer.fetch(64, 200ms)) {
      auto c = db.pool.acquire();
      pqxx::work w(*c);
      if (inbox.first_delivery(w, "billing", m.id())) {
        lakh::pg::detail::exec(w, "INSERT INTO app.effects VALUES ($1)", std::string(m.payload()));
        ++handled;
      } else {
        ++skipped;
      }
      w.commit();
      m.ack();
    }
  }
  CHECK(handled == committed.size());
  CHECK(skipped == 0);
  auto c = db.pool.acquire();
  pqxx::nontransaction tx(*c);
  const auto r = tx.exec("SELECT count(*), count(DISTINCT event) FROM app.effects");
  CHECK(r[0][0].as<std::size_t>() == committed.size());
  CHECK(r[0][1].as<std::size_t>() == committed.size());
}
