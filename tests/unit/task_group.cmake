lakh_add_test(test_task_group SOURCES unit/task_group_test.cpp)
