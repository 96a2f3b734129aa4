#pragma once
// lakh/nats/outbox_publisher.hpp: lakh::pg::outbox's relay publishing to NATS JetStream.
// Each event goes to its topic as subject, with Nats-Msg-Id = "<prefix><event id>", so that
// JetStream drops the duplicates an at-least-once relay sends after a crash or a failed
// batch. Needs both targets: lakh::pg and lakh::nats.

#include <lakh/nats/jetstream.hpp>
#include <lakh/pg/outbox.hpp>

#include <span>
#include <string>
#include <vector>

namespace lakh::nats {

/// An outbox_publisher over a lakh::nats::jetstream (which must outlive it).
class outbox_publisher : public lakh::pg::outbox_publisher {
public:
  /// `id_prefix` keeps ids of different outboxes apart in one stream ("billing-").
  explicit outbox_publisher(jetstream &js, std::string id_prefix = {})
      : js_(&js), prefix_(std::move(id_prefix)) {}

  /// Publishes the batch; all acknowledged or none counted (the relay then sends the whole
  /// batch again and JetStream drops what it already has).
  /// Thread-safety: one relay thread. Blocks: until acknowledged or the timeout.
  /// @throws lakh::nats::error (the relay counts it as 0 acknowledged).
  std::size_t publish(std::span<const lakh::pg::outbox_event> events) override {
    batch_.clear();
    for (const auto &e : events) {
      batch_.push_back({e.topic, e.payload, prefix_ + std::to_string(e.id)});
    }
    return js_->publish_batch(batch_) ? events.size() : 0;
  }

private:
  jetstream *js_;
  std::string prefix_;
  std::vector<message> batch_;
};

} // namespace lakh::nats
