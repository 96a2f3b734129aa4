// Every `_for` and `_until` form of lakh's blocking calls with the largest duration and time
// point there is: no deadline, never one in the past. Before detail/wait.hpp the channel's
// `now() + hours::max()` overflowed and timed out at once.
#include <lakh/channel.hpp>
#include <lakh/semaphore.hpp>
#include <lakh/worker_pool.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <stop_token>
#include <thread>

using namespace std::chrono_literals;

namespace {

/// Runs call(st) and stops st after 50 ms: what a wait without a deadline returns.
template <class Call> lakh::status stopped_after_50ms(Call call) {
  // On the heap: GCC 12 at -O1 (the ASan preset) warns that a stack stop_source "may be used
  // uninitialized" in its own constructor once this function is inlined (a false positive).
  const auto stop = std::make_unique<std::stop_source>();
  std::jthread stopper([&] {
    std::this_thread::sleep_for(50ms);
    stop->request_stop();
  });
  return call(stop->get_token());
}

constexpr auto forever = std::chrono::hours::max();
const auto steady_end = std::chrono::steady_clock::time_point::max();
const auto system_end = std::chrono::system_clock::time_point::max();

} // namespace

TEST_CASE("wait.the_largest_deadlines_are_no_deadline") {
  lakh::channel<int> full(1);
  REQUIRE(full.try_send(1) == lakh::status::ok);
  lakh::channel<int> empty(1);
  lakh::semaphore taken(1);
  REQUIRE(taken.try_acquire(1));
  int out = 0;

  SUBCASE("channel") {
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return full.try_send_for(2, forever, st);
          }) == lakh::status::cancelled);
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return full.try_send_until(2, steady_end, st);
          }) == lakh::status::cancelled);
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return full.try_send_until(2, system_end, st);
          }) == lakh::status::cancelled);
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return empty.try_recv_for(out, forever, st);
          }) == lakh::status::cancelled);
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return empty.try_recv_until(out, system_end, st);
          }) == lakh::status::cancelled);
  }
  SUBCASE("select") {
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return lakh::select_for(forever, st, lakh::recv_case{empty, out}).st;
          }) == lakh::status::cancelled);
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return lakh::select_until(system_end, st, lakh::recv_case{empty, out}).st;
          }) == lakh::status::cancelled);
  }
  SUBCASE("semaphore") {
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return taken.try_acquire_for(1, forever, st);
          }) == lakh::status::cancelled);
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return taken.try_acquire_until(1, system_end, st);
          }) == lakh::status::cancelled);
  }
  SUBCASE("worker_pool") {
    lakh::worker_pool pool(1, 1);
    lakh::semaphore gate(1);
    REQUIRE(gate.try_acquire(1));
    // One task runs (blocked on the gate), one fills the queue: the next submit waits.
    auto blocker = [&] {
      gate.acquire(1);
      gate.release(1);
    };
    REQUIRE(pool.submit(blocker).valid());
    REQUIRE(pool.submit(blocker).valid());
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return pool.submit_for([] {}, forever, st).status;
          }) == lakh::status::cancelled);
    CHECK(stopped_after_50ms([&](std::stop_token st) {
            return pool.submit_until([] {}, system_end, st).status;
          }) == lakh::status::cancelled);
    gate.release(1);
    pool.shutdown();
  }
}

TEST_CASE("wait.a_deadline_in_the_past_times_out_at_once") {
  lakh::channel<int> empty(1);
  int out = 0;
  CHECK(empty.try_recv_for(out, -forever) == lakh::status::timeout);
  CHECK(empty.try_recv_until(out, std::chrono::system_clock::time_point::min()) ==
        lakh::status::timeout);
  lakh::semaphore taken(1);
  REQUIRE(taken.try_acquire(1));
  CHECK(taken.try_acquire_for(1, std::chrono::hours::min()) == lakh::status::timeout);
  CHECK(lakh::select_for(-1ms, {}, lakh::recv_case{empty, out}).st == lakh::status::timeout);
}
