#include <lakh/lakh.hpp>

#include <doctest/doctest.h>

#include <string>

TEST_CASE("version.header_matches_cmake_project_version") {
  std::string const from_macros = std::to_string(LAKH_VERSION_MAJOR) + "." +
                                  std::to_string(LAKH_VERSION_MINOR) + "." +
                                  std::to_string(LAKH_VERSION_PATCH);
  CHECK(from_macros == LAKH_TEST_PROJECT_VERSION);
  CHECK(std::string(lakh::version_string) == LAKH_TEST_PROJECT_VERSION);
  CHECK(LAKH_VERSION == LAKH_VERSION_MAJOR * 10000 + LAKH_VERSION_MINOR * 100 + LAKH_VERSION_PATCH);
}
