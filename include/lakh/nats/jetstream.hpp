#pragma once
// lakh/nats/jetstream.hpp: a NATS connection with its JetStream context (RAII over cnats,
// libnats-dev 3.x), streams created idempotently, and batch publishing whose result says, per
// message, stored / duplicate (by Nats-Msg-Id) / failed. Unlike raw cnats nothing leaks on any
// path and errors throw lakh::nats::nats_error naming the server; unlike nats.go, timeouts are
// explicit (no context.Context). Consuming: lakh/nats/pull_consumer.hpp (included here).
// Docs: docs/nats.md.

#include <nats/nats.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lakh::nats {

/// A NATS or JetStream call failed; what() names the call, the server URL and cnats's status
/// text (and JetStream's error code when there is one).
class nats_error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};
/// The former name of nats_error, kept for one release.
using error [[deprecated("renamed lakh::nats::nats_error")]] = nats_error;

/// One message header.
struct header {
  std::string name;
  std::string value;
};

/// One message to publish.
struct message {
  std::string subject;
  std::string payload;
  std::string id; ///< sent as Nats-Msg-Id (JetStream dedupes on it); empty: no id
  std::vector<header> headers = {};
};

/// What JetStream said about one published message.
enum class ack_status : std::uint8_t {
  failed,    ///< an error, or no acknowledgement before the timeout: publish again (same id)
  stored,    ///< stored in the stream
  duplicate, ///< the stream already had this id (within its duplicate window): nothing stored
  /// refused for good: no stream covers the subject (no responders, and JetStream's API says
  /// no stream has it; a stream without a leader for a moment is `failed`) or the message
  /// exceeds the server's max_payload; publishing it again fails the same way until that is
  /// fixed
  refused,
};

/// The outcome of publish_batch.
struct publish_result {
  std::vector<ack_status> status; ///< one per message, in the batch's order
  std::size_t stored = 0;
  std::size_t duplicates = 0;
  std::size_t failed = 0;  ///< refused ones included
  std::string first_error; ///< the first failure's text, empty when none failed
  /// Empty when none failed, else one per message: its failure's text (empty if none known).
  std::vector<std::string> errors;
  /// True when every message was stored or was a duplicate.
  [[nodiscard]] bool all_acknowledged() const noexcept { return failed == 0; }
};

/// Where a stream keeps its messages.
enum class storage : std::uint8_t { file, memory };

/// What ensure_stream creates.
struct stream_config {
  std::string name;                  ///< no spaces, '.', '*' or '>'
  std::vector<std::string> subjects; ///< at least one
  storage store = storage::file;     ///< fixed once the stream exists
  std::chrono::milliseconds duplicate_window{std::chrono::minutes(2)}; ///< > 0
  /// Retention limits: messages older than max_age, or beyond max_bytes / max_messages (the
  /// oldest first), are discarded by the server. Unset: a new stream has no such limit, and
  /// an existing stream keeps whatever limit it has (an operator's setting is not reset).
  std::optional<std::chrono::milliseconds> max_age{};
  std::optional<std::int64_t> max_bytes{};
  std::optional<std::int64_t> max_messages{};
  /// Copies of each message, 1..5, on as many servers of a JetStream cluster (3 survives the
  /// loss of one server). Unset: a new stream has the server's default (1), and an existing
  /// stream keeps its own; set, an existing stream is changed to it (a cluster moves the
  /// copies).
  std::optional<int> replicas{};
};

/// Connection settings. Credentials can also be in the URL: "nats://user:password@host:4222"
/// or "nats://token@host:4222"; "tls://host:4222" asks for TLS like `tls`.
struct jetstream_options {
  std::string name = "lakh";                     ///< client name shown by the server
  std::chrono::milliseconds reconnect_wait{250}; ///< between reconnect attempts (forever)
  std::int64_t max_pending = 65536;              ///< async publishes in flight at most
  /// A credentials file (user JWT and NKey seed, the ".creds" of nsc, NGS or Synadia Cloud);
  /// read at each connect. Empty: none.
  std::string credentials_file{};
  /// TLS: required when true (the server must offer it), and implied by ca_file, cert_file.
  bool tls = false;
  /// PEM file of the CAs that sign the server's certificate; empty: the system's default CAs.
  std::string ca_file{};
  /// Client certificate and its private key (PEM) for a server that verifies clients (mutual
  /// TLS); both or neither.
  std::string cert_file{};
  std::string key_file{};
};

