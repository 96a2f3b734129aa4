#pragma once
// lakh/detail/source_location.hpp: lakh::source_location, std::source_location where the
// compiler provides it, else a compatible stand-in built on __builtin_FILE/LINE/FUNCTION.
//
// Why: libstdc++ 12 only declares std::source_location when the compiler has
// __builtin_source_location, which GCC 11+ has and Clang 14 lacks. The stand-in has the same
// members (current, file_name, function_name, line, column) and, like the std type, captures
// the CALLER's position when used as a defaulted parameter: `void f(lakh::source_location
// site = lakh::source_location::current())`.

#include <cstdint>
#include <version>

#if defined(__cpp_lib_source_location)
#  include <source_location>
#endif

namespace lakh {

#if defined(__cpp_lib_source_location)

/// The position of a call in the source: std::source_location on this toolchain.
using source_location = std::source_location;

#else

/// The position of a call in the source (stand-in for std::source_location, same members).
/// An immutable value: members are pure (thread-safe, never block, never allocate).
class source_location {
public:
  /// The position of the caller when used as a defaulted argument.
  static constexpr source_location
  current(const char *file = __builtin_FILE(), const char *function = __builtin_FUNCTION(),
          std::uint_least32_t line = __builtin_LINE(),
          std::uint_least32_t column = __builtin_COLUMN()) noexcept {
    source_location s;
    s.file_ = file;
    s.function_ = function;
    s.line_ = line;
    s.column_ = column;
    return s;
  }

  constexpr source_location() noexcept = default;

  /// The file name, or "" when unknown.
  constexpr const char *file_name() const noexcept { return file_; }
  /// The enclosing function's name, or "" when unknown.
  constexpr const char *function_name() const noexcept { return function_; }
  /// The line number, or 0 when unknown.
  constexpr std::uint_least32_t line() const noexcept { return line_; }
  /// The column number, or 0 when unknown.
  constexpr std::uint_least32_t column() const noexcept { return column_; }

private:
  const char *file_ = "";
  const char *function_ = "";
  std::uint_least32_t line_ = 0;
  std::uint_least32_t column_ = 0;
};

#endif

} // namespace lakh
