#include <lakh/channel.hpp>

#include <support/tracked.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using lakh::channel;
using lakh::status;

namespace {

template <class T> T make(int i);
template <> int make<int>(int i) {
  return i;
}
template <> std::string make<std::string>(int i) {
  return std::string(40, 'x') + std::to_string(i);
}
template <> std::unique_ptr<int> make<std::unique_ptr<int>>(int i) {
  return std::make_unique<int>(i);
}
template <> lakh::test::tracked make<lakh::test::tracked>(int i) {
  return lakh::test::tracked(i);
}

int value_of(int v) {
  return v;
}
int value_of(const std::string &s) {
  return std::stoi(s.substr(40));
}
int value_of(const std::unique_ptr<int> &p) {
  return *p;
}
int value_of(const lakh::test::tracked &t) {
  return t.value;
}

// Waits (bounded) until pred() holds; returns whether it did.
template <class Pred> bool eventually(Pred pred) {
  for (int i = 0; i < 2000; ++i) {
    if (pred()) {
      return true;
    }
    std::this_thread::sleep_for(1ms);
  }
  return pred();
}

} // namespace

TEST_CASE("channel.construct.zero_capacity_is_rejected") {
  CHECK_THROWS_WITH_AS(channel<int>(0), doctest::Contains("capacity is 0"), std::invalid_argument);
}

TEST_CASE_TEMPLATE("channel.fifo.single_thread", T, int, std::string, std::unique_ptr<int>,
                   lakh::test::tracked) {
  {
    channel<T> ch(4);
    CHECK(ch.capacity() == 4);
    for (int i = 0; i < 4; ++i) {
      CHECK(ch.send(make<T>(i)) == status::ok);
    }
    T extra = make<T>(99);
    CHECK(ch.try_send(std::move(extra)) == status::full);
    CHECK(value_of(extra) == 99); // not consumed on failure
    CHECK(ch.size() == 4);
    for (int i = 0; i < 4; ++i) {
      auto v = ch.recv();
      REQUIRE(v.has_value());
      CHECK(value_of(*v) == i);
    }
    T out = make<T>(0);
    CHECK(ch.try_recv(out) == status::empty);
  }
  CHECK(lakh::test::tracked::alive.load() == 0);
}

TEST_CASE("channel.close.drains_then_reports_closed") {
  channel<int> ch(8);
  REQUIRE(ch.send(1) == status::ok);
  REQUIRE(ch.send(2) == status::ok);
  ch.close();
  ch.close(); // idempotent
  CHECK(ch.is_closed());
  CHECK(ch.send(3) == status::closed);
  int moved = 4;
  CHECK(ch.try_send(std::move(moved)) == status::closed);
  CHECK(ch.recv() == std::optional<int>(1));
  int out = 0;
  CHECK(ch.try_recv(out) == status::ok);
  CHECK(out == 2);
  CHECK(ch.try_recv(out) == status::closed);
  CHECK(ch.recv() == std::nullopt);
  CHECK(ch.recv(out) == status::closed);
  std::vector<int> batch;
  CHECK(ch.recv_batch(batch, 4).st == status::closed);
}

TEST_CASE("channel.close.wakes_every_blocked_sender_and_receiver" * doctest::timeout(20)) {
  for (int waiters : {1, 4, 8}) {
    channel<int> empty(1);
    channel<int> full(1);
    REQUIRE(full.send(0) == status::ok);
    std::atomic<int> receivers_closed{0};
    std::atomic<int> senders_closed{0};
    {
      std::vector<std::jthread> threads;
      for (int i = 0; i < waiters; ++i) {
        threads.emplace_back([&] {
          if (empty.recv() == std::nullopt) {
            ++receivers_closed;
          }
        });
        threads.emplace_back([&] {
          if (full.send(1) == status::closed) {
            ++senders_closed;
          }
        });
      }
      std::this_thread::sleep_for(20ms); // let them block (not needed for correctness)
      empty.close();
      full.close();
    }
    CHECK(receivers_closed == waiters);
    CHECK(senders_closed == waiters);
  }
}