namespace detail {
// The URLs of a comma-separated list, each without surrounding spaces; empty entries dropped.
inline std::vector<std::string> split_urls(std::string_view urls) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= urls.size()) {
    const auto end = std::min(urls.find(',', start), urls.size());
    auto u = urls.substr(start, end - start);
    const auto first = u.find_first_not_of(" \t");
    if (first != std::string_view::npos) {
      u = u.substr(first, u.find_last_not_of(" \t") - first + 1);
      out.emplace_back(u);
    }
    start = end + 1;
  }
  return out;
}

// `urls` (one URL, or several separated by commas) with every password masked: "user:***@"
// and a lone token "***@".
inline std::string redact_urls(std::string_view urls) {
  std::string out;
  std::size_t start = 0;
  while (start <= urls.size()) {
    auto end = urls.find(',', start);
    auto u =
        urls.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    auto scheme = u.find("://");
    auto at = u.rfind('@');
    if (scheme != std::string_view::npos && at != std::string_view::npos && at > scheme) {
      auto colon = u.find(':', scheme + 3);
      if (colon == std::string_view::npos || colon > at) {
        colon = scheme + 2;
      }
      out.append(u.substr(0, colon + 1)).append("***").append(u.substr(at));
    } else {
      out.append(u);
    }
    if (end == std::string_view::npos) {
      break;
    }
    out += ',';
    start = end + 1;
  }
  return out;
}

using options_ptr = std::unique_ptr<natsOptions, void (*)(natsOptions *)>;

// The cnats options for `url` and `opts`. Throws nats_error naming the setting (and the file)
// that cnats refused; `shown` is the URL as errors show it (password masked).
inline options_ptr make_options(const std::string &url, const jetstream_options &opts,
                                const std::string &shown) {
  auto check = [&](natsStatus s, const std::string &what) {
    if (s != NATS_OK) {
      std::string text = "lakh::nats: " + what + " (" + shown + "): " + natsStatus_GetText(s);
      const char *last = nats_GetLastError(nullptr);
      if (last != nullptr && *last != '\0' && text.find(last) == std::string::npos) {
        text += ": ";
        text += last;
      }
      throw nats_error(text);
    }
  };
  if (opts.cert_file.empty() != opts.key_file.empty()) {
    throw std::invalid_argument("lakh::nats: jetstream_options cert_file (\"" + opts.cert_file +
                                "\") and key_file (\"" + opts.key_file +
                                "\") go together: set both or neither");
  }
  natsOptions *o = nullptr;
  check(natsOptions_Create(&o), "natsOptions_Create");
  options_ptr owned(o, natsOptions_Destroy);
  // cnats 3.4 reads one URL in SetURL: a cluster's several go to SetServers, which the
  // client tries (in random order) at connect and again at each reconnect.
  const auto urls = split_urls(url);
  if (urls.size() > 1) {
    std::vector<const char *> servers;
    for (const auto &u : urls) {
      servers.push_back(u.c_str());
    }
    check(natsOptions_SetServers(o, servers.data(), static_cast<int>(servers.size())),
          "natsOptions_SetServers");
  } else {
    check(natsOptions_SetURL(o, url.c_str()), "natsOptions_SetURL");
  }
  check(natsOptions_SetName(o, opts.name.c_str()), "natsOptions_SetName");
  check(natsOptions_SetMaxReconnect(o, -1), "natsOptions_SetMaxReconnect");
  check(natsOptions_SetReconnectWait(o, opts.reconnect_wait.count()),
        "natsOptions_SetReconnectWait");
  if (!opts.credentials_file.empty()) {
    check(natsOptions_SetUserCredentialsFromFiles(o, opts.credentials_file.c_str(), nullptr),
          "credentials file " + opts.credentials_file);
  }
  if (opts.tls || !opts.ca_file.empty() || !opts.cert_file.empty()) {
    check(natsOptions_SetSecure(o, true), "TLS (natsOptions_SetSecure)");
  }
  if (!opts.ca_file.empty()) {
    check(natsOptions_LoadCATrustedCertificates(o, opts.ca_file.c_str()),
          "CA file " + opts.ca_file);
  }
  if (!opts.cert_file.empty()) {
    check(natsOptions_LoadCertificatesChain(o, opts.cert_file.c_str(), opts.key_file.c_str()),
          "certificate " + opts.cert_file + " with key " + opts.key_file);
  }
  return owned;
}
} // namespace detail

