-- The billing service's schema: applied at startup by saas_billing as the database owner
-- (DATABASE_OWNER_URL); idempotent. The service logs in as saas_billing. Every table has
-- row-level security by app.tenant_id.
CREATE SCHEMA IF NOT EXISTS billing;

-- Each tenant's plan, from subscription.changed events (a version never goes back).
CREATE TABLE IF NOT EXISTS billing.accounts (
  tenant_id bigint PRIMARY KEY,
  plan text NOT NULL,
  version bigint NOT NULL);

-- Rated usage rows, unique per (tenant, id): a re-sent row is a duplicate, never charged twice.
CREATE TABLE IF NOT EXISTS billing.usage (
  tenant_id bigint NOT NULL,
  id bigint NOT NULL,
  user_id bigint NOT NULL,
  metric smallint NOT NULL CHECK (metric BETWEEN 0 AND 3),
  quantity bigint NOT NULL CHECK (quantity > 0),
  ts bigint NOT NULL,
  period text NOT NULL,
  cents bigint NOT NULL CHECK (cents >= 0),
  PRIMARY KEY (tenant_id, id));
CREATE INDEX IF NOT EXISTS usage_period ON billing.usage (tenant_id, period);

-- The close of a period, a persisted state machine: 'closing' is committed first, with the
-- total (from then on the period refuses usage); the invoice is then issued idempotently
-- (InvoicingService.Issue on (tenant, period)), by the ClosePeriod call or, if that call
-- fails, by the job it enqueued; 'closed' records the invoice.
CREATE TABLE IF NOT EXISTS billing.periods (
  tenant_id bigint NOT NULL,
  period text NOT NULL,
  state text NOT NULL CHECK (state IN ('closing', 'closed')),
  total_cents bigint NOT NULL CHECK (total_cents >= 0),
  rows bigint NOT NULL,
  invoice_id bigint,
  closing_at timestamptz NOT NULL DEFAULT now(),
  closed_at timestamptz,
  PRIMARY KEY (tenant_id, period),
  CHECK ((state = 'closed') = (invoice_id IS NOT NULL)));

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['accounts', 'usage', 'periods'] LOOP
    EXECUTE format('ALTER TABLE billing.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE billing.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS %I ON billing.%I', t || '_tenant', t);
    EXECUTE format('CREATE POLICY %I ON billing.%I '
                   'USING (tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::bigint) '
                   'WITH CHECK (tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::bigint)',
                   t || '_tenant', t);
  END LOOP;
END $$;

GRANT USAGE ON SCHEMA billing TO saas_billing;
GRANT SELECT, INSERT, UPDATE ON billing.accounts, billing.periods TO saas_billing;
GRANT SELECT, INSERT ON billing.usage TO saas_billing;
