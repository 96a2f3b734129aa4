// Redis stopped and restarted while lakh::redis::idempotency_store is in use (the server that
// scripts/services started: LAKH_SERVICES_DIR, REDIS_URL; `scripts/services stop|start redis`).
// Runs serially (RUN_SERIAL): other tests would see the outage.
#include <lakh/redis/idempotency_store.hpp>

#include <servers.hpp>
#include <support/env.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>

#include <unistd.h>

namespace {

using namespace std::chrono_literals;

bool redis_answers(const lakh::redis::connection_options &o) {
  try {
    lakh::redis::connection c(o);
    auto r = c.command({"PING"});
    return r->type == REDIS_REPLY_STATUS;
  } catch (const lakh::redis::redis_error &) {
    return false;
  }
}

/// The Redis server of scripts/services, stopped (once it no longer answers) or started again
/// on its port (once it answers), through `scripts/services stop|start redis`.
void redis(std::string_view action, const lakh::redis::connection_options &o) {
  REQUIRE_NOTHROW(lakh_examples::services(action, "redis"));
  REQUIRE(redis_answers(o) == (action == "start"));
}

} // namespace

TEST_CASE("idempotency.redis.restart.outage_is_an_error_and_never_runs_twice" *
          doctest::timeout(60)) {
  auto opts = lakh::redis::parse_url(lakh::test::redis_url());
  opts.connect_timeout = 500ms;
  opts.command_timeout = 500ms;
  lakh::redis::connection_pool pool(opts);
  // A prefix of this process: scripts/test runs every preset's tests against one server.
  lakh::redis::idempotency_store store(pool,
                                       {"lakh:test:restart:" + std::to_string(::getpid()) + ":"});
  lakh::idempotency_options o;
  o.wait = 0ms;
  o.lease = 1s;
  lakh::idempotency_guard g(store, o);
  const auto fp = lakh::fingerprint("POST", "/x", "");
  std::atomic<int> runs{0};
  auto op = [&] {
    runs.fetch_add(1);
    return lakh::stored_response{201, "ok"};
  };

  REQUIRE(g.run("t", "before", fp, op).outcome == lakh::idempotency_outcome::executed);
  REQUIRE(g.run("t", "before", fp, op).outcome == lakh::idempotency_outcome::replayed);
  CHECK(runs.load() == 1);

  // Redis goes down: every call is a clear error and no operation starts.
  redis("stop", opts);
  for (int i = 0; i < 3; ++i) {
    try {
      (void)g.run("t", "during", fp, op);
      FAIL("no exception while Redis is down");
    } catch (const lakh::redis::redis_error &e) {
      CHECK(std::string(e.what()).find("127.0.0.1:" + std::to_string(opts.port)) !=
            std::string::npos);
    }
  }
  CHECK(runs.load() == 1);

  // Back up: the pool's dead connections are replaced transparently.
  redis("start", opts);
  auto r = g.run("t", "during", fp, op);
  CHECK(r.outcome == lakh::idempotency_outcome::executed);
  CHECK(g.run("t", "during", fp, op).outcome == lakh::idempotency_outcome::replayed);
  CHECK(runs.load() == 2);

  // Redis dies DURING an operation: the operation ran, its completion cannot be written,
  // the guard throws (the documented window).
  try {
    (void)g.run("t", "mid", fp, [&] {
      runs.fetch_add(1);
      redis("stop", opts);
      return lakh::stored_response{201, "lost"};
    });
    FAIL("no exception");
  } catch (const lakh::redis::redis_error &) {
  }
  CHECK(runs.load() == 3);
  redis("start", opts);
  // Without persistence the restart lost every record (documented): "before" is new again.
  CHECK(g.run("t", "before", fp, op).outcome == lakh::idempotency_outcome::executed);
}
