#!/bin/sh
# ctest: verify must notice a wrong figure. Bills a few rows, then changes one thing in the
# database at a time (a tenant's total, a duplicated usage row, a lost invoice event) and
# expects `verify` to fail naming it; the untouched database must pass first.
# Usage: tamper_test.sh <lakh_billing_run>   (under scripts/services: PGHOST, PGPORT, PGUSER)
set -eu
bin=$1
db=lakh_billing_tamper
url="postgresql://${PGUSER:-postgres}@${PGHOST:?run under scripts/services}:${PGPORT:?}/$db"
"$bin" run --rows 3000 --batch 500 --workers 2 --database "$db" --quiet >/dev/null
"$bin" verify --database-url "$url" >/dev/null || { echo "untouched database failed verify"; exit 1; }

sql() { psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "$1" >/dev/null; }
expect_mismatch() { # $1: the check that must fail
  out=$("$bin" verify --database-url "$url") && { echo "verify passed after: $2"; exit 1; }
  echo "$out" | grep -q "$1.*MISMATCH" || { echo "verify did not name '$1' after: $2"; echo "$out"; exit 1; }
  echo "ok: '$2' caught by '$1'"
}

sql "UPDATE billing.tenant_totals SET cents = cents + 1 WHERE tenant_id = (SELECT min(tenant_id) FROM billing.tenant_totals)"
expect_mismatch "checksum (tenant totals)" "one cent added to a tenant's total"
sql "UPDATE billing.tenant_totals SET cents = cents - 1 WHERE tenant_id = (SELECT min(tenant_id) FROM billing.tenant_totals)"

sql "INSERT INTO billing.usage SELECT id + 1000000, tenant_id, user_id, metric, quantity, ts FROM billing.usage WHERE id = 1"
expect_mismatch "usage rows in the table" "a usage row counted twice"
sql "DELETE FROM billing.usage WHERE id = 1000001"

sql "DELETE FROM billing.notified WHERE tenant_id = (SELECT max(tenant_id) FROM billing.notified)"
expect_mismatch "invoice events counted" "an invoice event lost"
