-- One-time Dynamic Registration links made by an admin. Only the SHA-256 of
-- a link's secret is stored; a link is spent by the UPDATE that sets used_at
-- (at most one request wins, on any number of replicas) and refused after
-- expires_at. Spent and expired links are kept a while for the log's sake,
-- then pruned.
CREATE TABLE registration_links (
    hash        TEXT PRIMARY KEY,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX registration_links_expiry ON registration_links (expires_at);