TEST_CASE_TEMPLATE("channel.mpmc.every_item_exactly_once" * doctest::timeout(60), T, int,
                   std::unique_ptr<int>, lakh::test::tracked) {
  constexpr int per_producer = 3000;
  for (int producers : {1, 2, 4, 8}) {
    for (int consumers : {1, 3, 8}) {
      channel<T> ch(16);
      std::atomic<std::int64_t> sum{0};
      std::atomic<int> count{0};
      std::atomic<bool> order_ok{true};
      {
        std::vector<std::jthread> cons;
        for (int c = 0; c < consumers; ++c) {
          cons.emplace_back([&] {
            std::vector<int> last(static_cast<std::size_t>(producers), -1);
            for (auto &v : ch) {
              int x = value_of(v);
              int p = x / per_producer;
              int seq = x % per_producer;
              // Per-producer FIFO: one consumer sees each producer's items in order.
              if (seq <= last[static_cast<std::size_t>(p)]) {
                order_ok = false;
              }
              last[static_cast<std::size_t>(p)] = seq;
              sum += x;
              ++count;
            }
          });
        }
        {
          std::vector<std::jthread> prods;
          for (int p = 0; p < producers; ++p) {
            prods.emplace_back([&, p] {
              for (int i = 0; i < per_producer; ++i) {
                REQUIRE(ch.send(make<T>(p * per_producer + i)) == status::ok);
              }
            });
          }
        }
        ch.close();
      }
      std::int64_t n = std::int64_t{producers} * per_producer;
      CHECK(count == n);
      CHECK(sum == n * (n - 1) / 2);
      CHECK(order_ok);
    }
  }
  CHECK(lakh::test::tracked::alive.load() == 0);
}

TEST_CASE("channel.batch.send_and_recv_move_every_item" * doctest::timeout(30)) {
  for (int consumers : {1, 2, 4}) {
    channel<int> ch(64);
    constexpr int producers = 3;
    constexpr int per_producer = 20000;
    std::atomic<std::int64_t> sum{0};
    std::atomic<int> count{0};
    {
      std::vector<std::jthread> cons;
      for (int c = 0; c < consumers; ++c) {
        cons.emplace_back([&] {
          std::vector<int> buf;
          for (;;) {
            buf.clear();
            auto r = ch.recv_batch(buf, 100);
            if (r.st == status::closed) {
              CHECK(r.count == 0);
              return;
            }
            CHECK(r.count == buf.size());
            CHECK(r.count <= 100);
            for (int v : buf) {
              sum += v;
            }
            count += static_cast<int>(r.count);
          }
        });
      }
      {
        std::vector<std::jthread> prods;
        for (int p = 0; p < producers; ++p) {
          prods.emplace_back([&, p] {
            std::vector<int> items;
            for (int i = 0; i < per_producer; ++i) {
              items.push_back(p * per_producer + i);
              if (items.size() == 256 || i + 1 == per_producer) {
                auto r = ch.send_batch(items);
                CHECK(r.st == status::ok);
                CHECK(r.count == items.size());
                items.clear();
              }
            }
          });
        }
      }
      ch.close();
    }
    std::int64_t n = std::int64_t{producers} * per_producer;
    CHECK(count == n);
    CHECK(sum == n * (n - 1) / 2);
  }
}

TEST_CASE("channel.batch.send_batch_reports_closed_and_keeps_unsent") {
  channel<int> ch(2);
  std::vector<int> items{1, 2, 3, 4};
  std::jthread closer([&] {
    REQUIRE(eventually([&] { return ch.size() == 2; }));
    ch.close();
  });
  auto r = ch.send_batch(items);
  CHECK(r.st == status::closed);
  CHECK(r.count == 2);
  CHECK(items[2] == 3); // unsent items untouched
  CHECK(items[3] == 4);
  std::vector<int> out;
  CHECK_THROWS_AS((void)ch.recv_batch(out, 0), std::invalid_argument);
}

