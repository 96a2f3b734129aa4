#pragma once
// lakh/status.hpp: the outcome of a call that can fail in an expected way.
//
// Blocking and try-calls across lakh (semaphore, channel, select, pools) report expected
// outcomes as a `lakh::status` rather than by exception, so that a caller can tell "the
// channel is closed" from "the deadline passed" from "stop was requested" (Go's `v, ok`
// cannot). Misuse throws (see lakh/error.hpp).

#include <string_view>

namespace lakh {

/// Why a call returned. `ok` is the only success.
enum class status {
  ok,      ///< done: sent, received, acquired
  closed,  ///< the channel (or pool) is closed: a send will never succeed, a recv found it drained
  full,    ///< a try_ send found no room
  empty,   ///< a try_ recv found nothing buffered
  timeout, ///< the deadline passed first
  cancelled, ///< the std::stop_token was stopped first
};

/// The enumerator's name, e.g. "timeout".
constexpr std::string_view to_string(status s) noexcept {
  switch (s) {
  case status::ok:
    return "ok";
  case status::closed:
    return "closed";
  case status::full:
    return "full";
  case status::empty:
    return "empty";
  case status::timeout:
    return "timeout";
  case status::cancelled:
    return "cancelled";
  }
  return "unknown";
}

} // namespace lakh
