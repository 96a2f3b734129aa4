#pragma once
// lakh/error.hpp: the exception types lakh throws.
//
// Expected outcomes (full, empty, timeout, cancelled, closed) are return values, never
// exceptions. Exceptions mean misuse or a failing environment:
//   - std::invalid_argument: an argument is out of its documented range;
//   - lakh::usage_error (a std::logic_error): a call is invalid in the object's state, e.g.
//     releasing semaphore permits that were never acquired;
// Messages name the function and the values: "lakh::semaphore::acquire: n (12) exceeds
// capacity (8)".

#include <stdexcept>
#include <string>

namespace lakh {

/// A call that is invalid in the object's current state (a programming error).
class usage_error : public std::logic_error {
public:
  using std::logic_error::logic_error;
};

} // namespace lakh