TEST_CASE("channel.deadline.timeouts_report_timeout" * doctest::timeout(10)) {
  channel<int> ch(1);
  int out = 0;
  auto t0 = std::chrono::steady_clock::now();
  CHECK(ch.try_recv_for(out, 30ms) == status::timeout);
  CHECK(std::chrono::steady_clock::now() - t0 >= 30ms);
  REQUIRE(ch.send(7) == status::ok);
  int v = 8;
  CHECK(ch.try_send_for(std::move(v), 10ms) == status::timeout);
  CHECK(v == 8);
  CHECK(ch.try_recv_until(out, std::chrono::steady_clock::now() + 10ms) == status::ok);
  CHECK(out == 7);
  CHECK(ch.try_send_until(std::move(v), std::chrono::steady_clock::now() + 10ms) == status::ok);
  ch.close();
  int w = 9;
  CHECK(ch.try_send_for(std::move(w), 10ms) == status::closed);
}

TEST_CASE("channel.cancel.stop_token_unblocks_the_right_call" * doctest::timeout(20)) {
  SUBCASE("recv") {
    channel<int> ch(1);
    std::stop_source src;
    status got = status::ok;
    std::jthread t([&] {
      int out = 0;
      got = ch.recv(out, src.get_token());
    });
    std::this_thread::sleep_for(10ms);
    src.request_stop();
    t.join();
    CHECK(got == status::cancelled);
    // The channel still works and nothing was consumed.
    REQUIRE(ch.send(1) == status::ok);
    CHECK(ch.recv() == std::optional<int>(1));
  }
  SUBCASE("send") {
    channel<int> ch(1);
    REQUIRE(ch.send(1) == status::ok);
    std::stop_source src;
    status got = status::ok;
    std::jthread t([&] { got = ch.send(2, src.get_token()); });
    std::this_thread::sleep_for(10ms);
    src.request_stop();
    t.join();
    CHECK(got == status::cancelled);
    CHECK(ch.size() == 1);
    CHECK(ch.recv() == std::optional<int>(1));
  }
  SUBCASE("already stopped token returns at once") {
    channel<int> ch(1);
    std::stop_source src;
    src.request_stop();
    int out = 0;
    CHECK(ch.recv(out, src.get_token()) == status::cancelled);
    CHECK(ch.recv(src.get_token()) == std::nullopt);
    std::vector<int> buf;
    CHECK(ch.recv_batch(buf, 4, src.get_token()).st == status::cancelled);
  }
  SUBCASE("cancel races with traffic") {
    // Many receivers with tokens stopped at random moments while items flow: every item
    // is received exactly once by someone (cancelled calls consume nothing).
    channel<int> ch(4);
    constexpr int items = 20000;
    std::atomic<std::int64_t> sum{0};
    std::atomic<int> count{0};
    {
      std::vector<std::jthread> rx;
      for (int r = 0; r < 4; ++r) {
        rx.emplace_back([&] {
          for (;;) {
            std::stop_source s;
            std::jthread stopper([&s] { s.request_stop(); });
            int out = 0;
            status st = ch.recv(out, s.get_token());
            if (st == status::ok) {
              sum += out;
              ++count;
            } else if (st == status::closed) {
              return;
            }
          }
        });
      }
      for (int i = 0; i < items; ++i) {
        REQUIRE(ch.send(i) == status::ok);
      }
      ch.close();
    }
    CHECK(count == items);
    CHECK(sum == std::int64_t{items} * (items - 1) / 2);
  }
}

TEST_CASE("channel.range_for.iterates_until_closed") {
  channel<std::string> ch(8);
  for (int i = 0; i < 5; ++i) {
    REQUIRE(ch.send(std::to_string(i)) == status::ok);
  }
  ch.close();
  std::string joined;
  for (auto &s : ch) {
    joined += s;
  }
  CHECK(joined == "01234");
  CHECK(ch.begin() == ch.end());
}

TEST_CASE("channel.exceptions.throwing_move_leaves_channel_intact") {
  using lakh::test::tracked;
  {
    channel<tracked> ch(4);
    REQUIRE(ch.send(tracked(1)) == status::ok);
    // The next move (into the ring) throws: nothing is buffered, the caller keeps the value.
    tracked v(2);
    tracked::throw_on_move = 0;
    CHECK_THROWS_AS((void)ch.try_send(std::move(v)), std::runtime_error);
    CHECK(v.value == 2);
    CHECK(ch.size() == 1);
    // A throwing move out of the ring leaves the item at the head.
    tracked out;
    tracked::throw_on_move = 0;
    CHECK_THROWS_AS((void)ch.try_recv(out), std::runtime_error);
    CHECK(ch.size() == 1);
    CHECK(ch.try_recv(out) == status::ok);
    CHECK(out.value == 1);
    CHECK(ch.try_send(std::move(v)) == status::ok);
    CHECK(ch.recv()->value == 2);
  }
  tracked::throw_on_move = -1;
  CHECK(tracked::alive.load() == 0);
}

