// Tests for lakh::task_group: first error wins and stops the rest, the limit, joining.
#include <lakh/task_group.hpp>

#include <support/sync.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <future>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using lakh::test::gate;
using lakh::test::wait_until_true;

/// Blocks until stop is requested on `st`, without polling.
void park_until_stopped(const std::stop_token &st) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lk(m);
  cv.wait(lk, st, [] { return false; });
}

/// Tracks how many tasks run at once and the most ever seen.
struct gauge {
  std::atomic<int> now{0};
  std::atomic<int> max{0};
  void enter() {
    const int n = ++now;
    int seen = max.load();
    while (n > seen && !max.compare_exchange_weak(seen, n)) {
    }
  }
  void leave() { --now; }
};

} // namespace

// --- the first error ------------------------------------------------------------------------

TEST_CASE("task_group.wait.rethrows_the_first_error_and_the_others_observe_stop" *
          doctest::timeout(30)) {
  for (int waiters : {1, 2, 4, 7}) {
    CAPTURE(waiters);
    lakh::task_group group;
    std::atomic<int> parked{0};
    std::atomic<int> observed_stop{0};
    for (int i = 0; i < waiters; ++i) {
      group.spawn([&, i](std::stop_token st) {
        ++parked;
        park_until_stopped(st);
        ++observed_stop;
        if (i % 2 == 1) { // half of them fail too, after the first: these are dropped
          throw std::runtime_error("later " + std::to_string(i));
        }
      });
    }
    wait_until_true([&] { return parked == waiters; });
    CHECK_FALSE(group.get_stop_token().stop_requested());
    group.spawn([] { throw std::runtime_error("first"); });
    CHECK_THROWS_WITH_AS(group.wait(), "first", std::runtime_error);
    CHECK(observed_stop == waiters);
    CHECK(group.get_stop_token().stop_requested());
    CHECK(group.dropped_exceptions() == static_cast<std::size_t>(waiters / 2));
    CHECK(group.active() == 0);
    // The error is sticky, as Go's Wait keeps returning it.
    CHECK_THROWS_WITH_AS(group.wait(), "first", std::runtime_error);
  }
}

TEST_CASE("task_group.wait.without_error_returns_and_leaves_the_token_unstopped" *
          doctest::timeout(30)) {
  for (int tasks : {1, 3, 8}) {
    CAPTURE(tasks);
    lakh::task_group group;
    std::vector<int> out(static_cast<std::size_t>(tasks), 0); // plain ints: wait() publishes
    for (int i = 0; i < tasks; ++i) {
      group.spawn([&out, i] { out[static_cast<std::size_t>(i)] = i + 1; });
    }
    group.wait();
    for (int i = 0; i < tasks; ++i) {
      CHECK(out[static_cast<std::size_t>(i)] == i + 1);
    }
    CHECK_FALSE(group.get_stop_token().stop_requested());
    // Reusable after a clean wait.
    group.spawn([&out] { out[0] = 100; });
    group.wait();
    CHECK(out[0] == 100);
  }
}

TEST_CASE("task_group.spawn.after_a_failure_still_runs_with_a_stopped_token" *
          doctest::timeout(30)) {
  lakh::task_group group;
  group.spawn([] { throw std::logic_error("broken"); });
  CHECK_THROWS_AS(group.wait(), std::logic_error);
  std::atomic<bool> ran{false};
  std::atomic<bool> saw_stop{false};
  group.spawn([&](std::stop_token st) {
    ran = true;
    saw_stop = st.stop_requested();
  });
  CHECK_THROWS_WITH_AS(group.wait(), "broken", std::logic_error);
  CHECK(ran);
  CHECK(saw_stop);
}

TEST_CASE("task_group.request_stop.stops_waiting_tasks_without_an_error" * doctest::timeout(30)) {
  lakh::task_group group;
  std::atomic<int> stopped{0};
  for (int i = 0; i < 4; ++i) {
    group.spawn([&](std::stop_token st) {
      park_until_stopped(st);
      ++stopped;
    });
  }
  CHECK(group.request_stop());
  CHECK_FALSE(group.request_stop()); // already requested
  CHECK_NOTHROW(group.wait());
  CHECK(stopped == 4);
}

TEST_CASE("task_group.parent_token.stopping_the_parent_stops_the_group" * doctest::timeout(30)) {
  std::stop_source parent;
  lakh::task_group group(parent.get_token());
  std::atomic<int> stopped{0};
  for (int i = 0; i < 3; ++i) {
    group.spawn([&](std::stop_token st) {
      park_until_stopped(st);
      ++stopped;
    });
  }
  parent.request_stop();
  group.wait();
  CHECK(stopped == 3);
  CHECK(group.get_stop_token().stop_requested());
}

