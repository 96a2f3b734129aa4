// lakh_wal_relay_child: the relay process of tests/integration/nats_wal_relay_test.cpp, which
// SIGKILLs it. It relays the wal-store outbox TABLE of the database at URL to JetStream at
// NATS_URL (Nats-Msg-Id = PREFIX + uuid) until it is killed. MODE "run": rounds without end.
// MODE "pause": after the first publish the broker acknowledged, it prints "published N" and
// waits to be killed there, between the publish and the report of the position.
//
//   lakh_wal_relay_child URL TABLE NATS_URL PREFIX MODE
#include <lakh/nats/outbox_publisher.hpp>
#include <lakh/pg/wal_relay.hpp>

#include <child_process.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <exception>
#include <span>
#include <stop_token>
#include <string>

namespace {

// Publishes through `inner`; in pause mode, stops for good once something was acknowledged.
class pausing_publisher : public lakh::pg::outbox_publisher {
public:
  pausing_publisher(lakh::pg::outbox_publisher &inner, bool pause)
      : inner_(&inner), pause_(pause) {}
  void publish(std::span<const lakh::pg::outbox_event> events,
               std::span<lakh::pg::publish_outcome> outcomes) override {
    inner_->publish(events, outcomes);
    std::size_t acked = 0;
    for (const auto o : outcomes) {
      acked += o == lakh::pg::publish_outcome::acked ? 1U : 0U;
    }
    if (pause_ && acked > 0) {
      std::printf("published %zu\n", acked);
      std::fflush(stdout);
      for (;;) {
        ::pause(); // until SIGKILL
      }
    }
  }
  [[nodiscard]] std::string error(std::size_t i) const override { return inner_->error(i); }

private:
  lakh::pg::outbox_publisher *inner_;
  bool pause_;
};

} // namespace

int main(int argc, char **argv) {
  lakh_examples::die_with_parent();
  if (argc != 6) {
    std::fprintf(stderr, "usage: lakh_wal_relay_child URL TABLE NATS_URL PREFIX MODE\n");
    return 2;
  }
  try {
    lakh::pg::pool pool(argv[1], 2);
    lakh::pg::outbox box(pool, {argv[2], false, std::size_t{1} << 20, lakh::pg::outbox_store::wal});
    lakh::nats::jetstream js(argv[3]);
    lakh::nats::outbox_publisher nats_pub(js, {argv[4]});
    pausing_publisher pub(nats_pub, std::string(argv[5]) == "pause");
    lakh::pg::wal_relay_options o;
    o.batch = 50;
    o.standby_poll = std::chrono::milliseconds(20);
    o.backoff_cap = std::chrono::milliseconds(200);
    lakh::pg::wal_relay relay(box, pub, o);
    std::stop_source never;
    relay.run(never.get_token());
    return 0;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "lakh_wal_relay_child: %s\n", e.what());
    return 1;
  }
}
