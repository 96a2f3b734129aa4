#pragma once
// Test support for tests that end PostgreSQL connections mid-statement on purpose
// (pg_terminate_backend): libpqxx 6.4.5 itself then leaks one PGresult (2264 bytes).
// Reproduced without lakh: pqxx::work t{c}; t.exec("SELECT
// pg_terminate_backend(pg_backend_pid())"). This header defines LeakSanitizer's suppressions
// hook for the test executable: include it from exactly one source file of the executable.

extern "C" const char *__lsan_default_suppressions(); // NOLINT
extern "C" const char *__lsan_default_suppressions() {
  return "leak:libpqxx-6.4.so\n";
}
