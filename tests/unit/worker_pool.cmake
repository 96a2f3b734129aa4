lakh_add_test(test_worker_pool SOURCES unit/worker_pool_test.cpp)
