// lakh::nats::consume against the NATS JetStream of scripts/services: messages are settled by
// the handler's verdict (ack, nak, leave, a throw), a batch handler settles its whole batch,
// bad options are refused before any request, and a stop ends the loop within a fetch. The
// loop across a server restart is in nats_restart_test.cpp (it must run alone).
#include <lakh/nats/pull_consumer.hpp>

#include <support/env.hpp>
#include <support/nats.hpp>

#include <doctest/doctest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::string tag() {
  return std::to_string(::getpid());
}

/// Publishes payloads "0".."n-1" on `subject` (ids prefix + i); REQUIREs every ack.
void publish(lakh::nats::jetstream &js, const std::string &subject, const std::string &prefix,
             int n) {
  std::vector<lakh::nats::message> msgs;
  msgs.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    msgs.push_back({subject, std::to_string(i), prefix + std::to_string(i)});
  }
  REQUIRE(js.publish_batch(msgs).all_acknowledged());
}

/// Waits up to `limit` for `done()`.
template <class Pred> bool eventually(Pred done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

/// Runs consume(js, o, handle) on a thread until `done()` (up to 30 s), then `linger` more;
/// returns whether done() came true.
template <class Handler, class Pred>
bool consume_until(lakh::nats::jetstream &js, const lakh::nats::consume_options &o, Handler &handle,
                   Pred done, std::chrono::milliseconds linger = 0ms) {
  std::stop_source stop;
  std::jthread loop([&] { lakh::nats::consume(js, o, handle, stop.get_token()); });
  const bool ok = eventually(done, 30s);
  std::this_thread::sleep_for(linger);
  stop.request_stop();
  loop.join();
  return ok;
}

} // namespace

TEST_CASE("nats.consume.settles_each_message_by_its_verdict" * doctest::timeout(90)) {
  lakh::nats::jetstream js(lakh::test::nats_url());
  const std::string t = tag();
  lakh::test::scratch_stream stream(js, {"LAKH_CONSUME_" + t, {"lakhconsume" + t + ".>"}});
  const std::string subject = "lakhconsume" + t + ".ev";
  constexpr int n = 40;
  publish(js, subject, "v" + t + "-", n);

  std::mutex mu;
  std::map<int, std::vector<std::uint64_t>> deliveries; // payload -> delivery counts seen
  std::set<int> acked;
  std::atomic<int> errors{0};
  lakh::nats::consume_options o{stream.name(), subject, "verdicts" + t, 1s};
  o.batch = 8;
  o.retry = lakh::backoff(10ms, 50ms);
  o.on_error = [&](const std::exception &e) {
    CHECK(std::string(e.what()) == "handler failed");
    ++errors;
  };
  // First deliveries: i % 4 == 0 acked, 1 nak'ed, 2 left for ack_wait, 3 a throw (nak).
  auto handle = [&](lakh::nats::delivery &d) {
    const int i = std::stoi(std::string(d.payload()));
    std::lock_guard g(mu);
    deliveries[i].push_back(d.delivery_count());
    if (d.delivery_count() == 1 && i % 4 == 1) {
      return lakh::nats::verdict::nak;
    }
    if (d.delivery_count() == 1 && i % 4 == 2) {
      return lakh::nats::verdict::leave;
    }
    if (d.delivery_count() == 1 && i % 4 == 3) {
      throw std::runtime_error("handler failed");
    }
    acked.insert(i);
    return lakh::nats::verdict::ack;
  };
  const auto all_acked = [&] {
    std::lock_guard g(mu);
    return acked.size() == n;
  };
  // Lingers past ack_wait: an acked message that came back would be seen.
  CHECK(consume_until(js, o, handle, all_acked, 1500ms));

  CHECK(errors.load() == n / 4);
  for (int i = 0; i < n; ++i) {
    const std::vector<std::uint64_t> once{1};
    const std::vector<std::uint64_t> twice{1, 2};
    CHECK_MESSAGE(deliveries[i] == (i % 4 == 0 ? once : twice), "message " << i);
  }
}

TEST_CASE("nats.consume.batch_handler_settles_the_whole_batch" * doctest::timeout(90)) {
  lakh::nats::jetstream js(lakh::test::nats_url());
  const std::string t = tag();
  lakh::test::scratch_stream stream(js, {"LAKH_CONSUMEB_" + t, {"lakhconsumeb" + t + ".>"}});
  const std::string subject = "lakhconsumeb" + t + ".ev";
  constexpr int n = 50;
  publish(js, subject, "b" + t + "-", n);

  std::mutex mu;
  std::map<int, int> seen;
  std::set<int> acked;
  int calls = 0;
  std::size_t first_batch = 0;
  lakh::nats::consume_options o{stream.name(), subject, "batches" + t, 5s};
  o.batch = 16;
  o.retry = lakh::backoff(10ms, 50ms);
  // The first batch is nak'ed as a whole: all of it comes back once; every later one is acked.
  auto handle = [&](std::span<lakh::nats::delivery> batch) {
    std::lock_guard g(mu);
    CHECK(batch.size() <= 16);
    for (auto &d : batch) {
      ++seen[std::stoi(std::string(d.payload()))];
    }
    if (calls++ == 0) {
      first_batch = batch.size();
      return lakh::nats::verdict::nak;
    }
    for (auto &d : batch) {
      acked.insert(std::stoi(std::string(d.payload())));
    }
    return lakh::nats::verdict::ack;
  };
  CHECK(consume_until(js, o, handle, [&] {
    std::lock_guard g(mu);
    return acked.size() == n;
  }));

  std::size_t twice = 0;
  for (int i = 0; i < n; ++i) {
    CHECK(seen[i] >= 1);
    CHECK(seen[i] <= 2);
    twice += seen[i] == 2 ? 1U : 0U;
  }
  CHECK(first_batch >= 1);
  CHECK(twice == first_batch);
}

