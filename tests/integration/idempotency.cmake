# lakh idempotency stores against real servers (scripts/services run): PostgreSQL, Redis.
if(TARGET lakh::pg)
  lakh_add_test(test_idempotency_pg SOURCES integration/idempotency_pg_test.cpp LIBS lakh::pg
                LABELS integration)
endif()
if(TARGET lakh::redis)
  lakh_add_test(test_idempotency_redis SOURCES integration/idempotency_redis_test.cpp
                LIBS lakh::redis LABELS integration)
endif()
# Stops and restarts the Redis server of scripts/services: must not overlap other tests.
if(TARGET lakh::redis)
  lakh_add_test(test_idempotency_redis_restart SOURCES integration/idempotency_redis_restart_test.cpp
                LIBS lakh::redis LABELS integration SERIAL)
endif()
# Several processes (lakh_idempotency_child) race for one key in PostgreSQL and in Redis.
if(TARGET lakh::pg AND TARGET lakh::redis)
  add_executable(lakh_idempotency_child integration/idempotency_child.cpp)
  target_link_libraries(lakh_idempotency_child PRIVATE lakh::pg lakh::redis lakh_examples_common
                                                 lakh_dev_flags)
  lakh_add_test(test_idempotency_multiprocess SOURCES integration/idempotency_multiprocess_test.cpp
                LIBS lakh::pg lakh::redis LABELS integration)
  target_compile_definitions(test_idempotency_multiprocess
                             PRIVATE LAKH_IDEMPOTENCY_CHILD="$<TARGET_FILE:lakh_idempotency_child>")
  add_dependencies(test_idempotency_multiprocess lakh_idempotency_child)
endif()
