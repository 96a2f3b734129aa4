lakh_add_test(test_token_bucket SOURCES unit/token_bucket_test.cpp)
