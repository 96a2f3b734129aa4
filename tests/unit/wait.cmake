lakh_add_test(test_wait SOURCES unit/wait_test.cpp)