/// A connection to a NATS server with a JetStream context. Move-only. After a successful
/// connect it reconnects forever; publishes during an outage are buffered by cnats and
/// acknowledged (or time out) once the server is back.
///
/// Every member is thread-safe (concurrent publish_batch calls run one after the other: a
/// batch owns the acknowledgement state), may allocate, and blocks only where it says so.
/// Memory ordering: a message's status in the
/// result happens-after the server's acknowledgement of it (cnats's thread writes it under a
/// mutex the caller takes before returning).
class jetstream {
public:
  /// Connects to `url` ("nats://127.0.0.1:4222", or several separated by commas; credentials
  /// may be in it: jetstream_options).
  /// Blocks: while connecting (cnats's connect timeout, 2 s).
  /// @throws lakh::nats::nats_error naming the URL (its password masked) and the cnats status
  /// if it fails, or the file cnats could not load (ca_file, cert_file, key_file);
  /// std::invalid_argument if only one of cert_file and key_file is set.
  explicit jetstream(const std::string &url, jetstream_options opts = {})
      : url_(detail::redact_urls(url)), state_(std::make_unique<state>()) {
    auto o = detail::make_options(url, opts, url_);
    check(natsConnection_Connect(&state_->nc, o.get()), "connect");
    jsOptions jo;
    check(jsOptions_Init(&jo), "jsOptions_Init");
    jo.PublishAsync.MaxPending = opts.max_pending;
    jo.PublishAsync.AckHandler = &jetstream::on_ack;
    jo.PublishAsync.AckHandlerClosure = state_.get();
    check(natsConnection_JetStream(&state_->js, state_->nc, &jo), "natsConnection_JetStream");
  }

  jetstream(jetstream &&) noexcept = default;
  jetstream &operator=(jetstream &&) noexcept = default;
  jetstream(const jetstream &) = delete;
  jetstream &operator=(const jetstream &) = delete;
  /// Closes the connection (messages still buffered are dropped: wait for publish_batch).
  ~jetstream() = default;

