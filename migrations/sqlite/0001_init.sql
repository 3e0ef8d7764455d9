-- labpool state store, SQLite flavour. Must stay equivalent to
-- migrations/postgres/0001_init.sql: same tables, columns, constraints and
-- indexes; only the spelling of types differs. Types are the ones sqlx's Any
-- driver reads on both databases: TEXT and BIGINT (times are unix
-- milliseconds, booleans 0/1: a BOOLEAN column does not decode through Any on
-- SQLite). The events id is the one spelling that differs.

-- libvirt hosts from labpool's configuration, and whether they answer.
CREATE TABLE hosts (
    name        TEXT PRIMARY KEY,
    uri         TEXT NOT NULL,
    up          BIGINT NOT NULL CHECK (up IN (0, 1)),
    last_error  TEXT,
    -- when `up` last flipped (or the host was added)
    changed_at  BIGINT NOT NULL
);

-- Courses as last applied: the desired state the reconciler works towards.
CREATE TABLE courses (
    name             TEXT PRIMARY KEY,
    title            TEXT NOT NULL,
    revision         TEXT NOT NULL,
    spec_hash        TEXT NOT NULL,
    spec_json        TEXT NOT NULL,
    conditions_json  TEXT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- One row per VM labpool created. No foreign keys to hosts or courses: a VM
-- outlives its course's removal until the reconciler deletes it, and a host
-- may leave the configuration while its VMs are still being cleaned up.
CREATE TABLE vms (
    id                TEXT PRIMARY KEY,
    course            TEXT NOT NULL,
    host              TEXT NOT NULL,
    domain            TEXT NOT NULL,
    volume            TEXT NOT NULL,
    spec_hash         TEXT NOT NULL,
    state             TEXT NOT NULL
        CHECK (state IN ('creating', 'booting', 'warm', 'assigned', 'failed', 'deleting')),
    vcpus             BIGINT NOT NULL,
    memory            BIGINT NOT NULL,
    ssh_port          BIGINT,
    created_at        BIGINT NOT NULL,
    state_changed_at  BIGINT NOT NULL,
    ready_at          BIGINT,
    reason            TEXT
);

-- What a claim looks for: the warm VMs of one course and spec.
CREATE INDEX vms_claimable ON vms (course, spec_hash, state);

-- A student's use of a VM. Rows stay after the session ends (and after its VM
-- is deleted) as history, hence no foreign key to vms.
CREATE TABLE sessions (
    id                TEXT PRIMARY KEY,
    vm_id             TEXT NOT NULL,
    course            TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    deployment_id     TEXT NOT NULL,
    user_sub          TEXT NOT NULL,
    context_id        TEXT NOT NULL,
    resource_link_id  TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    last_activity_at  BIGINT NOT NULL,
    ended_at          BIGINT,
    end_reason        TEXT
);

-- The invariants claims rely on, enforced by the database itself: a VM has
-- at most one live session, and a launch key at most one live session.
CREATE UNIQUE INDEX sessions_live_vm ON sessions (vm_id) WHERE ended_at IS NULL;
CREATE UNIQUE INDEX sessions_live_key
    ON sessions (issuer, deployment_id, user_sub, context_id, resource_link_id)
    WHERE ended_at IS NULL;

-- What happened, for `labpool status` and operators. Ids are never reused,
-- so they order events recorded at the same millisecond.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    course   TEXT,
    host     TEXT,
    vm       TEXT,
    message  TEXT NOT NULL
);

CREATE INDEX events_newest ON events (at, id);
