lakh_add_test(test_semaphore SOURCES unit/semaphore_test.cpp)
