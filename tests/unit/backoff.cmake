lakh_add_test(test_backoff SOURCES unit/backoff_test.cpp)
