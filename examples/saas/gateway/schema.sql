-- The gateway's schema: applied at startup by saas_gateway as the database owner
-- (DATABASE_OWNER_URL); idempotent. The gateway logs in as saas_gateway.
CREATE SCHEMA IF NOT EXISTS gateway;

-- API keys: only their SHA-256 is stored.
CREATE TABLE IF NOT EXISTS gateway.api_keys (
  key_sha256 text PRIMARY KEY,
  tenant_id bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now());

-- Signups in flight and done, by Idempotency-Key (anonymous: one scope). A signup is
-- 'started' with a random salt before the user service is called, and 'delivered' in the
-- transaction that stores the key's hash: the answer that delivers it is the only one that
-- carries the key (it is derived from the salt, which is then erased). signup.hpp says more.
CREATE TABLE IF NOT EXISTS gateway.signups (
  idempotency_key text PRIMARY KEY,
  fingerprint bigint NOT NULL,
  salt text,
  state text NOT NULL CHECK (state IN ('started', 'delivered')),
  tenant_id bigint,
  created_at timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz,
  delivered_by text, -- the token of the request whose answer carried the key
  CHECK ((state = 'delivered') = (tenant_id IS NOT NULL AND salt IS NULL)));
CREATE INDEX IF NOT EXISTS signups_created ON gateway.signups (created_at);

GRANT USAGE ON SCHEMA gateway TO saas_gateway;
GRANT SELECT, INSERT, DELETE ON gateway.api_keys TO saas_gateway;
GRANT SELECT, INSERT, UPDATE, DELETE ON gateway.signups TO saas_gateway;
