#pragma once
// examples/saas/common/period.hpp: billing periods, "YYYY-MM" (UTC months).

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace saas {

/// True for a billing period "YYYY-MM" (month 01..12).
inline bool valid_period(std::string_view p) {
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  return p.size() == 7 && digit(p[0]) && digit(p[1]) && digit(p[2]) && digit(p[3]) && p[4] == '-' &&
         digit(p[5]) && digit(p[6]) &&
         ((p[5] == '0' && p[6] != '0') || (p[5] == '1' && p[6] <= '2'));
}

/// The UTC month of a unix time, "YYYY-MM".
inline std::string period_of(std::int64_t unix_seconds) {
  using namespace std::chrono;
  const year_month_day d{floor<days>(sys_seconds(seconds(unix_seconds)))};
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d-%02u", static_cast<int>(d.year()),
                static_cast<unsigned>(d.month()));
  return buf;
}

} // namespace saas