// --- the limit ------------------------------------------------------------------------------

TEST_CASE("task_group.limit.at_most_limit_tasks_run_at_once" * doctest::timeout(60)) {
  for (std::ptrdiff_t limit = 1; limit <= 4; ++limit) {
    CAPTURE(limit);
    lakh::task_group group;
    group.set_limit(limit);
    CHECK(group.limit() == limit);
    gauge g;

    // First wave: exactly `limit` tasks hold their slots until the gate opens.
    gate release;
    for (std::ptrdiff_t i = 0; i < limit; ++i) {
      group.spawn([&] {
        g.enter();
        release.wait();
        g.leave();
      });
    }
    wait_until_true([&] { return g.now == limit; });
    CHECK(group.active() == static_cast<std::size_t>(limit));
    std::atomic<int> extra_ran{0};
    CHECK_FALSE(group.try_spawn([&] { ++extra_ran; })); // at the limit: refused, not queued

    // A blocking spawn waits for a slot.
    std::atomic<bool> spawned{false};
    std::jthread spawner([&] {
      group.spawn([&] {
        g.enter();
        ++extra_ran;
        g.leave();
      });
      spawned = true;
    });
    std::this_thread::sleep_for(2ms);
    CHECK_FALSE(spawned.load()); // still blocked: every slot is held
    release.open();
    spawner.join();
    CHECK(spawned);

    // Many short tasks: the gauge never exceeds the limit.
    for (int i = 0; i < 40; ++i) {
      group.spawn([&] {
        g.enter();
        std::this_thread::yield();
        g.leave();
      });
    }
    group.wait();
    CHECK(extra_ran == 1);
    CHECK(g.max == limit);
    CHECK(g.now == 0);
  }
}

TEST_CASE("task_group.limit.try_spawn_succeeds_again_once_a_slot_frees" * doctest::timeout(30)) {
  lakh::task_group group;
  group.set_limit(2);
  gate release;
  CHECK(group.try_spawn([&] { release.wait(); }));
  CHECK(group.try_spawn([&] { release.wait(); }));
  CHECK_FALSE(group.try_spawn([] {}));
  release.open();
  wait_until_true([&] { return group.active() < 2; });
  std::atomic<bool> ran{false};
  CHECK(group.try_spawn([&] { ran = true; }));
  group.wait();
  CHECK(ran);
}

TEST_CASE("task_group.limit.stop_token_cancels_a_spawn_blocked_at_the_limit" *
          doctest::timeout(30)) {
  lakh::task_group group;
  group.set_limit(1);
  gate release;
  group.spawn([&] { release.wait(); });
  std::stop_source caller;
  std::atomic<bool> ran{false};
  std::promise<lakh::status> outcome;
  std::jthread spawner(
      [&] { outcome.set_value(group.spawn([&] { ran = true; }, caller.get_token())); });
  caller.request_stop();
  CHECK(outcome.get_future().get() == lakh::status::cancelled);
  release.open();
  group.wait();
  CHECK_FALSE(ran);
  CHECK_FALSE(group.get_stop_token().stop_requested()); // the caller's token, not the group's
}

TEST_CASE("task_group.set_limit.rejects_zero_and_changes_while_active" * doctest::timeout(30)) {
  lakh::task_group group;
  CHECK(group.limit() == lakh::task_group::unlimited);
  CHECK_THROWS_WITH_AS(group.set_limit(0),
                       "lakh::task_group::set_limit: n (0) would block every spawn; pass a "
                       "negative value for no limit",
                       std::invalid_argument);
  gate release;
  group.spawn([&] { release.wait(); });
  CHECK_THROWS_WITH_AS(group.set_limit(3),
                       "lakh::task_group::set_limit: called while 1 task(s) are active; set the "
                       "limit before spawning",
                       lakh::usage_error);
  release.open();
  group.wait();
  group.set_limit(3);
  CHECK(group.limit() == 3);
  group.set_limit(-5);
  CHECK(group.limit() == lakh::task_group::unlimited);
}

// --- nesting, misuse, destruction -----------------------------------------------------------

