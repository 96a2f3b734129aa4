# lakh::pg::job_queue against a real PostgreSQL; lakh_job_worker is the worker process the
# multi-process case starts twice.
if(TARGET lakh::pg)
  add_executable(lakh_job_worker integration/job_worker_child.cpp)
  target_link_libraries(lakh_job_worker PRIVATE lakh::lakh lakh::pg lakh_examples_common lakh_dev_flags)
  lakh_add_test(test_pg_job_queue SOURCES integration/pg_job_queue_test.cpp LIBS lakh::pg
                LABELS integration)
  target_compile_definitions(test_pg_job_queue
                             PRIVATE LAKH_JOB_WORKER="$<TARGET_FILE:lakh_job_worker>")
  add_dependencies(test_pg_job_queue lakh_job_worker)
endif()
# lakh::pg::job_worker, the job queue's admin API and its SQL file.
if(TARGET lakh::pg)
  lakh_add_test(test_pg_job_worker SOURCES integration/pg_job_worker_test.cpp LIBS lakh::pg
                LABELS integration)
  target_compile_definitions(test_pg_job_worker
                             PRIVATE LAKH_JOB_QUEUE_SQL="${PROJECT_SOURCE_DIR}/share/lakh/job_queue.sql")
endif()
