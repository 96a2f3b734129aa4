# lakh::pg unit tests (no database needed); built only when libpqxx was found.
if(TARGET lakh::pg)
  lakh_add_test(test_pg_classify SOURCES unit/pg_classify_test.cpp LIBS lakh::pg)
  lakh_add_test(test_pg_advisory_key SOURCES unit/pg_advisory_key_test.cpp LIBS lakh::pg)
  lakh_add_test(test_pg_copy_format SOURCES unit/pg_copy_format_test.cpp LIBS lakh::pg)
  lakh_add_test(test_pg_conninfo SOURCES unit/pg_conninfo_test.cpp LIBS lakh::pg)
endif()