  /// Creates the stream if it does not exist; if it does, updates its subjects, duplicate
  /// window and the limits `cfg` sets to `cfg`'s when they differ, keeping every other
  /// setting of the existing stream as it is (limits `cfg` leaves unset, replicas, discard
  /// policy, per-subject and message-size limits, description, ...: an operator's changes).
  /// Blocks: one or two requests.
  /// @throws std::invalid_argument for a bad name, no subjects or a non-positive window;
  /// lakh::nats::nats_error if the server refuses or the stream exists with the other storage.
  void ensure_stream(const stream_config &cfg) {
    const std::string who = "lakh::nats::jetstream::ensure_stream: ";
    if (cfg.name.empty() || cfg.name.find_first_of(" \t.*>") != std::string::npos) {
      throw std::invalid_argument(who + "stream name \"" + cfg.name +
                                  "\" must be non-empty without spaces, '.', '*' or '>'");
    }
    if (cfg.subjects.empty() || std::any_of(cfg.subjects.begin(), cfg.subjects.end(),
                                            [](const std::string &s) { return s.empty(); })) {
      throw std::invalid_argument(who + "stream " + cfg.name + " needs non-empty subjects");
    }
    if (cfg.duplicate_window.count() <= 0) {
      throw std::invalid_argument(who + "duplicate_window (" +
                                  std::to_string(cfg.duplicate_window.count()) +
                                  " ms) must be positive");
    }
    if (cfg.replicas && (*cfg.replicas < 1 || *cfg.replicas > 5)) {
      throw std::invalid_argument(who + "replicas (" + std::to_string(*cfg.replicas) +
                                  ") must be 1..5");
    }
    std::vector<const char *> subj;
    for (const auto &s : cfg.subjects) {
      subj.push_back(s.c_str());
    }
    jsStreamConfig sc;
    check(jsStreamConfig_Init(&sc), "jsStreamConfig_Init");
    sc.Name = cfg.name.c_str();
    sc.Subjects = subj.data();
    sc.SubjectsLen = static_cast<int>(subj.size());
    sc.Storage = cfg.store == storage::file ? js_FileStorage : js_MemoryStorage;
    sc.Duplicates =
        std::chrono::duration_cast<std::chrono::nanoseconds>(cfg.duplicate_window).count();
    if (cfg.max_age) {
      sc.MaxAge = std::chrono::duration_cast<std::chrono::nanoseconds>(*cfg.max_age).count();
    }
    if (cfg.max_bytes) {
      sc.MaxBytes = *cfg.max_bytes;
    }
    if (cfg.max_messages) {
      sc.MaxMsgs = *cfg.max_messages;
    }
    if (cfg.replicas) {
      sc.Replicas = *cfg.replicas;
    }

    jsStreamInfo *si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    const natsStatus got = js_GetStreamInfo(&si, state_->js, cfg.name.c_str(), nullptr, &jerr);
    if (got == NATS_NOT_FOUND) {
      check(js_AddStream(&si, state_->js, &sc, nullptr, &jerr), "js_AddStream " + cfg.name, jerr);
      jsStreamInfo_Destroy(si);
      return;
    }
    check(got, "js_GetStreamInfo " + cfg.name, jerr);
    std::unique_ptr<jsStreamInfo, void (*)(jsStreamInfo *)> info(si, jsStreamInfo_Destroy);
    if (info->Config->Storage != sc.Storage) {
      throw nats_error("lakh::nats: stream " + cfg.name + " (" + url_ + ") exists with " +
                       (info->Config->Storage == js_FileStorage ? "file" : "memory") +
                       " storage; storage cannot be changed");
    }
    // The update starts from the stream's own configuration (every setting an operator
    // made: limits, replicas, discard policy, description, ...) and changes only what cfg
    // asks for. The pointers it copies stay valid while `info` lives.
    jsStreamConfig up = *info->Config;
    up.Subjects = sc.Subjects;
    up.SubjectsLen = sc.SubjectsLen;
    up.Duplicates = sc.Duplicates;
    up.MaxAge = cfg.max_age ? sc.MaxAge : up.MaxAge;
    up.MaxBytes = cfg.max_bytes ? sc.MaxBytes : up.MaxBytes;
    up.MaxMsgs = cfg.max_messages ? sc.MaxMsgs : up.MaxMsgs;
    up.Replicas = cfg.replicas ? sc.Replicas : up.Replicas;
    const auto &now = *info->Config;
    bool same = now.Duplicates == up.Duplicates && now.SubjectsLen == up.SubjectsLen &&
                now.MaxAge == up.MaxAge && now.MaxBytes == up.MaxBytes &&
                now.MaxMsgs == up.MaxMsgs && now.Replicas == up.Replicas;
    for (int i = 0; same && i < up.SubjectsLen; ++i) {
      same = std::string_view(now.Subjects[i]) == subj[static_cast<std::size_t>(i)];
    }
    if (!same) {
      jsStreamInfo *updated = nullptr;
      check(js_UpdateStream(&updated, state_->js, &up, nullptr, &jerr),
            "js_UpdateStream " + cfg.name, jerr);
      jsStreamInfo_Destroy(updated);
    }
  }

  /// Messages stored in stream `name`. Blocks: a request. @throws lakh::nats::nats_error.
  std::uint64_t stream_messages(const std::string &name) {
    jsStreamInfo *si = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    check(js_GetStreamInfo(&si, state_->js, name.c_str(), nullptr, &jerr),
          "js_GetStreamInfo " + name, jerr);
    const auto n = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    return n;
  }

  /// Deletes stream `name` if it exists (a failure is ignored). Blocks: a request.
  void delete_stream(const std::string &name) noexcept {
    jsErrCode jerr = static_cast<jsErrCode>(0);
    (void)js_DeleteStream(state_->js, name.c_str(), nullptr, &jerr);
  }

