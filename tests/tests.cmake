# The test executables, one per topic. Each topic keeps its registration beside its sources
# in a fragment, tests/<kind>/<topic>.cmake, included here (paths relative to tests/).
# Integration tests (label "integration") need the servers from scripts/services and fail,
# never skip, when one is missing.
lakh_add_test(test_version SOURCES unit/version_test.cpp)
target_compile_definitions(test_version PRIVATE LAKH_TEST_PROJECT_VERSION="${PROJECT_VERSION}")

file(GLOB lakh_test_fragments CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/*/*.cmake")
list(SORT lakh_test_fragments)
foreach(fragment IN LISTS lakh_test_fragments)
  include("${fragment}")
endforeach()
