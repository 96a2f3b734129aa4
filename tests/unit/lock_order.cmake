lakh_add_test(test_lock_order SOURCES unit/lock_order_test.cpp)
