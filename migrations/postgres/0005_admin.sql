-- Operating labpool: admin API tokens, and hosts an admin drained. Same
-- spelling on SQLite and PostgreSQL.

-- A drained host gets no new VMs; its warm VMs are replaced elsewhere and
-- destroyed, its students' VMs are left to finish.
ALTER TABLE hosts ADD COLUMN draining BIGINT NOT NULL DEFAULT 0 CHECK (draining IN (0, 1));

-- Bearer tokens of the admin API and dashboard. Only the SHA-256 of a token
-- is stored: the token itself is shown once, by `labpool token create`.
-- Tokens are random 256-bit values, so a plain hash is enough (no salt or
-- slow hash: there is nothing to guess).
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    scope         TEXT NOT NULL CHECK (scope IN ('read', 'admin')),
    token_sha256  TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);

-- A name names one token that still works.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;