namespace {

using lakh::test::tracked;

// Receives one item with form `f` while the k-th move from now throws (k = 0, 1, 2, 3: some
// forms move more than once), then drains with plain try_recv. Whatever throws, the items
// must come out exactly once and in order, and nothing may stay alive afterwards.
template <class Form> void receive_with_throwing_move(Form f, const std::string &name) {
  for (long k = 0; k < 4; ++k) {
    CAPTURE(name);
    CAPTURE(k);
    {
      channel<tracked> ch(4);
      REQUIRE(ch.send(tracked(1)) == status::ok);
      REQUIRE(ch.send(tracked(2)) == status::ok);
      std::vector<int> got;
      tracked::throw_on_move = k;
      try {
        f(ch, got);
      } catch (const std::runtime_error &) {
        CHECK(ch.size() + got.size() == 2); // the item that threw is still buffered
      }
      tracked::throw_on_move = -1;
      tracked out;
      while (ch.try_recv(out) == status::ok) {
        got.push_back(out.value);
      }
      CHECK(got == std::vector<int>{1, 2});
    }
    CHECK(tracked::alive.load() == 0);
  }
}

} // namespace

TEST_CASE("channel.exceptions.every_receive_form_keeps_the_item_when_a_move_throws") {
  using got_t = std::vector<int>;
  receive_with_throwing_move(
      [](channel<tracked> &ch, got_t &got) { got.push_back(ch.recv()->value); }, "recv()");
  receive_with_throwing_move(
      [](channel<tracked> &ch, got_t &got) { got.push_back(ch.recv(std::stop_token{})->value); },
      "recv(stop_token)");
  receive_with_throwing_move(
      [](channel<tracked> &ch, got_t &got) {
        tracked out;
        const auto st = ch.recv(out); // a throw must reach the caller
        CHECK(st == status::ok);
        got.push_back(out.value);
      },
      "recv(T&)");
  receive_with_throwing_move(
      [](channel<tracked> &ch, got_t &got) {
        tracked out;
        const auto st = ch.try_recv(out); // a throw must reach the caller
        CHECK(st == status::ok);
        got.push_back(out.value);
      },
      "try_recv");
  receive_with_throwing_move(
      [](channel<tracked> &ch, got_t &got) {
        tracked out;
        const auto st = ch.try_recv_for(out, 1s); // a throw must reach the caller
        CHECK(st == status::ok);
        got.push_back(out.value);
      },
      "try_recv_for");
  receive_with_throwing_move(
      [](channel<tracked> &ch, got_t &got) {
        tracked out;
        const auto st = ch.try_recv_until(out, std::chrono::steady_clock::now() +
                                                   1s); // a throw must reach the caller
        CHECK(st == status::ok);
        got.push_back(out.value);
      },
      "try_recv_until");
  receive_with_throwing_move(
      [](channel<tracked> &ch, got_t &got) {
        std::vector<tracked> out;
        try {
          (void)ch.recv_batch(out, 2);
        } catch (...) {
          for (const auto &t : out) { // taken before the throwing move: delivered
            got.push_back(t.value);
          }
          throw;
        }
        for (const auto &t : out) {
          got.push_back(t.value);
        }
      },
      "recv_batch");
  receive_with_throwing_move(
      [](channel<tracked> &ch, got_t &got) {
        ch.close();
        for (auto &t : ch) {
          got.push_back(t.value);
        }
      },
      "range-for");
  receive_with_throwing_move(
      [](channel<tracked> &ch, got_t &got) {
        tracked out;
        const auto r = lakh::select(lakh::recv_case{ch, out});
        CHECK(r.index == 0);
        got.push_back(out.value);
      },
      "select recv_case");
}

