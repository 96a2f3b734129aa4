// lakh::idempotency_guard over lakh::redis::idempotency_store against a real Redis
// (REDIS_URL from scripts/services): the shared suite, where the "business write" is an INCR
// of a counter in Redis, plus Redis-specific cases (fencing, outage, the connection layer).
#include <lakh/redis/idempotency_store.hpp>

#include <support/env.hpp>
#include <support/idempotency_suite.hpp>

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;

std::string unique_prefix() {
  static std::atomic<int> n{0};
  return "lakh:test:idem:" + std::to_string(::getpid()) + ":" + std::to_string(n.fetch_add(1)) +
         ":";
}

struct redis_fixture {
  using store_type = lakh::redis::idempotency_store;
  static constexpr long throwing_op_persists = 1; // the INCR happened before the throw

  redis_fixture()
      : prefix_(unique_prefix()), pool_(lakh::test::redis_url()), store_(pool_, {prefix_}) {}
  ~redis_fixture() {
    try {
      auto c = pool_.acquire();
      auto keys = c->command({"KEYS", prefix_ + "*"});
      for (std::size_t i = 0; i < keys->elements; ++i) {
        (void)c->command({"DEL", std::string(keys->element[i]->str, keys->element[i]->len)});
      }
    } catch (...) {
    }
  }
  redis_fixture(const redis_fixture &) = delete;
  redis_fixture &operator=(const redis_fixture &) = delete;

  store_type &store() { return store_; }

  void business_write() {
    auto c = pool_.acquire();
    (void)c->command({"INCR", prefix_ + "business_count"});
  }

  auto op(int status, std::string body, std::chrono::milliseconds work = {}) {
    return [this, status, body = std::move(body), work] {
      business_write();
      if (work.count() > 0) {
        std::this_thread::sleep_for(work);
      }
      return lakh::stored_response{status, body};
    };
  }
  auto throwing_op() {
    return [this]() -> lakh::stored_response {
      business_write();
      throw std::runtime_error("boom");
    };
  }
  long executions() {
    auto c = pool_.acquire();
    auto r = c->command({"GET", prefix_ + "business_count"});
    return r->type == REDIS_REPLY_STRING ? std::stol(std::string(r->str, r->len)) : 0;
  }

  std::string prefix_;
  lakh::redis::connection_pool pool_;
  store_type store_;
};

} // namespace

LAKH_IDEMPOTENCY_SUITE("redis", redis_fixture)

TEST_CASE("idempotency.redis.lease_lost_is_fenced" * doctest::timeout(30)) {
  redis_fixture fx;
  auto o = lakh::test::idem::fast_options();
  o.lease = 100ms;
  o.wait = 0ms;
  lakh::idempotency_guard g(fx.store(), o);
  auto fp = lakh::fingerprint("POST", "/x", "");
  lakh::idempotency_result slow;
  std::thread t([&] { slow = g.run("t", "k", fp, fx.op(201, "slow", 600ms)); });
  std::this_thread::sleep_for(350ms); // the slow owner's lease has ended
  auto fast = g.run("t", "k", fp, fx.op(201, "fast"));
  t.join();
  CHECK(fast.outcome == lakh::idempotency_outcome::executed);
  CHECK(slow.outcome == lakh::idempotency_outcome::lease_lost);
  auto r = g.run("t", "k", fp, fx.op(500, "no"));
  CHECK(r.outcome == lakh::idempotency_outcome::replayed);
  CHECK(r.response.body == "fast"); // the late owner did not overwrite it
}

TEST_CASE("idempotency.redis.server_down_is_a_clear_error_and_nothing_runs") {
  // Nothing listens on port 1.
  lakh::redis::connection_pool dead("redis://127.0.0.1:1");
  lakh::redis::idempotency_store s(dead);
  lakh::idempotency_guard g(s);
  int ran = 0;
  try {
    (void)g.run("t", "k", 1, [&] {
      ++ran;
      return lakh::stored_response{200, ""};
    });
    FAIL("no exception");
  } catch (const lakh::redis::redis_error &e) {
    std::string what = e.what();
    CHECK(what.find("cannot connect to 127.0.0.1:1") != std::string::npos);
    CHECK(what.find("refused") != std::string::npos);
  }
  CHECK(ran == 0);
}