TEST_CASE("task_group.spawn.tasks_spawned_by_tasks_are_waited_for" * doctest::timeout(30)) {
  lakh::task_group group;
  std::atomic<int> leaves{0};
  for (int i = 0; i < 3; ++i) {
    group.spawn([&] {
      for (int j = 0; j < 4; ++j) {
        group.spawn([&] {
          std::this_thread::sleep_for(1ms);
          ++leaves;
        });
      }
    });
  }
  group.wait();
  CHECK(leaves == 12);
}

TEST_CASE("task_group.threads.a_parked_thread_is_reused_by_the_next_spawn" * doctest::timeout(30)) {
  lakh::task_group group;
  std::thread::id first;
  std::thread::id second;
  group.spawn([&] { first = std::this_thread::get_id(); });
  wait_until_true([&] { return group.active() == 0; }); // parked, not joined
  group.spawn([&] { second = std::this_thread::get_id(); });
  group.wait();
  CHECK(first == second);
  CHECK(first != std::this_thread::get_id());
}

TEST_CASE("task_group.wait.concurrent_waiters_all_see_every_task_done" * doctest::timeout(30)) {
  lakh::task_group group;
  std::atomic<int> done{0};
  for (int i = 0; i < 4; ++i) {
    group.spawn([&] {
      std::this_thread::sleep_for(1ms);
      ++done;
    });
  }
  std::atomic<int> saw_all{0};
  {
    std::vector<std::jthread> waiters;
    for (int w = 0; w < 3; ++w) {
      waiters.emplace_back([&] {
        group.wait();
        if (done == 4) {
          ++saw_all;
        }
      });
    }
  }
  CHECK(saw_all == 3);
}

TEST_CASE("task_group.wait.from_one_of_its_own_tasks_is_a_usage_error" * doctest::timeout(30)) {
  lakh::task_group group;
  group.spawn([&group] { group.wait(); });
  CHECK_THROWS_AS(group.wait(), lakh::usage_error);
}

TEST_CASE("task_group.destructor.joins_every_task_and_publishes_its_effects" *
          doctest::timeout(30)) {
  for (int tasks : {1, 4, 8}) {
    CAPTURE(tasks);
    std::vector<int> out(static_cast<std::size_t>(tasks), 0);
    std::atomic<int> live_threads{0};
    {
      lakh::task_group group;
      for (int i = 0; i < tasks; ++i) {
        group.spawn([&out, &live_threads, i] {
          ++live_threads;
          std::this_thread::sleep_for(1ms);
          out[static_cast<std::size_t>(i)] = i + 1;
          --live_threads;
        });
      }
    } // no wait(): the destructor joins
    CHECK(live_threads == 0);
    for (int i = 0; i < tasks; ++i) {
      CHECK(out[static_cast<std::size_t>(i)] == i + 1);
    }
  }
}

TEST_CASE("task_group.destructor.requests_stop_on_tasks_still_running" * doctest::timeout(30)) {
  std::atomic<int> stopped{0};
  {
    lakh::task_group group;
    for (int i = 0; i < 3; ++i) {
      group.spawn([&](std::stop_token st) {
        park_until_stopped(st); // would never return without the destructor's stop request
        ++stopped;
      });
    }
  }
  CHECK(stopped == 3);
}

TEST_CASE("task_group.destructor.drops_an_error_no_wait_rethrew" * doctest::timeout(30)) {
  std::atomic<bool> ran{false};
  {
    lakh::task_group group;
    group.spawn([&] {
      ran = true;
      throw std::runtime_error("never rethrown");
    });
  } // must neither throw nor terminate
  CHECK(ran);
}

// --- sweep ----------------------------------------------------------------------------------

TEST_CASE("task_group.stress.every_task_runs_exactly_once_under_each_limit" *
          doctest::timeout(60)) {
  for (std::ptrdiff_t limit : {1, 2, 3, 8, -1}) {
    CAPTURE(limit);
    lakh::task_group group;
    group.set_limit(limit);
    gauge g;
    std::atomic<long> sum{0};
    std::atomic<int> count{0};
    constexpr int tasks = 60;
    std::atomic<int> refused{0};
    for (int i = 0; i < tasks; ++i) {
      auto body = [&, i] {
        g.enter();
        sum += i;
        ++count;
        g.leave();
      };
      if (i % 3 == 0 && limit > 0) {
        while (!group.try_spawn(body)) {
          ++refused;
          std::this_thread::yield();
        }
      } else {
        group.spawn(body);
      }
    }
    group.wait();
    CHECK(count == tasks);
    CHECK(sum == tasks * (tasks - 1) / 2);
    if (limit > 0) {
      CHECK(g.max <= limit);
    }
  }
}
