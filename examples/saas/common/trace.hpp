#pragma once
// examples/saas/common/trace.hpp: W3C Trace Context (https://www.w3.org/TR/trace-context/)
// `traceparent` values, propagated by hand HTTP -> gRPC metadata -> NATS headers -> logs
// (OpenTelemetry C++ is not packaged in Debian 12).
//
//   traceparent = "00-" trace-id(32 hex) "-" parent-id(16 hex) "-" flags(2 hex)
// All-zero ids are invalid; version ff is invalid; upper-case hex is invalid.

#include <array>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

namespace saas {

struct trace_context {
  std::string trace_id;   ///< 32 lower-case hex digits, not all zero
  std::string parent_id;  ///< 16 lower-case hex digits, not all zero (this hop's span id)
  std::uint8_t flags = 1; ///< 01 = sampled

  /// The header value.
  [[nodiscard]] std::string header() const {
    static constexpr char hex[] = "0123456789abcdef";
    std::string f = {hex[flags >> 4U], hex[flags & 15U]};
    return "00-" + trace_id + "-" + parent_id + "-" + f;
  }

  /// Parses a traceparent header; nullopt when it is malformed (then start a new trace).
  static std::optional<trace_context> parse(std::string_view v) {
    if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' ||
        (v.size() > 55 && v[55] != '-')) {
      return std::nullopt;
    }
    auto hex_ok = [](std::string_view s) {
      bool nonzero = false;
      for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
          return false;
        }
        nonzero = nonzero || c != '0';
      }
      return nonzero;
    };
    const auto version = v.substr(0, 2);
    if (!hex_ok(std::string("1") + std::string(version)) || version == "ff" ||
        (version == "00" && v.size() != 55)) {
      return std::nullopt;
    }
    const auto trace = v.substr(3, 32);
    const auto parent = v.substr(36, 16);
    const auto flags = v.substr(53, 2);
    if (!hex_ok(trace) || !hex_ok(parent) || !hex_ok(std::string("1") + std::string(flags))) {
      return std::nullopt;
    }
    return trace_context{std::string(trace), std::string(parent),
                         static_cast<std::uint8_t>(std::stoi(std::string(flags), nullptr, 16))};
  }

  /// A new trace (random ids).
  static trace_context root() { return {random_hex(32), random_hex(16), 1}; }

  /// The context for the next hop: same trace, a new span id.
  [[nodiscard]] trace_context child() const { return {trace_id, random_hex(16), flags}; }

private:
  static std::string random_hex(std::size_t n) {
    thread_local std::mt19937_64 rng(std::random_device{}());
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    while (out.size() < n) {
      const auto r = rng();
      for (int i = 0; i < 16 && out.size() < n; ++i) {
        out += hex[(r >> (4U * static_cast<unsigned>(i))) & 15U];
      }
    }
    return out.find_first_not_of('0') == std::string::npos ? random_hex(n) : out;
  }
};

} // namespace saas
