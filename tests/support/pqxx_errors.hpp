#pragma once
// support/pqxx_errors.hpp: libpqxx's rollback exceptions made as libpqxx makes them, on every
// version: 6.4 takes the message alone, 7.x and 8.x the message and the query.
#include <pqxx/pqxx>

#include <string>
#include <type_traits>

namespace lakh::test {

template <class E> E pqxx_error(const std::string &what) {
  if constexpr (std::is_constructible_v<E, std::string, std::string>) {
    return E(what, "");
  } else {
    return E(what);
  }
}

} // namespace lakh::test
