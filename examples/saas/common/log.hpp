#pragma once
// examples/saas/common/log.hpp: structured logs, one JSON object per line on stderr, with the
// trace id of the request that caused them and this hop's span id.

#include "trace.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace saas {

using json = nlohmann::json;

/// Writes one log line: {"ts":"...","service":...,"level":...,"msg":...,...}, with
/// "trace_id" and "span_id" when `trace` is given (`trace.parent_id`: each hop logs under the
/// span it took for itself, trace_context::child()). Thread-safe (one fwrite per line);
/// blocks on stderr.
inline void log(std::string_view service, std::string_view level, const trace_context *trace,
                std::string_view msg, json fields = json::object()) {
  const auto now = std::chrono::system_clock::now();
  const auto t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()) %
                  std::chrono::seconds(1);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char ts[64];
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(ms.count()));
  json line = {{"ts", ts}, {"service", service}, {"level", level}, {"msg", msg}};
  if (trace != nullptr) {
    line["trace_id"] = trace->trace_id;
    line["span_id"] = trace->parent_id;
  }
  line.update(fields);
  const auto text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  std::fwrite(text.data(), 1, text.size(), stderr);
}

/// A log line of the request that `trace` belongs to.
inline void log(std::string_view service, std::string_view level, const trace_context &trace,
                std::string_view msg, json fields = json::object()) {
  log(service, level, &trace, msg, std::move(fields));
}

/// A log line outside any request (start, stop, background failures).
inline void log(std::string_view service, std::string_view level, std::string_view msg,
                json fields = json::object()) {
  log(service, level, nullptr, msg, std::move(fields));
}

} // namespace saas
