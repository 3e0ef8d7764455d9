-- LTI 1.3: the tool's keys and secrets, platforms registered through Dynamic
-- Registration, logins in flight (state and nonce, shared by replicas), and
-- launches waiting for a VM. Same spelling on SQLite and PostgreSQL.

-- The tool's RS256 signing keys. The newest key that is not retired signs;
-- a retired key stays in the JWKS until retired_at plus the grace period, so
-- platforms holding a cached JWKS still verify what it signed.
CREATE TABLE tool_keys (
    kid          TEXT PRIMARY KEY,
    private_pem  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT
);

-- Named secrets generated on first start (the terminal token key).
CREATE TABLE secrets (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Platforms registered through LTI Dynamic Registration (platforms from the
-- configuration file are not stored). deployment_ids is a JSON array; Canvas
-- sends the deployment id only with the first launch, which adds it.
CREATE TABLE lti_platforms (
    issuer          TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    auth_login_url  TEXT NOT NULL,
    token_url       TEXT NOT NULL,
    jwks_url        TEXT NOT NULL,
    deployment_ids  TEXT NOT NULL,
    product         TEXT,
    registered_at   BIGINT NOT NULL,
    PRIMARY KEY (issuer, client_id)
);

-- OIDC logins in flight: what the launch that completes each must match.
-- A row is used once (used_at), and kept until it expires so a replay is
-- recognised as one.
CREATE TABLE lti_logins (
    state           TEXT PRIMARY KEY,
    nonce           TEXT NOT NULL UNIQUE,
    issuer          TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    deployment_id   TEXT,
    target_link_uri TEXT NOT NULL,
    login_hint      TEXT NOT NULL,
    message_hint    TEXT,
    -- a random value put in the platform's storage (LTI client-side
    -- postMessages) when the browser cannot keep our cookie
    storage_secret  TEXT,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    used_at         BIGINT
);
CREATE INDEX lti_logins_expiry ON lti_logins (expires_at);

-- Launches that found no warm VM: the reconciler builds one VM more per live
-- ticket, and the waiting page claims it. One ticket per launch key.
CREATE TABLE launch_waits (
    id                TEXT PRIMARY KEY,
    course            TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    deployment_id     TEXT NOT NULL,
    user_sub          TEXT NOT NULL,
    context_id        TEXT NOT NULL,
    resource_link_id  TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    seen_at           BIGINT NOT NULL
);
CREATE UNIQUE INDEX launch_waits_key
    ON launch_waits (issuer, deployment_id, user_sub, context_id, resource_link_id);
CREATE INDEX launch_waits_course ON launch_waits (course, created_at);

-- Live sessions per course and VM state per course are counted by launches.
CREATE INDEX sessions_live_course ON sessions (course) WHERE ended_at IS NULL;
