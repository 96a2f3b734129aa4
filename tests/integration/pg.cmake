# lakh::pg integration tests: need PostgreSQL (DATABASE_URL from scripts/services run).
if(TARGET lakh::pg)
  lakh_add_test(test_pg_pool SOURCES integration/pg_pool_test.cpp LIBS lakh::pg LABELS integration)
  lakh_add_test(test_pg_retry SOURCES integration/pg_retry_test.cpp LIBS lakh::pg LABELS integration)
  lakh_add_test(test_pg_advisory_lock SOURCES integration/pg_advisory_lock_test.cpp LIBS lakh::pg
                LABELS integration)
  lakh_add_test(test_pg_copy SOURCES integration/pg_copy_test.cpp LIBS lakh::pg LABELS integration)
  lakh_add_test(test_pg_array SOURCES integration/pg_array_test.cpp LIBS lakh::pg LABELS integration)
  lakh_add_test(test_pg_conninfo_db SOURCES integration/pg_conninfo_test.cpp LIBS lakh::pg
                LABELS integration)
endif()
