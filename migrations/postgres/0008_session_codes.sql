-- One-time codes a launch hands the session page (in its URL's fragment),
-- traded for the page's session token over the terminal socket. The code
-- itself is signed and says which session and until when; the store only
-- records each code when it is used, by its SHA-256, so a code works once
-- on any replica and a dump of the store holds no code. Same spelling on
-- SQLite and PostgreSQL.
CREATE TABLE session_codes_used (
    code_sha256  TEXT PRIMARY KEY,
    session_id   TEXT NOT NULL,
    used_at      BIGINT NOT NULL,
    -- when the code would have expired anyway: the row can go then
    expires_at   BIGINT NOT NULL
);
CREATE INDEX session_codes_used_expiry ON session_codes_used (expires_at);