TEST_CASE("idempotency.redis.parse_url") {
  auto o = lakh::redis::parse_url("redis://10.0.0.5:7000/3");
  CHECK(o.host == "10.0.0.5");
  CHECK(o.port == 7000);
  CHECK(o.db == 3);
  auto d = lakh::redis::parse_url("redis://myhost");
  CHECK(d.host == "myhost");
  CHECK(d.port == 6379);
  CHECK(d.db == 0);
  CHECK_THROWS_WITH_AS(lakh::redis::parse_url("http://x"),
                       "lakh::redis::parse_url: \"http://x\": must start with redis://",
                       std::invalid_argument);
  CHECK_THROWS_AS(lakh::redis::parse_url("redis://h:99999"), std::invalid_argument);
  CHECK_THROWS_AS(lakh::redis::parse_url("redis://h:abc"), std::invalid_argument);
  auto a = lakh::redis::parse_url("redis://app:s3cr%40t@cache.example:6380/2");
  CHECK(a.user == "app");
  CHECK(a.password == "s3cr@t"); // percent-decoded
  CHECK(a.host == "cache.example");
  CHECK(a.port == 6380);
  CHECK(a.db == 2);
  auto p = lakh::redis::parse_url("redis://:only-a-password@h");
  CHECK(p.user.empty());
  CHECK(p.password == "only-a-password");
  CHECK(p.host == "h");
  // An error names the URL with its password masked.
  try {
    (void)lakh::redis::parse_url("redis://app:hunter2@h:99999");
    FAIL("no exception");
  } catch (const std::invalid_argument &e) {
    CHECK(std::string(e.what()).find("hunter2") == std::string::npos);
    CHECK(std::string(e.what()).find("redis://app:***@h:99999") != std::string::npos);
  }
  CHECK_THROWS_AS(lakh::redis::parse_url("redis://a:b%zz@h"), std::invalid_argument);
  CHECK_THROWS_WITH_AS(lakh::redis::parse_url("redis://hunter2@h"),
                       "lakh::redis::parse_url: \"redis://***@h\": credentials must be "
                       "user:password or :password",
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(lakh::redis::parse_url("rediss://h:6380"),
                       doctest::Contains("no TLS support"), std::invalid_argument);
}

namespace {
/// An ACL user created for one test case and deleted after it.
struct acl_user {
  lakh::redis::connection admin = lakh::redis::connection::connect(lakh::test::redis_url());
  std::string name = "lakh_test_" + std::to_string(::getpid());
  explicit acl_user(const std::string &password, const std::string &keys) {
    (void)admin.command({"ACL", "DELUSER", name});
    (void)admin.command({"ACL", "SETUSER", name, "on", ">" + password, "~" + keys, "+@all"});
  }
  ~acl_user() {
    try {
      (void)admin.command({"ACL", "DELUSER", name});
    } catch (...) {
    }
  }
  acl_user(const acl_user &) = delete;
  acl_user &operator=(const acl_user &) = delete;
};

std::string url_with(const std::string &credentials) {
  auto o = lakh::redis::parse_url(lakh::test::redis_url());
  return "redis://" + credentials + "@" + o.host + ":" + std::to_string(o.port);
}
} // namespace

TEST_CASE("idempotency.redis.auth_with_an_acl_user") {
  const std::string prefix = unique_prefix();
  acl_user u("pass:w/rd", prefix + "*");
  // The password's ':' and '/' are percent-encoded in the URL.
  lakh::redis::connection_pool pool(url_with(u.name + ":pass%3Aw%2Frd"));
  auto who = pool.command({"ACL", "WHOAMI"});
  CHECK(std::string(who->str, who->len) == u.name);
  // Authenticated as that user: its key pattern applies.
  CHECK_THROWS_WITH_AS((void)pool.command({"SET", "not-" + prefix, "x"}),
                       doctest::Contains("NOPERM"), lakh::redis::redis_error);
  lakh::redis::idempotency_store store(pool, {prefix});
  auto o = lakh::test::idem::fast_options();
  auto b = store.begin("t", "k", 1, o);
  REQUIRE(b.state == lakh::begin_state::acquired);
  CHECK(store.release("t", "k", b.token));
}

TEST_CASE("idempotency.redis.wrong_password_is_a_clear_error_without_the_password") {
  acl_user u("right-password", "nothing:*");
  try {
    (void)lakh::redis::connection::connect(url_with(u.name + ":wrong-password"));
    FAIL("no exception");
  } catch (const lakh::redis::redis_error &e) {
    const std::string what = e.what();
    CHECK(what.find("wrong-password") == std::string::npos);
    CHECK(what.find("cannot authenticate as " + u.name) != std::string::npos);
    CHECK(what.find("WRONGPASS") != std::string::npos);
  }
}

TEST_CASE("idempotency.redis.connection_errors_name_the_server") {
  auto c = lakh::redis::connection::connect(lakh::test::redis_url());
  auto pong = c.command({"PING"});
  CHECK(std::string(pong->str, pong->len) == "PONG");
  try {
    (void)c.command({"NOSUCHCOMMAND"});
    FAIL("no exception");
  } catch (const lakh::redis::redis_error &e) {
    CHECK(std::string(e.what()).find("NOSUCHCOMMAND on 127.0.0.1:") != std::string::npos);
  }
  CHECK_FALSE(c.broken()); // an error reply does not break the connection
}

TEST_CASE("idempotency.redis.resent_begin_after_a_lost_reply_acquires") {
  // The first SET NX reached Redis but its reply was lost (the connection broke): the record
  // holds the caller's own token. Sending the same begin again must acquire, not report
  // running (which would block the key for the whole lease).
  redis_fixture fx;
  auto o = lakh::test::idem::fast_options();
  const std::uint64_t fp = lakh::fingerprint("POST", "/x", "");
  const std::string nonce = "resent-nonce";
  const std::string value = "R|" + lakh::detail::to_hex16(fp) + "|" + nonce;
  const std::string k = fx.prefix_ + "1:t:k";
  (void)fx.pool_.command({"SET", k, value, "NX", "PX", std::to_string(o.lease.count())});
  auto b = fx.store().begin("t", "k", fp, o, nonce);
  REQUIRE(b.state == lakh::begin_state::acquired);
  CHECK(b.token == value);
  // The token owns the record: completing it works and a later begin replays.
  CHECK(fx.store().complete("t", "k", b.token, {201, "done"}, o));
  auto again = fx.store().begin("t", "k", fp, o);
  CHECK(again.state == lakh::begin_state::completed);
  CHECK(again.response.body == "done");
  // Another caller's nonce still finds the record taken.
  auto other = fx.store().begin("t", "k2", fp, o, "first");
  REQUIRE(other.state == lakh::begin_state::acquired);
  CHECK(fx.store().begin("t", "k2", fp, o, "second").state == lakh::begin_state::running);
}
