-- Bounded logins (issue 15 §2, §6). Same spelling on SQLite and PostgreSQL.

-- The platform-storage frame a login named (`lti_storage_target`): some
-- platforms (Blackboard Learn) send it with the login only, not again with
-- the launch.
ALTER TABLE lti_logins ADD COLUMN storage_target TEXT;

-- Logins started and not yet used, counted against `lti.logins.max_pending`
-- on every login initiation.
CREATE INDEX lti_logins_pending ON lti_logins (expires_at) WHERE used_at IS NULL;
