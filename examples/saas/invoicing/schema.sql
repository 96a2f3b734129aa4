-- The invoicing service's schema: applied at startup by saas_invoicing as the database owner
-- (DATABASE_OWNER_URL); idempotent. The service logs in as saas_invoicing.
CREATE SCHEMA IF NOT EXISTS invoicing;

-- One invoice per tenant and period.
CREATE TABLE IF NOT EXISTS invoicing.invoices (
  tenant_id bigint NOT NULL,
  id bigserial PRIMARY KEY,
  period text NOT NULL,
  total_cents bigint NOT NULL CHECK (total_cents >= 0),
  status text NOT NULL DEFAULT 'issued' CHECK (status IN ('issued', 'paid')),
  issued_at timestamptz NOT NULL DEFAULT now(),
  paid_at timestamptz,
  UNIQUE (tenant_id, period));
ALTER TABLE invoicing.invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoicing.invoices FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS invoices_tenant ON invoicing.invoices;
CREATE POLICY invoices_tenant ON invoicing.invoices
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint);

GRANT USAGE ON SCHEMA invoicing TO saas_invoicing;
GRANT SELECT, INSERT, UPDATE ON invoicing.invoices TO saas_invoicing;
