#pragma once
// lakh/nats/pull_consumer.hpp: the consuming side of lakh::nats. pull_consumer is a durable
// JetStream pull consumer with explicit acks (fetch a batch, ack each delivery); consume() is
// the loop a service runs on it: it (re)creates the consumer, fetches, hands each message (or
// each batch) to a handler, acks or naks by the handler's verdict, and after a lost connection
// backs off with lakh::backoff, until a std::stop_token is stopped. Delivery is at least
// once: pair it with lakh::pg::inbox. Docs: docs/nats.md.

#include <lakh/backoff.hpp>
#include <lakh/nats/jetstream.hpp>

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace lakh::nats {

namespace detail {
/// True for a libnats version (nats_GetVersionNumber(): 0xMMmmpp) whose natsSubscription_Fetch
/// can overflow its result array when asked for more than one message: below 3.8.2.
constexpr bool fetch_overflows(std::uint32_t version) noexcept {
  return version < 0x030802U;
}
} // namespace detail

/// One message fetched by a pull_consumer. Move-only; owns the cnats message. Ack it after
/// the effects of processing it committed (lakh::pg::inbox); an unacknowledged message is
/// redelivered after the consumer's ack wait. Members never block unless noted and are
/// safe from any thread, except ack() and nak(): one thread settles a delivery.
class delivery {
public:
  /// Owns `m` (pull_consumer::fetch makes deliveries); `url` names the server in errors.
  explicit delivery(natsMsg *m, std::string url) noexcept : msg_(m), url_(std::move(url)) {}
  delivery(delivery &&o) noexcept : msg_(std::exchange(o.msg_, nullptr)), url_(std::move(o.url_)) {}
  delivery &operator=(delivery &&o) noexcept {
    if (this != &o) {
      natsMsg_Destroy(msg_);
      msg_ = std::exchange(o.msg_, nullptr);
      url_ = std::move(o.url_);
    }
    return *this;
  }
  delivery(const delivery &) = delete;
  delivery &operator=(const delivery &) = delete;
  /// Frees the message (without acking it).
  ~delivery() { natsMsg_Destroy(msg_); }

  /// The subject.
  [[nodiscard]] std::string_view subject() const noexcept { return natsMsg_GetSubject(msg_); }
  /// The payload.
  [[nodiscard]] std::string_view payload() const noexcept {
    return {natsMsg_GetData(msg_), static_cast<std::size_t>(natsMsg_GetDataLength(msg_))};
  }
  /// Header `name`'s first value, empty if absent ("Nats-Msg-Id": the publisher's id).
  [[nodiscard]] std::string header(const char *name) const {
    const char *v = nullptr;
    return natsMsgHeader_Get(msg_, name, &v) == NATS_OK && v != nullptr ? std::string(v)
                                                                        : std::string();
  }
  /// The Nats-Msg-Id header (the outbox event's id).
  [[nodiscard]] std::string id() const { return header("Nats-Msg-Id"); }
  /// How many times JetStream delivered this message (1 the first time).
  [[nodiscard]] std::uint64_t delivery_count() const {
    jsMsgMetaData *meta = nullptr;
    if (natsMsg_GetMetaData(&meta, msg_) != NATS_OK) {
      return 0;
    }
    const auto n = meta->NumDelivered;
    jsMsgMetaData_Destroy(meta);
    return n;
  }
  /// Acknowledges the message (no redelivery). Blocks: a send.
  /// @throws lakh::nats::nats_error naming the server and the status.
  void ack() { check(natsMsg_Ack(msg_, nullptr), "natsMsg_Ack"); }
  /// Asks for a redelivery now. Blocks: a send. @throws lakh::nats::nats_error.
  void nak() { check(natsMsg_Nak(msg_, nullptr), "natsMsg_Nak"); }
  /// Asks for a redelivery after `delay`. Blocks: a send. @throws lakh::nats::nats_error.
  void nak(std::chrono::milliseconds delay) {
    check(natsMsg_NakWithDelay(msg_, delay.count(), nullptr), "natsMsg_NakWithDelay");
  }

private:
  void check(natsStatus s, const char *what) const {
    if (s != NATS_OK) {
      throw nats_error(std::string("lakh::nats: ") + what + " (" + url_ +
                       "): " + natsStatus_GetText(s));
    }
  }
  natsMsg *msg_;
  std::string url_;
};

/// A durable pull consumer on a stream (js_PullSubscribe): fetch batches, process, ack each.
/// Move-only. Thread-safety: fetch from one thread at a time; deliveries may be acked from
/// any one thread each. Delivery is at least once: pair it with lakh::pg::inbox.
class pull_consumer {
public:
  /// Binds durable consumer `durable` on `stream`, filtered by `subject` (created if
  /// missing; explicit acks, redelivery after `ack_wait`). `js` must outlive it.
  /// Blocks: a request.
  /// @throws std::invalid_argument if durable or subject is empty or ack_wait not positive;
  /// lakh::nats::nats_error naming the server if JetStream refuses.
  pull_consumer(jetstream &js, const std::string &stream, const std::string &subject,
                const std::string &durable,
                std::chrono::milliseconds ack_wait = std::chrono::seconds(30))
      : url_(js.url()), sub_(nullptr, natsSubscription_Destroy) {
    if (durable.empty() || subject.empty() || ack_wait.count() <= 0) {
      throw std::invalid_argument("lakh::nats::pull_consumer: durable (\"" + durable +
                                  "\") and subject (\"" + subject +
                                  "\") must be non-empty and ack_wait (" +
                                  std::to_string(ack_wait.count()) + " ms) positive");
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream.c_str();
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = std::chrono::duration_cast<std::chrono::nanoseconds>(ack_wait).count();
    natsSubscription *sub = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    const natsStatus s = js_PullSubscribe(&sub, js.native_handle(), subject.c_str(),
                                          durable.c_str(), nullptr, &so, &jerr);
    if (s != NATS_OK) {
      throw nats_error("lakh::nats: js_PullSubscribe " + stream + "/" + durable + " (" + url_ +
                       "): " + natsStatus_GetText(s) +
                       (jerr != 0
                            ? " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")"
                            : std::string()));
    }
    sub_.reset(sub);
  }

  /// Up to `max` messages, waiting up to `timeout` for the first; empty when none came. With
  /// libnats below 3.8.2 (Debian 12 has 3.4), one message per request (a workaround, below):
  /// the first waits, the others are those the server has ready at once.
  /// Blocks: until a message or `timeout`.
  /// @throws std::invalid_argument if max < 1; lakh::nats::nats_error for a failure other than a
  /// timeout.
  std::vector<delivery> fetch(int max, std::chrono::milliseconds timeout) {
    if (max < 1) {
      throw std::invalid_argument("lakh::nats::pull_consumer::fetch: max (" + std::to_string(max) +
                                  ") must be at least 1");
    }
    // libnats before 3.8.2 writes past its result array in natsSubscription_Fetch when
    // messages already wait in the subscription (late deliveries for an earlier fetch's
    // request) and more than half of the batch is taken from them (nats.c #749). Such
    // messages can land at any instant, even inside the call, so no check beforehand closes
    // the window: with an affected library every request asks for one message, which cannot
    // overflow; after the first, more are asked for one at a time with no wait while the
    // server has them ready, so that a batch handler still gets a batch. The version is the
    // linked library's, read at run time.
    const bool one_at_a_time = detail::fetch_overflows(nats_GetVersionNumber());
    std::vector<delivery> out;
    natsMsgList list{};
    jsErrCode jerr = static_cast<jsErrCode>(0);
    const natsStatus s =
        natsSubscription_Fetch(&list, sub_.get(), one_at_a_time ? 1 : max, timeout.count(), &jerr);
    take(list, out);
    if (s != NATS_OK && s != NATS_TIMEOUT) {
      throw nats_error("lakh::nats: natsSubscription_Fetch (" + url_ +
                       "): " + natsStatus_GetText(s));
    }
    while (one_at_a_time && !out.empty() && out.size() < static_cast<std::size_t>(max)) {
      jsFetchRequest req;
      jsFetchRequest_Init(&req);
      req.Batch = 1;
      req.NoWait = true; // the server answers at once: a message, or none ready
      req.Expires = std::chrono::nanoseconds(timeout).count();
      if (natsSubscription_FetchRequest(&list, sub_.get(), &req) != NATS_OK || list.Count == 0) {
        natsMsgList_Destroy(&list);
        break; // none ready (or a failure, which the next fetch reports): hand these over
      }
      take(list, out);
    }
    return out;
  }

private:
  /// Moves `list`'s messages to `out` and destroys the list.
  void take(natsMsgList &list, std::vector<delivery> &out) const {
    for (int i = 0; i < list.Count; ++i) {
      out.emplace_back(std::exchange(list.Msgs[i], nullptr), url_);
    }
    natsMsgList_Destroy(&list);
  }

  std::string url_;
  std::unique_ptr<natsSubscription, void (*)(natsSubscription *)> sub_;
};

/// What a consume() handler decided about a message (a batch handler: about every message of
/// the batch). A handler that returns void means ack.
enum class verdict : std::uint8_t {
  ack,   ///< processed: acknowledge it (never redelivered)
  nak,   ///< failed: redeliver it after a delay that grows with its delivery count
  leave, ///< no answer: JetStream redelivers it once the consumer's ack_wait has passed
};

/// What consume() binds, and how it paces itself.
struct consume_options {
  std::string stream;  ///< the stream
  std::string subject; ///< the consumer's filter subject, e.g. "billing.>"
  std::string durable; ///< the durable consumer's name (shared by the loops that split the work)
  std::chrono::milliseconds ack_wait{std::chrono::seconds(30)}; ///< redelivery of unacked ones
  int batch = 64; ///< messages per fetch, >= 1 (below libnats 3.8.2: those ready, fetch())
  std::chrono::milliseconds fetch_wait{200}; ///< the longest fetch: bounds the reaction to stop
  /// The pause before reconnecting after the n-th error in a row is retry.delay(n); a message
  /// nak'ed at its k-th delivery is redelivered after retry.delay(k - 1).
  lakh::backoff retry{std::chrono::milliseconds(50), std::chrono::seconds(2)};
  /// Told every error (the connection, the consumer, an ack, a throwing handler) before the
  /// loop carries on; unset: errors are retried silently.
  std::function<void(const std::exception &)> on_error{};
};

namespace detail {

template <class H, class Arg>
concept consume_handler_for = std::invocable<H &, Arg> &&
    (std::is_void_v<std::invoke_result_t<H &, Arg>> ||
     std::same_as<std::invoke_result_t<H &, Arg>, verdict>);

// Runs the handler; a std::exception it throws is reported and means nak.
template <class H, class Arg> verdict run_handler(H &h, Arg &&arg, const consume_options &o) {
  try {
    if constexpr (std::is_void_v<std::invoke_result_t<H &, Arg>>) {
      std::invoke(h, std::forward<Arg>(arg));
      return verdict::ack;
    } else {
      return std::invoke(h, std::forward<Arg>(arg));
    }
  } catch (const std::exception &e) {
    if (o.on_error) {
      o.on_error(e);
    }
    return verdict::nak;
  }
}

inline void settle(delivery &d, verdict v, const consume_options &o) {
  if (v == verdict::ack) {
    d.ack();
  } else if (v == verdict::nak) {
    const auto n = std::max<std::uint64_t>(d.delivery_count(), 1) - 1;
    const auto k = static_cast<unsigned>(std::min<std::uint64_t>(n, 64));
    d.nak(std::chrono::duration_cast<std::chrono::milliseconds>(o.retry.delay(k)));
  }
}

} // namespace detail

/// A message handler, `verdict(delivery &)` or `void(delivery &)`, or a batch handler,
/// `verdict(std::span<delivery>)` or `void(std::span<delivery>)` (one transaction per batch).
template <class H>
concept consume_handler = (detail::consume_handler_for<H, delivery &> !=
                           detail::consume_handler_for<H, std::span<delivery>>);

/// Consumes `opts.subject` of `opts.stream` through durable consumer `opts.durable` until `st`
/// is stopped: (re)creates the consumer, fetches up to `opts.batch` messages, hands each to
/// `handle` (or the whole batch to a batch handler) and settles it by the verdict: ack, nak
/// (redelivered after opts.retry's delay for its delivery count) or leave (redelivered after
/// ack_wait). A std::exception from the handler is reported to opts.on_error and means nak.
/// Any other error (no server, the consumer refused, a failed fetch or ack) is reported, the
/// consumer dropped, and the loop pauses opts.retry.delay(n) after the n-th such error in a row
/// (cut short by stop) before it creates the consumer again; messages not yet settled are
/// redelivered after ack_wait. Within a batch, messages wait for those before them: keep
/// batch x (slowest handling) below ack_wait, or JetStream redelivers some while in hand.
/// The connection itself is `js`'s, which reconnects forever; `js` must outlive the call.
/// Thread-safety: run one loop per thread; loops on one durable share its messages.
/// Blocks: until `st` is stopped; the batch in hand is finished first, so the reaction to stop
/// takes up to opts.fetch_wait plus the handling of one batch.
/// @throws std::invalid_argument (before anything else) if stream, subject or durable is
/// empty, batch < 1, or ack_wait or fetch_wait is not positive; otherwise only what the
/// handler throws that is not a std::exception (opts.on_error must not throw).
template <consume_handler Handler>
void consume(jetstream &js, const consume_options &opts, Handler &&handle, std::stop_token st) {
  if (opts.stream.empty() || opts.subject.empty() || opts.durable.empty() || opts.batch < 1 ||
      opts.ack_wait.count() <= 0 || opts.fetch_wait.count() <= 0) {
    throw std::invalid_argument("lakh::nats::consume: stream (\"" + opts.stream +
                                "\"), subject (\"" + opts.subject + "\") and durable (\"" +
                                opts.durable + "\") must be non-empty, batch (" +
                                std::to_string(opts.batch) + ") at least 1, ack_wait (" +
                                std::to_string(opts.ack_wait.count()) + " ms) and fetch_wait (" +
                                std::to_string(opts.fetch_wait.count()) + " ms) positive");
  }
  std::optional<pull_consumer> consumer;
  unsigned failures = 0;
  while (!st.stop_requested()) {
    try {
      if (!consumer) {
        consumer.emplace(js, opts.stream, opts.subject, opts.durable, opts.ack_wait);
      }
      auto batch = consumer->fetch(opts.batch, opts.fetch_wait);
      if constexpr (detail::consume_handler_for<Handler, std::span<delivery>>) {
        if (!batch.empty()) {
          const auto v = detail::run_handler(handle, std::span<delivery>(batch), opts);
          for (auto &d : batch) {
            detail::settle(d, v, opts);
          }
        }
      } else {
        for (auto &d : batch) {
          detail::settle(d, detail::run_handler(handle, d, opts), opts);
        }
      }
      failures = 0;
    } catch (const std::exception &e) {
      if (opts.on_error) {
        opts.on_error(e);
      }
      consumer.reset();
      (void)lakh::sleep_for(opts.retry.delay(failures), st);
      failures = std::min(failures + 1, 64U);
    }
  }
}

} // namespace lakh::nats
