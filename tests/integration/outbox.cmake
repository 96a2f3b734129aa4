# lakh::pg::outbox and its relay against a real PostgreSQL.
if(TARGET lakh::pg)
  lakh_add_test(test_pg_outbox SOURCES integration/pg_outbox_test.cpp LIBS lakh::pg
                LABELS integration)
endif()
if(TARGET lakh::pg AND TARGET lakh::nats)
  lakh_add_test(test_nats_outbox SOURCES integration/nats_outbox_test.cpp
                LIBS lakh::pg lakh::nats LABELS integration)
endif()
if(TARGET lakh::pg)
  lakh_add_test(test_pg_inbox SOURCES integration/pg_inbox_test.cpp LIBS lakh::pg
                LABELS integration)
endif()
# Stops and restarts the nats-server of scripts/services: must not overlap other tests.
if(TARGET lakh::pg AND TARGET lakh::nats)
  lakh_add_test(test_nats_restart SOURCES integration/nats_restart_test.cpp
                LIBS lakh::pg lakh::nats LABELS integration SERIAL)
endif()
