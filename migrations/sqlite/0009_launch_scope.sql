-- Launch scope: per-user limits and course-scoped read tokens. Same
-- spelling on SQLite and PostgreSQL.

-- A launch counts what its user already holds (live sessions and live wait
-- tickets) in the launch transaction: find them by user, not by whole key.
CREATE INDEX sessions_live_user ON sessions (user_sub) WHERE ended_at IS NULL;
CREATE INDEX launch_waits_user ON launch_waits (user_sub);

-- The courses a read token may see, as a JSON array of course names; NULL
-- for every course (and for admin tokens, which are never scoped).
ALTER TABLE api_tokens ADD COLUMN courses TEXT;
