-- The labpool instance a store belongs to: a short random id made once, when
-- the store is first opened (or first opened by a version that has it), and
-- written into every mark labpool puts on a host. Replicas sharing one store
-- share the id. 12 lowercase hex characters.
CREATE TABLE instance (
    name       TEXT PRIMARY KEY,
    id         TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO instance (name, id, created_at)
VALUES ('instance', lower(hex(randomblob(6))), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));

-- Objects on a host that carry labpool's mark but belong to another
-- instance (or to no instance: made by an earlier version and unknown to
-- this store). Reported, never touched. One row per host and instance,
-- replaced by every pass that looked at the host.
CREATE TABLE foreign_objects (
    host          TEXT NOT NULL,
    instance      TEXT NOT NULL,
    objects       BIGINT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    seen_at       BIGINT NOT NULL,
    PRIMARY KEY (host, instance)
);

-- Lost instances this labpool takes over (`labpool adopt`), besides those
-- of `reconcile.adopt_instances`: their objects count as this instance's.
CREATE TABLE adopted_instances (
    instance   TEXT PRIMARY KEY,
    adopted_at BIGINT NOT NULL
);
