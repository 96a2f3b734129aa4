lakh_add_test(test_idempotency SOURCES unit/idempotency_test.cpp)
