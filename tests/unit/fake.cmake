lakh_add_test(test_fake_usage SOURCES unit/fake_usage_test.cpp)