TEST_CASE("channel.exceptions.a_send_whose_move_throws_buffers_nothing") {
  for (long k = 0; k < 3; ++k) {
    CAPTURE(k);
    {
      channel<tracked> ch(16); // room for every send below: none of them blocks
      const auto attempt = [&](auto &&f) {
        const auto before = ch.size();
        tracked v(7);
        tracked::throw_on_move = k;
        bool threw = false;
        try {
          f(v);
        } catch (const std::runtime_error &) {
          threw = true;
        }
        tracked::throw_on_move = -1;
        CHECK(ch.size() == (threw ? before : before + 1));
      };
      // The reference forms keep the caller's value when they throw.
      const auto kept = [&](auto &&f) {
        const auto before = ch.size();
        tracked v(7);
        tracked::throw_on_move = k;
        try {
          f(v);
          tracked::throw_on_move = -1;
          CHECK(ch.size() == before + 1);
        } catch (const std::runtime_error &) {
          tracked::throw_on_move = -1;
          CHECK(v.value == 7);
          CHECK(ch.size() == before);
        }
      };
      attempt([&](tracked &v) { (void)ch.send(std::move(v)); });
      attempt([&](tracked &v) { (void)ch.send(std::move(v), std::stop_token{}); });
      kept([&](tracked &v) { (void)ch.try_send(std::move(v)); });
      kept([&](tracked &v) { (void)ch.try_send_for(std::move(v), 1s); });
      std::vector<tracked> items;
      items.emplace_back(1);
      items.emplace_back(2);
      tracked::throw_on_move = k;
      const auto before = ch.size();
      try {
        (void)ch.send_batch(items);
        CHECK(ch.size() == before + 2);
      } catch (const std::runtime_error &) {
        // The items before the throwing one were sent, the rest kept in `items`.
        const auto sent = ch.size() - before;
        for (std::size_t i = sent; i < items.size(); ++i) {
          CHECK(items[i].value == static_cast<int>(i) + 1);
        }
      }
      tracked::throw_on_move = -1;
    }
    CHECK(tracked::alive.load() == 0);
  }
}

// ---- select --------------------------------------------------------------------------------

TEST_CASE("select.ready_case_fires_and_reports_index") {
  channel<int> a(1);
  channel<std::string> b(1);
  REQUIRE(b.send("hi") == status::ok);
  int ai = 0;
  std::string bs;
  auto r = lakh::select(lakh::recv_case{a, ai}, lakh::recv_case{b, bs});
  CHECK(r.index == 1);
  CHECK(r.st == status::ok);
  CHECK(bs == "hi");

  // A send case fires when there is room; the value moves only when it fires.
  channel<int> c(1);
  auto r2 = lakh::select(lakh::recv_case{a, ai}, lakh::make_send_case(c, 5));
  CHECK(r2.index == 1);
  CHECK(c.recv() == std::optional<int>(5));
}

TEST_CASE("select.closed_channel_fires_with_closed") {
  channel<int> a(1);
  channel<int> b(1);
  b.close();
  int x = 0;
  auto r = lakh::select(lakh::recv_case{a, x}, lakh::recv_case{b, x});
  CHECK(r.index == 1);
  CHECK(r.st == status::closed);
  auto r2 = lakh::select(lakh::make_send_case(b, 1));
  CHECK(r2.index == 0);
  CHECK(r2.st == status::closed);
}

TEST_CASE("select.fair_when_several_are_ready") {
  channel<int> a(1000);
  channel<int> b(1000);
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(a.send(i) == status::ok);
    REQUIRE(b.send(i) == status::ok);
  }
  int hits[2] = {0, 0};
  int x = 0;
  for (int i = 0; i < 1000; ++i) {
    auto r = lakh::select(lakh::recv_case{a, x}, lakh::recv_case{b, x});
    REQUIRE(r.st == status::ok);
    ++hits[r.index];
  }
  // Uniform choice: each side far from starved (expected 500 each).
  CHECK(hits[0] > 350);
  CHECK(hits[1] > 350);
}

