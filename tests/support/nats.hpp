#pragma once
// Test support for lakh::nats: the URL with the test server's credentials, reading a stream's
// messages back by sequence number, its configuration, changing it as an operator would, and a
// stream that a test creates under a unique name and deletes when done. Tests only: the library's
// public API has no call to read a message by sequence.
#include <lakh/nats/jetstream.hpp>

#include <support/env.hpp>

#include <nats/nats.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>

namespace lakh::test {

/// NATS with the credentials of the test server's password-protected user
/// ("nats://user:password@host:port", from scripts/services).
inline std::string nats_auth_url() {
  return require_env("LAKH_NATS_AUTH_URL");
}

/// Message `seq` (1-based) of stream `name` with its headers (id = its Nats-Msg-Id).
/// Throws lakh::nats::nats_error naming the server if there is no such message.
inline lakh::nats::message get_message(lakh::nats::jetstream &js, const std::string &name,
                                       std::uint64_t seq) {
  natsMsg *m = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetMsg(&m, js.native_handle(), name.c_str(), seq, nullptr, &jerr);
  if (s != NATS_OK) {
    throw lakh::nats::nats_error("js_GetMsg " + name + " #" + std::to_string(seq) + " (" +
                                 js.url() + "): " + natsStatus_GetText(s) + " (JetStream error " +
                                 std::to_string(static_cast<int>(jerr)) + ")");
  }
  std::unique_ptr<natsMsg, void (*)(natsMsg *)> owned(m, natsMsg_Destroy);
  lakh::nats::message out;
  out.subject = natsMsg_GetSubject(m);
  out.payload.assign(natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m)));
  const char **keys = nullptr;
  int nkeys = 0;
  if (natsMsgHeader_Keys(m, &keys, &nkeys) == NATS_OK) {
    for (int k = 0; k < nkeys; ++k) {
      const char **values = nullptr;
      int nvalues = 0;
      if (natsMsgHeader_Values(m, keys[k], &values, &nvalues) == NATS_OK) {
        for (int v = 0; v < nvalues; ++v) {
          out.headers.push_back({keys[k], values[v]});
        }
        std::free(static_cast<void *>(values)); // NOLINT: cnats allocates the array
      }
    }
    std::free(static_cast<void *>(keys)); // NOLINT
  }
  for (const auto &h : out.headers) {
    if (h.name == "Nats-Msg-Id") {
      out.id = h.value;
    }
  }
  return out;
}

/// Stream `name`'s configuration as the server has it (owns the cnats info).
using stream_info_ptr = std::unique_ptr<jsStreamInfo, void (*)(jsStreamInfo *)>;
inline stream_info_ptr stream_info(lakh::nats::jetstream &js, const std::string &name) {
  jsStreamInfo *si = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  const natsStatus s = js_GetStreamInfo(&si, js.native_handle(), name.c_str(), nullptr, &jerr);
  if (s != NATS_OK) {
    throw lakh::nats::nats_error("js_GetStreamInfo " + name + " (" + js.url() +
                                 "): " + natsStatus_GetText(s));
  }
  return {si, jsStreamInfo_Destroy};
}

/// Changes stream `name`'s configuration out of band, as an operator would (`change` edits a
/// copy of the current configuration, which is then sent with js_UpdateStream).
template <class Change>
void operator_update_stream(lakh::nats::jetstream &js, const std::string &name, Change change) {
  auto info = stream_info(js, name);
  jsStreamConfig cfg = *info->Config;
  change(cfg);
  jsStreamInfo *updated = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  const natsStatus s = js_UpdateStream(&updated, js.native_handle(), &cfg, nullptr, &jerr);
  jsStreamInfo_Destroy(updated);
  if (s != NATS_OK) {
    throw lakh::nats::nats_error("js_UpdateStream " + name + " (" + js.url() +
                                 "): " + natsStatus_GetText(s) + " (JetStream error " +
                                 std::to_string(static_cast<int>(jerr)) + ")");
  }
}

/// A stream `name` on subjects `subjects`, deleted first (a leftover of a crashed run) and
/// again when the test is done.
class scratch_stream {
public:
  scratch_stream(lakh::nats::jetstream &js, lakh::nats::stream_config cfg)
      : js_(&js), name_(cfg.name) {
    js_->delete_stream(name_);
    js_->ensure_stream(cfg);
  }
  scratch_stream(const scratch_stream &) = delete;
  scratch_stream &operator=(const scratch_stream &) = delete;
  ~scratch_stream() { js_->delete_stream(name_); }
  [[nodiscard]] const std::string &name() const noexcept { return name_; }

private:
  lakh::nats::jetstream *js_;
  std::string name_;
};

} // namespace lakh::test
