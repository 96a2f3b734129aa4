# The test executables, one per topic. Integration tests (label "integration") need the
# servers from scripts/services and fail, never skip, when one is missing.
lakh_add_test(test_version SOURCES unit/version_test.cpp)
target_compile_definitions(test_version PRIVATE LAKH_TEST_PROJECT_VERSION="${PROJECT_VERSION}")