TEST_CASE("nats.consume.refuses_bad_options_and_stops_within_a_fetch" * doctest::timeout(60)) {
  lakh::nats::jetstream js(lakh::test::nats_url());
  const std::string t = tag();
  lakh::test::scratch_stream stream(js, {"LAKH_CONSUMES_" + t, {"lakhconsumes" + t + ".>"}});
  const std::string subject = "lakhconsumes" + t + ".ev";
  auto ack_all = [](lakh::nats::delivery &) {};
  std::stop_source never;
  const lakh::nats::consume_options good{stream.name(), subject, "stops" + t};
  for (const auto &bad : {lakh::nats::consume_options{"", subject, "d"},
                          lakh::nats::consume_options{stream.name(), "", "d"},
                          lakh::nats::consume_options{stream.name(), subject, ""}}) {
    CHECK_THROWS_AS(lakh::nats::consume(js, bad, ack_all, never.get_token()),
                    std::invalid_argument);
  }
  auto zero_batch = good;
  zero_batch.batch = 0;
  CHECK_THROWS_WITH_AS(lakh::nats::consume(js, zero_batch, ack_all, never.get_token()),
                       doctest::Contains("batch (0)"), std::invalid_argument);
  auto zero_wait = good;
  zero_wait.fetch_wait = 0ms;
  CHECK_THROWS_AS(lakh::nats::consume(js, zero_wait, ack_all, never.get_token()),
                  std::invalid_argument);

  // An idle loop (nothing to fetch) ends soon after stop: within one fetch_wait.
  auto quick = good;
  quick.fetch_wait = 100ms;
  std::stop_source stop;
  std::atomic<bool> returned{false};
  std::jthread loop([&] {
    lakh::nats::consume(js, quick, ack_all, stop.get_token());
    returned = true;
  });
  std::this_thread::sleep_for(300ms);
  CHECK_FALSE(returned.load());
  const auto asked = std::chrono::steady_clock::now();
  stop.request_stop();
  loop.join();
  CHECK(returned.load());
  CHECK(std::chrono::steady_clock::now() - asked < 2s);
}

TEST_CASE("nats.consume.reports_a_missing_stream_and_retries" * doctest::timeout(60)) {
  lakh::nats::jetstream js(lakh::test::nats_url());
  const std::string t = tag();
  lakh::nats::consume_options o{"LAKH_CONSUME_LATE_" + t, "lakhconsumel" + t + ".ev", "late" + t};
  o.retry = lakh::backoff(10ms, 100ms);
  std::atomic<int> errors{0};
  o.on_error = [&](const std::exception &e) {
    CHECK(std::string(e.what()).find(js.url()) != std::string::npos);
    ++errors;
  };
  std::atomic<int> handled{0};
  std::stop_source stop;
  std::jthread loop([&] {
    lakh::nats::consume(
        js, o, [&](lakh::nats::delivery &) { ++handled; }, stop.get_token());
  });
  // No stream yet: the consumer cannot be created; the loop reports it and keeps trying.
  CHECK(eventually([&] { return errors.load() >= 2; }, 10s));
  // Once the stream exists, the next attempt binds and consumes.
  lakh::test::scratch_stream stream(js, {o.stream, {"lakhconsumel" + t + ".>"}});
  publish(js, o.subject, "l" + t + "-", 10);
  CHECK(eventually([&] { return handled.load() == 10; }, 20s));
  stop.request_stop();
  loop.join();
}

TEST_CASE("nats.fetch.libnats_before_3_8_2_is_asked_one_message_at_a_time") {
  using lakh::nats::detail::fetch_overflows;
  CHECK(fetch_overflows(0x030401U)); // Debian 12
  CHECK(fetch_overflows(0x030801U));
  CHECK(fetch_overflows(0x020000U));
  CHECK_FALSE(fetch_overflows(0x030802U)); // nats.c #749 fixed
  CHECK_FALSE(fetch_overflows(0x030900U));
  CHECK_FALSE(fetch_overflows(0x040000U));
}

TEST_CASE("nats.fetch.gathers_ready_messages_up_to_max_one_request_at_a_time" *
          doctest::timeout(60)) {
  // With an affected libnats each request asks for one message (nats.c #749); a fetch still
  // hands over up to `max` of those the server has ready, never more.
  lakh::nats::jetstream js(lakh::test::nats_url());
  const std::string t = tag();
  lakh::test::scratch_stream stream(js, {"LAKH_FETCH1_" + t, {"lakhfetch1" + t + ".>"}});
  const std::string subject = "lakhfetch1" + t + ".ev";
  constexpr int n = 5;
  publish(js, subject, "f" + t + "-", n);
  lakh::nats::pull_consumer c(js, stream.name(), subject, "fetch1" + t, 5s);
  std::set<std::string> got;
  auto first = c.fetch(3, 2s);
  CHECK(first.size() == 3);
  for (int round = 0; round < 4 * n && got.size() + first.size() < n; ++round) {
    auto rest = c.fetch(10, 2s);
    REQUIRE_FALSE(rest.empty());
    CHECK(rest.size() <= 2);
    for (auto &d : rest) {
      got.insert(std::string(d.payload()));
      d.ack();
    }
  }
  for (auto &d : first) {
    got.insert(std::string(d.payload()));
    d.ack();
  }
  CHECK(got.size() == n);
  CHECK(c.fetch(10, 100ms).empty()); // nothing left: an empty batch after the wait
}
