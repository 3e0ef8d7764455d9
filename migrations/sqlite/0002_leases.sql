-- Leases: who may run the reconciler. One row per lease name; a holder keeps
-- it by renewing before expires_at (unix ms). Another labpool takes it over
-- only once it has expired, or when its holder is provably dead.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
