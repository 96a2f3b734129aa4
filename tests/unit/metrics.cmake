lakh_add_test(test_metrics SOURCES unit/metrics_test.cpp)
