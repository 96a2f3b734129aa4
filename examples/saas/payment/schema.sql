-- The payment service's schema: applied at startup by saas_payment as the database owner
-- (DATABASE_OWNER_URL); idempotent. The service logs in as saas_payment. Keys and invoices are
-- unique per tenant: a global UNIQUE under row-level security would let one tenant's row block
-- (and reveal) another's.

CREATE SCHEMA IF NOT EXISTS payments;

-- The fake provider's own ledger (a real provider keeps it on its side).
CREATE TABLE IF NOT EXISTS payments.provider_charges (
  tenant_id bigint NOT NULL,
  id bigserial PRIMARY KEY,
  idempotency_key text NOT NULL,
  amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, idempotency_key));

-- One payment per invoice.
CREATE TABLE IF NOT EXISTS payments.payments (
  tenant_id bigint NOT NULL,
  id bigserial PRIMARY KEY,
  invoice_id bigint NOT NULL,
  amount_cents bigint NOT NULL CHECK (amount_cents >= 0),
  provider_ref text NOT NULL,
  idempotency_key text NOT NULL,
  captured_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, invoice_id));

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['provider_charges', 'payments'] LOOP
    EXECUTE format('ALTER TABLE payments.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE payments.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('DROP POLICY IF EXISTS %I ON payments.%I', t || '_tenant', t);
    EXECUTE format('CREATE POLICY %I ON payments.%I '
                   'USING (tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::bigint) '
                   'WITH CHECK (tenant_id = nullif(current_setting(''app.tenant_id'', true), '''')::bigint)',
                   t || '_tenant', t);
  END LOOP;
END $$;

GRANT USAGE ON SCHEMA payments TO saas_payment;
GRANT SELECT, INSERT ON payments.provider_charges, payments.payments TO saas_payment;
