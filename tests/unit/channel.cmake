lakh_add_test(test_channel SOURCES unit/channel_test.cpp)
