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
