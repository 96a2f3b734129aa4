-- The user service's schema: applied at startup by saas_user as the database owner
-- (DATABASE_OWNER_URL); idempotent. The service logs in as saas_user, which owns nothing.
CREATE SCHEMA IF NOT EXISTS users;

-- Tenants are global (a signup creates one before any tenant scope exists).
CREATE TABLE IF NOT EXISTS users.tenants (
  id bigserial PRIMARY KEY,
  name text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
  created_at timestamptz NOT NULL DEFAULT now());

CREATE TABLE IF NOT EXISTS users.users (
  tenant_id bigint NOT NULL REFERENCES users.tenants,
  id bigserial PRIMARY KEY,
  email text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
  UNIQUE (tenant_id, email));
ALTER TABLE users.users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users.users FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS users_tenant ON users.users;
CREATE POLICY users_tenant ON users.users
  USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)
  WITH CHECK (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint);

GRANT USAGE ON SCHEMA users TO saas_user;
GRANT SELECT, INSERT ON users.tenants TO saas_user;
GRANT SELECT, INSERT ON users.users TO saas_user;
