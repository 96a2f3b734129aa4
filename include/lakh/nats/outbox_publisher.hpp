#pragma once
// lakh/nats/outbox_publisher.hpp: lakh::pg::outbox's publisher for NATS JetStream. Each event
// goes to its topic as subject, with its headers and Nats-Msg-Id = "<prefix><event uuid>", so
// JetStream drops what an at-least-once relay sends twice; key_order::strict keeps a key's
// events in order even when a publish fails. Needs both targets, lakh::pg and lakh::nats.
// Docs: docs/outbox.md.

#include <lakh/nats/jetstream.hpp>
#include <lakh/pg/outbox.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace lakh::nats {

/// How a publisher keeps the order of one key's events when a publish fails. JetStream stores
/// pipelined messages in arrival order, but one can fail (lost in a reconnect, a timeout)
/// while a later one is stored; strict sends a batch in waves (wave n: the n-th event of each
/// key, pipelined; a key whose event failed sends nothing more, reported not_sent), so
/// throughput follows the number of distinct keys per batch.
enum class key_order : std::uint8_t {
  strict,    ///< waves: an event is sent only after its key's earlier ones were acknowledged
  pipelined, ///< everything at once: order kept unless a message fails and a later one lands
};

/// Settings of an outbox_publisher.
struct outbox_publisher_options {
  std::string id_prefix;                       ///< put before the uuid ("billing-")
  key_order order = key_order::strict;         ///< see key_order
  std::chrono::milliseconds ack_timeout{5000}; ///< per wave; > 0
};

/// A lakh::pg::outbox_publisher over a lakh::nats::jetstream (which must outlive it).
/// Memory ordering: outcomes are written before publish() returns (see jetstream). Members
/// may allocate; publish() is called by one thread at a time.
class outbox_publisher : public lakh::pg::outbox_publisher {
public:
  /// Blocks: never. @throws std::invalid_argument if ack_timeout is not positive.
  explicit outbox_publisher(jetstream &js, outbox_publisher_options opts = {})
      : js_(&js), opts_(std::move(opts)) {
    if (opts_.ack_timeout.count() <= 0) {
      throw std::invalid_argument("lakh::nats::outbox_publisher: ack_timeout (" +
                                  std::to_string(opts_.ack_timeout.count()) +
                                  " ms) must be positive");
    }
  }

  /// Publishes the events (in waves per key with key_order::strict) and reports each one:
  /// acked, duplicate (JetStream had the id), failed, rejected (ack_status::refused: no
  /// stream for its subject, or over the server's max_payload), or not_sent (an earlier event
  /// of its key failed). Blocks: until every wave is acknowledged or timed out.
  /// @throws std::bad_alloc only.
  void publish(std::span<const lakh::pg::outbox_event> events,
               std::span<lakh::pg::publish_outcome> outcomes) override {
    using lakh::pg::publish_outcome;
    std::fill(outcomes.begin(), outcomes.end(), publish_outcome::not_sent);
    // wave_[i]: how many earlier events of the same key precede event i.
    wave_.assign(events.size(), 0);
    std::size_t waves = 1;
    if (opts_.order == key_order::strict) {
      seen_.clear();
      for (std::size_t i = 0; i < events.size(); ++i) {
        wave_[i] = seen_[events[i].key]++;
        waves = std::max(waves, wave_[i] + 1);
      }
    }
    failed_keys_.clear();
    errors_.assign(events.size(), std::string());
    for (std::size_t w = 0; w < waves; ++w) {
      batch_.clear();
      positions_.clear();
      for (std::size_t i = 0; i < events.size(); ++i) {
        if (wave_[i] != w || failed_keys_.count(events[i].key) != 0) {
          continue;
        }
        batch_.push_back(to_message(events[i]));
        positions_.push_back(i);
      }
      if (batch_.empty()) {
        continue;
      }
      const auto r = js_->publish_batch(batch_, opts_.ack_timeout);
      last_error_ = r.first_error.empty() ? last_error_ : r.first_error;
      for (std::size_t j = 0; j < positions_.size(); ++j) {
        const auto i = positions_[j];
        switch (r.status[j]) {
        case ack_status::stored:
          outcomes[i] = publish_outcome::acked;
          break;
        case ack_status::duplicate:
          outcomes[i] = publish_outcome::duplicate;
          break;
        case ack_status::failed:
          outcomes[i] = publish_outcome::failed;
          failed_keys_.insert(events[i].key);
          break;
        case ack_status::refused:
          outcomes[i] = publish_outcome::rejected;
          failed_keys_.insert(events[i].key);
          break;
        }
        if (!r.errors.empty()) {
          errors_[i] = r.errors[j];
        }
      }
    }
  }

  /// Why event `i` of the last publish() failed (names the server and cnats's status).
  /// Thread-safety: the publishing thread.
  [[nodiscard]] std::string error(std::size_t i) const override {
    return i < errors_.size() ? errors_[i] : std::string();
  }

  /// The last failure's text (names the server and cnats's status), empty if none yet.
  /// Thread-safety: the publishing thread.
  [[nodiscard]] const std::string &last_error() const noexcept { return last_error_; }

  /// The Nats-Msg-Id of `e`: the prefix and the event's uuid (consumers key their inbox on
  /// it). Thread-safety: safe.
  [[nodiscard]] std::string message_id(const lakh::pg::outbox_event &e) const {
    return opts_.id_prefix + e.uuid;
  }

private:
  message to_message(const lakh::pg::outbox_event &e) const {
    message m{e.topic, e.payload, message_id(e), {}};
    m.headers.reserve(e.headers.size());
    for (const auto &h : e.headers) {
      m.headers.push_back({h.name, h.value});
    }
    return m;
  }

  jetstream *js_;
  outbox_publisher_options opts_;
  std::vector<std::size_t> wave_;
  std::unordered_map<std::string_view, std::size_t> seen_;
  std::unordered_set<std::string_view> failed_keys_;
  std::vector<message> batch_;
  std::vector<std::size_t> positions_;
  std::string last_error_;
  std::vector<std::string> errors_; // per event of the last publish
};

} // namespace lakh::nats