  /// Publishes every message asynchronously (pipelined on the connection) and waits up to
  /// `timeout` for all acknowledgements; returns each message's status. Messages not
  /// acknowledged by then are taken back and reported failed (a late acknowledgement is
  /// ignored): publish them again with the same ids and JetStream keeps one copy.
  /// Blocks: until every message is acknowledged or `timeout`; then, for messages answered
  /// "no responders", one request per subject (does a stream cover it?).
  /// @throws std::invalid_argument if timeout is not positive; never for a message that
  /// cannot be sent: it is reported failed.
  publish_result publish_batch(std::span<const message> batch,
                               std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    if (timeout.count() <= 0) {
      throw std::invalid_argument("lakh::nats::jetstream::publish_batch: timeout (" +
                                  std::to_string(timeout.count()) + " ms) must be positive");
    }
    std::lock_guard batch_lock(state_->batch_mu);
    publish_result r;
    r.status.assign(batch.size(), ack_status::failed);
    {
      std::lock_guard g(state_->mu);
      state_->result = &r;
      state_->index.clear();
      state_->no_responders.clear();
      state_->index.reserve(batch.size());
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto s = publish_one(batch[i], i);
      if (s != NATS_OK) {
        std::lock_guard g(state_->mu);
        if (s == NATS_MAX_PAYLOAD) {
          r.status[i] = ack_status::refused;
        }
        note_error(r, i,
                   "js_PublishMsgAsync " + batch[i].subject + " (" + url_ + "): " +
                       natsStatus_GetText(s) + " (" + std::to_string(batch[i].payload.size()) +
                       " bytes, the server's max_payload is " +
                       std::to_string(natsConnection_GetMaxPayload(state_->nc)) + ")");
        if (s == NATS_CONNECTION_CLOSED) {
          break; // closed for good: the rest cannot go either
        }
      }
    }
    jsPubOptions wait;
    jsPubOptions_Init(&wait);
    wait.MaxWait = timeout.count();
    const natsStatus done = js_PublishAsyncComplete(state_->js, &wait);
    {
      // cnats may count an acknowledgement before its handler ran: let the handlers finish.
      std::unique_lock g(state_->mu);
      state_->cv.wait_for(g, std::min(timeout, std::chrono::milliseconds(1000)),
                          [&] { return state_->index.empty(); });
    }
    if (done != NATS_OK) {
      natsMsgList pending{};
      const bool took = js_PublishAsyncGetPendingList(&pending, state_->js) == NATS_OK;
      {
        std::lock_guard g(state_->mu);
        state_->index.clear(); // their statuses stay failed; late acks are ignored
        note_error(r, r.status.size(),
                   "js_PublishAsyncComplete (" + url_ + "): " + natsStatus_GetText(done));
      }
      if (took) {
        natsMsgList_Destroy(&pending);
      }
    }
    std::vector<std::size_t> no_responders;
    {
      std::lock_guard g(state_->mu);
      state_->result = nullptr;
      state_->index.clear();
      no_responders.swap(state_->no_responders);
    }
    refuse_if_no_stream(batch, no_responders, r);
    for (auto st : r.status) {
      r.stored += st == ack_status::stored ? 1U : 0U;
      r.duplicates += st == ack_status::duplicate ? 1U : 0U;
      r.failed += st == ack_status::failed || st == ack_status::refused ? 1U : 0U;
    }
    return r;
  }

  /// The server URL given to the constructor, its password or token masked ("user:***@").
  [[nodiscard]] const std::string &url() const noexcept { return url_; }

  /// The cnats JetStream context, for calls lakh does not wrap; owned by this object and
  /// valid while it lives.
  [[nodiscard]] jsCtx *native_handle() const noexcept { return state_->js; }

private:
  // "No responders" answers a publish both when no stream covers its subject (refused: it
  // fails the same way until a stream is made) and when the stream exists but has no leader
  // for a moment (a cluster electing one after a server's loss: failed, publish again). The
  // JetStream API tells them apart; when it does not answer either, the message stays failed.
  void refuse_if_no_stream(std::span<const message> batch, const std::vector<std::size_t> &which,
                           publish_result &r) {
    std::unordered_map<std::string_view, natsStatus> streams; // per subject, asked once
    for (const auto i : which) {
      const std::string &subject = batch[i].subject;
      auto it = streams.find(subject);
      if (it == streams.end()) {
        jsOptions o;
        jsOptions_Init(&o);
        o.Stream.Info.SubjectsFilter = subject.c_str();
        jsStreamNamesList *list = nullptr;
        jsErrCode jerr = static_cast<jsErrCode>(0);
        it = streams.emplace(subject, js_StreamNames(&list, state_->js, &o, &jerr)).first;
        jsStreamNamesList_Destroy(list);
      }
      if (it->second == NATS_NOT_FOUND) {
        r.status[i] = ack_status::refused;
      } else if (i < r.errors.size()) {
        r.errors[i] += it->second == NATS_OK
                           ? " (a stream covers the subject but has no leader now: publish again)"
                           : " (JetStream did not say whether a stream covers the subject: "
                             "publish again)";
      }
    }
  }

