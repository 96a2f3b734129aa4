# lakh::pg::outbox, its relay to NATS JetStream, and the inbox, against real servers.
if(TARGET lakh::pg)
  lakh_add_test(test_pg_outbox SOURCES integration/pg_outbox_test.cpp LIBS lakh::pg
                LABELS integration)
  lakh_add_test(test_pg_inbox SOURCES integration/pg_inbox_test.cpp LIBS lakh::pg
                LABELS integration)
endif()
if(TARGET lakh::pg AND TARGET lakh::nats)
  lakh_add_test(test_nats_outbox SOURCES integration/nats_outbox_test.cpp
                LIBS lakh::pg lakh::nats LABELS integration)
  lakh_add_test(test_nats_consume SOURCES integration/nats_consume_test.cpp LIBS lakh::nats
                LABELS integration)
  # Stops and restarts the nats-server of scripts/services: must not overlap other tests.
  lakh_add_test(test_nats_restart SOURCES integration/nats_restart_test.cpp
                LIBS lakh::pg lakh::nats LABELS integration SERIAL)
endif()
