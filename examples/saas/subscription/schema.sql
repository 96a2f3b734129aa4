-- The subscription service's schema: applied at startup by saas_subscription as the database
-- owner (DATABASE_OWNER_URL); idempotent. The service logs in as saas_subscription.
CREATE SCHEMA IF NOT EXISTS subscriptions;

-- The catalog (global).
CREATE TABLE IF NOT EXISTS subscriptions.plans (name text PRIMARY KEY);
INSERT INTO subscriptions.plans VALUES ('starter'), ('pro') ON CONFLICT DO NOTHING;

-- One subscription per tenant; version counts its changes of plan.
CREATE TABLE IF NOT EXISTS subscriptions.subscriptions (
  tenant_id bigint PRIMARY KEY,
  plan text NOT NULL REFERENCES subscriptions.plans,
  version bigint NOT NULL DEFAULT 1,
  started_at timestamptz NOT NULL DEFAULT now(),
  changed_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE subscriptions.subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE subscriptions.subscriptions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS subscriptions_tenant ON subscriptions.subscriptions;
CREATE POLICY subscriptions_tenant ON subscriptions.subscriptions
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint);

GRANT USAGE ON SCHEMA subscriptions TO saas_subscription;
GRANT SELECT ON subscriptions.plans TO saas_subscription;
GRANT SELECT, INSERT, UPDATE ON subscriptions.subscriptions TO saas_subscription;
