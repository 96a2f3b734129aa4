-- The notification service's schema: applied at startup by saas_notification as the database
-- owner (DATABASE_OWNER_URL); idempotent. The service logs in as saas_notification.
CREATE SCHEMA IF NOT EXISTS notifications;

-- What would have been sent: one row per payment.captured event.
CREATE TABLE IF NOT EXISTS notifications.sent (
  tenant_id bigint NOT NULL,
  id bigserial PRIMARY KEY,
  kind text NOT NULL,
  invoice_id bigint NOT NULL,
  amount_cents bigint NOT NULL,
  text text NOT NULL,
  traceparent text NOT NULL,
  event_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS sent_tenant_id ON notifications.sent (tenant_id, id);
ALTER TABLE notifications.sent ENABLE ROW LEVEL SECURITY;
ALTER TABLE notifications.sent FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS sent_tenant ON notifications.sent;
CREATE POLICY sent_tenant ON notifications.sent
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint);

GRANT USAGE ON SCHEMA notifications TO saas_notification;
GRANT SELECT, INSERT ON notifications.sent TO saas_notification;
