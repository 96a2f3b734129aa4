#pragma once
// lakh/nats/jetstream.hpp: a thin RAII layer over cnats (libnats-dev 3.x) for JetStream:
// a connection with its JetStream context, stream creation, and batch publishing with
// asynchronous acknowledgements and a message id per message (the Nats-Msg-Id header), so
// that JetStream drops republished duplicates within the stream's duplicate window.
//
// Errors throw lakh::nats::error, whose text names the server URL and cnats's status text.

#include <nats/nats.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace lakh::nats {

/// A NATS or JetStream call failed; what() names the server and the cnats status.
class error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

/// One message to publish: subject, payload and the id JetStream dedupes on.
struct message {
  std::string subject;
  std::string payload;
  std::string id; ///< sent as Nats-Msg-Id; empty: no dedupe
};

/// A connection to a NATS server with a JetStream context. Move-only.
///
/// Thread-safety: publish_batch from one thread at a time per object (cnats connections are
/// thread-safe, the failure counting of a batch is per object); the rest is safe.
class jetstream {
public:
  /// Connects to `url` ("nats://127.0.0.1:4222").
  /// Blocks: while connecting. @throws lakh::nats::error naming the URL if it fails.
  explicit jetstream(std::string url) : url_(std::move(url)), state_(std::make_unique<state>()) {
    natsOptions *opts = nullptr;
    check(natsOptions_Create(&opts), "natsOptions_Create");
    std::unique_ptr<natsOptions, void (*)(natsOptions *)> owned_opts(opts, natsOptions_Destroy);
    check(natsOptions_SetURL(opts, url_.c_str()), "natsOptions_SetURL");
    check(natsOptions_SetMaxReconnect(opts, -1), "natsOptions_SetMaxReconnect"); // ride restarts
    check(natsConnection_Connect(&state_->nc, opts), "connect");
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.ErrHandler = &jetstream::on_publish_error;
    jo.PublishAsync.ErrHandlerClosure = state_.get();
    check(natsConnection_JetStream(&state_->js, state_->nc, &jo), "natsConnection_JetStream");
  }

  jetstream(jetstream &&) noexcept = default;
  jetstream &operator=(jetstream &&) noexcept = default;
  jetstream(const jetstream &) = delete;
  jetstream &operator=(const jetstream &) = delete;
  ~jetstream() = default;

  /// Creates stream `name` over `subjects` (file storage) with a duplicate window, or leaves
  /// an existing one as it is. Blocks: a request. @throws lakh::nats::error.
  void ensure_stream(const std::string &name, const std::vector<std::string> &subjects,
                     std::chrono::seconds duplicate_window = std::chrono::minutes(2)) {
    jsStreamInfo *si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    if (js_GetStreamInfo(&si, state_->js, name.c_str(), nullptr, &jerr) == NATS_OK) {
      jsStreamInfo_Destroy(si);
      return;
    }
    std::vector<const char *> subj;
    for (const auto &s : subjects) {
      subj.push_back(s.c_str());
    }
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = name.c_str();
    cfg.Subjects = subj.data();
    cfg.SubjectsLen = static_cast<int>(subj.size());
    cfg.Storage = js_FileStorage;
    cfg.Duplicates = std::chrono::duration_cast<std::chrono::nanoseconds>(duplicate_window).count();
    check(js_AddStream(&si, state_->js, &cfg, nullptr, &jerr), "js_AddStream " + name);
    jsStreamInfo_Destroy(si);
  }

  /// Messages stored in stream `name`. Blocks: a request. @throws lakh::nats::error.
  std::uint64_t stream_messages(const std::string &name) {
    jsStreamInfo *si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    check(js_GetStreamInfo(&si, state_->js, name.c_str(), nullptr, &jerr),
          "js_GetStreamInfo " + name);
    const auto n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
  }

  /// Deletes stream `name` if it exists. Blocks: a request. @throws nothing.
  void delete_stream(const std::string &name) noexcept {
    jsErrCode jerr = static_cast<jsErrCode>(0);
    (void)js_DeleteStream(state_->js, name.c_str(), nullptr, &jerr);
  }

  /// Publishes all messages asynchronously and waits up to `timeout` for every
  /// acknowledgement. Returns true if all were acknowledged (duplicates count as
  /// acknowledged: JetStream already has them), false if any failed or timed out (publish
  /// again: the ids make it safe). Blocks: until acknowledged or timeout.
  /// @throws lakh::nats::error if a message cannot even be queued (e.g. the connection is
  /// closed for good).
  bool publish_batch(const std::vector<message> &batch,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    state_->failures.store(0);
    for (const auto &m : batch) {
      natsMsg *msg = nullptr;
      check(natsMsg_Create(&msg, m.subject.c_str(), nullptr, m.payload.data(),
                           static_cast<int>(m.payload.size())),
            "natsMsg_Create");
      jsPubOptions po;
      jsPubOptions_Init(&po);
      po.MsgId = m.id.empty() ? nullptr : m.id.c_str();
      const natsStatus s = js_PublishMsgAsync(state_->js, &msg, &po);
      if (s != NATS_OK) {
        natsMsg_Destroy(msg); // still ours when the call failed
        check(s, "js_PublishMsgAsync " + m.subject);
      }
    }
    jsPubOptions wait;
    jsPubOptions_Init(&wait);
    wait.MaxWait = timeout.count();
    const natsStatus done = js_PublishAsyncComplete(state_->js, &wait);
    return done == NATS_OK && state_->failures.load() == 0;
  }

  /// The server URL. Thread-safety: safe.
  [[nodiscard]] const std::string &url() const noexcept { return url_; }

private:
  struct state {
    natsConnection *nc = nullptr;
    jsCtx *js = nullptr;
    std::atomic<int> failures{0};
    state() = default;
    state(const state &) = delete;
    state &operator=(const state &) = delete;
    ~state() {
      if (js != nullptr) {
        jsCtx_Destroy(js);
      }
      if (nc != nullptr) {
        natsConnection_Destroy(nc);
      }
    }
  };

  static void on_publish_error(jsCtx *, jsPubAckErr *, void *closure) {
    static_cast<state *>(closure)->failures.fetch_add(1);
  }

  void check(natsStatus s, const std::string &what) const {
    if (s != NATS_OK) {
      throw error("lakh::nats: " + what + " (" + url_ + "): " + natsStatus_GetText(s));
    }
  }

  std::string url_;
  std::unique_ptr<state> state_;
};

} // namespace lakh::nats