  struct state {
    natsConnection *nc = nullptr;
    jsCtx *js = nullptr;
    std::mutex batch_mu;                                    // one batch at a time
    std::mutex mu;                                          // guards result and index
    std::condition_variable cv;                             // index became empty
    publish_result *result = nullptr;                       // the batch in progress
    std::unordered_map<const natsMsg *, std::size_t> index; // in flight -> batch position
    std::vector<std::size_t> no_responders; // batch positions answered "no responders"
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

  natsStatus publish_one(const message &m, std::size_t i) {
    natsMsg *msg = nullptr;
    natsStatus s = natsMsg_Create(&msg, m.subject.c_str(), nullptr, m.payload.data(),
                                  static_cast<int>(m.payload.size()));
    for (std::size_t h = 0; s == NATS_OK && h < m.headers.size(); ++h) {
      s = natsMsgHeader_Add(msg, m.headers[h].name.c_str(), m.headers[h].value.c_str());
    }
    if (s != NATS_OK) {
      natsMsg_Destroy(msg);
      return s;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = m.id.empty() ? nullptr : m.id.c_str();
    const natsMsg *key = msg;
    {
      std::lock_guard g(state_->mu);
      state_->index.emplace(key, i); // before the send: the ack may come at once
    }
    s = js_PublishMsgAsync(state_->js, &msg, &po);
    if (s != NATS_OK) {
      std::lock_guard g(state_->mu);
      state_->index.erase(key);
    }
    natsMsg_Destroy(msg); // a no-op when cnats took it (msg is then NULL)
    return s;
  }

  // Records message i's failure (i == size: the batch's, for each message failed without one).
  static void note_error(publish_result &r, std::size_t i, const std::string &text) {
    if (r.first_error.empty()) {
      r.first_error = text;
    }
    r.errors.resize(r.status.size());
    if (i < r.errors.size()) {
      r.errors[i] = text;
      return;
    }
    for (std::size_t j = 0; j < r.errors.size(); ++j) {
      if (r.errors[j].empty() && r.status[j] == ack_status::failed) {
        r.errors[j] = text;
      }
    }
  }

  // cnats's thread, once per message: record the status, then free the message (ours).
  static void on_ack(jsCtx *, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
    auto *st = static_cast<state *>(closure);
    {
      std::lock_guard g(st->mu);
      const auto it = st->index.find(msg);
      if (it != st->index.end() && st->result != nullptr) {
        auto &status = st->result->status[it->second];
        if (pa != nullptr) {
          status = pa->Duplicate ? ack_status::duplicate : ack_status::stored;
        } else if (pae != nullptr) {
          if (pae->Err == NATS_NO_RESPONDERS) { // no stream, or one without a leader now
            st->no_responders.push_back(it->second);
          }
          note_error(*st->result, it->second,
                     std::string("JetStream refused ") + natsMsg_GetSubject(msg) + ": " +
                         (pae->ErrText != nullptr ? pae->ErrText : natsStatus_GetText(pae->Err)));
        }
        st->index.erase(it);
        if (st->index.empty()) {
          st->cv.notify_all();
        }
      }
    }
    natsMsg_Destroy(msg);
  }

  void check(natsStatus s, const std::string &what, jsErrCode jerr = static_cast<jsErrCode>(0)) {
    if (s != NATS_OK) {
      std::string text = "lakh::nats: " + what + " (" + url_ + "): " + natsStatus_GetText(s);
      if (jerr != 0) {
        text += " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")";
      }
      const char *last = nats_GetLastError(nullptr);
      if (last != nullptr && *last != '\0' && text.find(last) == std::string::npos) {
        text += ": ";
        text += last;
      }
      throw nats_error(text);
    }
  }

  std::string url_;
  std::unique_ptr<state> state_;
};

} // namespace lakh::nats

// The consumer side, so that code including only this header keeps compiling.
#include <lakh/nats/pull_consumer.hpp>
