#pragma once
// lakh/version.hpp: the library's version, as macros and as constants.

#define LAKH_VERSION_MAJOR 0
#define LAKH_VERSION_MINOR 2
#define LAKH_VERSION_PATCH 0
/// MAJOR * 10000 + MINOR * 100 + PATCH, for `#if LAKH_VERSION >= 100` checks.
#define LAKH_VERSION (LAKH_VERSION_MAJOR * 10000 + LAKH_VERSION_MINOR * 100 + LAKH_VERSION_PATCH)

namespace lakh {

/// The version as "MAJOR.MINOR.PATCH".
inline constexpr const char *version_string = "0.2.0";

} // namespace lakh