TEST_CASE("select.deadline_and_stop" * doctest::timeout(10)) {
  channel<int> a(1);
  int x = 0;
  auto t0 = std::chrono::steady_clock::now();
  auto r = lakh::select_for(20ms, {}, lakh::recv_case{a, x});
  CHECK(r.st == status::timeout);
  CHECK(r.index == lakh::select_result::none);
  CHECK(std::chrono::steady_clock::now() - t0 >= 20ms);

  std::stop_source src;
  status got = status::ok;
  std::jthread t([&] {
    int y = 0;
    got = lakh::select(src.get_token(), lakh::recv_case{a, y}).st;
  });
  std::this_thread::sleep_for(10ms);
  src.request_stop();
  t.join();
  CHECK(got == status::cancelled);
}

TEST_CASE("select.wakes_when_a_case_becomes_ready" * doctest::timeout(10)) {
  channel<int> a(1);
  channel<int> b(1);
  std::jthread sender([&] {
    std::this_thread::sleep_for(10ms);
    REQUIRE(b.send(42) == status::ok);
  });
  int x = 0;
  auto r = lakh::select(lakh::recv_case{a, x}, lakh::recv_case{b, x});
  CHECK(r.index == 1);
  CHECK(x == 42);
}

TEST_CASE("select.concurrent_traffic_exactly_once" * doctest::timeout(60)) {
  // Selecting receivers and plain receivers share two channels fed by plain senders and
  // selecting senders: every item is delivered exactly once.
  for (int selectors : {1, 2, 4}) {
    channel<int> a(8);
    channel<int> b(8);
    constexpr int per_sender = 5000;
    std::atomic<std::int64_t> sum{0};
    std::atomic<int> count{0};
    {
      std::vector<std::jthread> rx;
      for (int i = 0; i < selectors; ++i) {
        rx.emplace_back([&] {
          bool a_open = true;
          bool b_open = true;
          while (a_open || b_open) {
            int x = 0;
            int y = 0;
            lakh::select_result r;
            if (a_open && b_open) {
              r = lakh::select(lakh::recv_case{a, x}, lakh::recv_case{b, y});
            } else if (a_open) {
              r = lakh::select(lakh::recv_case{a, x});
            } else {
              r = lakh::select(lakh::recv_case{b, y});
              r.index = 1;
            }
            if (r.st == status::closed) {
              (r.index == 0 ? a_open : b_open) = false;
              continue;
            }
            sum += r.index == 0 ? x : y;
            ++count;
          }
        });
      }
      rx.emplace_back([&] {
        for (auto v : a) {
          sum += v;
          ++count;
        }
      });
      {
        std::vector<std::jthread> tx;
        tx.emplace_back([&] {
          for (int i = 0; i < per_sender; ++i) {
            REQUIRE(a.send(i) == status::ok);
          }
        });
        tx.emplace_back([&] {
          for (int i = per_sender; i < 2 * per_sender; ++i) {
            // A selecting sender: whichever channel has room.
            auto r = lakh::select(lakh::make_send_case(a, i), lakh::make_send_case(b, i));
            REQUIRE(r.st == status::ok);
          }
        });
      }
      a.close();
      b.close();
    }
    constexpr std::int64_t n = 2 * per_sender;
    CHECK(count == n);
    CHECK(sum == n * (n - 1) / 2);
  }
}

// A stop requested while recv/send is between its own stop check and the registration of
// its stop callback once made the callback run inline on the waiting thread, which held
// the channel's mutex: a self-deadlock. Races the two many times; the window is a few
// instructions wide, so this is a stress test (the bug first showed under TSan in
// fake.usage.stream_usage_stops_on_close_and_cancel), not a deterministic reproduction.
TEST_CASE("channel.cancel.stop_racing_the_wait_never_hangs" * doctest::timeout(60)) {
  for (int i = 0; i < 500; ++i) {
    lakh::channel<int> empty(1);
    lakh::channel<int> full(1);
    REQUIRE(full.try_send(1) == lakh::status::ok);
    std::stop_source stop;
    std::jthread receiver([&] { CHECK_FALSE(empty.recv(stop.get_token()).has_value()); });
    std::jthread sender([&] { CHECK(full.send(2, stop.get_token()) == lakh::status::cancelled); });
    // Contend for the channels' mutex as a caller polling them would, then stop: this
    // lines the request up with the waiters' registration.
    for (int k = 0; k < i % 8; ++k) {
      (void)empty.size();
      (void)full.size();
    }
    stop.request_stop();
  }
}
