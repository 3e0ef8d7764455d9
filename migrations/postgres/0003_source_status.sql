-- The course source as the reconciler last saw it (one row, name 'source'):
-- applied revision and commit, last fetch, last error, last rejection, as a
-- JSON document that `labpool status` prints.
CREATE TABLE source_status (
    name       TEXT PRIMARY KEY,
    status     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
