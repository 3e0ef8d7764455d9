-- The course revisions the reconciler decided on, kept apart from the status
-- document it rewrites every pass (issue 16):
--   'applied': the revision in force (so a restart reports it and runs on
--              exactly its courses, before the source answers again);
--   'held':    a revision held back because it removes too much, until an
--              admin confirms that exact revision id or a later revision
--              no longer removes too much.
CREATE TABLE source_revisions (
    name          TEXT PRIMARY KEY CHECK (name IN ('applied', 'held')),
    revision      TEXT NOT NULL,
    -- The commit (id, subject, author, time) as JSON, for a Git revision.
    commit_json   TEXT,
    -- applied: {"courses": [names]}; held: what it removes and why.
    detail_json   TEXT NOT NULL,
    -- applied: when; held: since when.
    at            BIGINT NOT NULL,
    -- held only: who confirmed it (the token's name, `cli:<user>`) and when.
    confirmed_by  TEXT,
    confirmed_at  BIGINT
);
