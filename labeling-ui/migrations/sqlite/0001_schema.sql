-- The labeling app's schema (SQLite). The Postgres twin in ../postgres/ holds the same tables,
-- columns and constraints; only the id and type spellings differ. Times are Unix milliseconds
-- (BIGINT) in both, so one query text serves both back-ends and tests can move the clock.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'annotator')),
    active        BIGINT NOT NULL DEFAULT 1,
    created_ms    BIGINT NOT NULL
);

-- Server-side sessions: the cookie holds a random token, the table only its keyed hash, so a
-- leaked table cannot be replayed. Revoking = deleting the row.
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    csrf_token  TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE projects (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    guidelines    TEXT NOT NULL DEFAULT '',
    overlap       BIGINT NOT NULL CHECK (overlap >= 1),
    lease_seconds BIGINT NOT NULL CHECK (lease_seconds >= 1),
    created_ms    BIGINT NOT NULL
);

-- An item: a prompt dialogue and its candidates. `external_id` is the import line's id, or a
-- hash of the line's content, so re-importing a file adds nothing.
CREATE TABLE items (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id      BIGINT NOT NULL REFERENCES projects(id),
    external_id     TEXT NOT NULL,
    prompt_json     TEXT NOT NULL,
    submitted_count BIGINT NOT NULL DEFAULT 0,
    created_ms      BIGINT NOT NULL,
    UNIQUE (project_id, external_id)
);

CREATE TABLE candidates (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id     BIGINT NOT NULL REFERENCES items(id),
    position    BIGINT NOT NULL,
    external_id TEXT,
    content     TEXT NOT NULL,
    model       TEXT,
    round       BIGINT,
    UNIQUE (item_id, position)
);

-- k slots per item (k = the project's overlap). A slot is open, leased (with an expiry: the lease
-- lives in columns, never in a lock held while a person reads) or submitted. Claims take the
-- lowest open slot id, so items fill up one after another (breadth-first completion).
CREATE TABLE slots (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id       BIGINT NOT NULL REFERENCES projects(id),
    item_id          BIGINT NOT NULL REFERENCES items(id),
    slot_no          BIGINT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'leased', 'submitted')),
    annotator_id     BIGINT REFERENCES users(id),
    lease_token      TEXT,
    leased_ms        BIGINT,
    lease_expires_ms BIGINT,
    UNIQUE (item_id, slot_no)
);
CREATE INDEX slots_claimable ON slots (project_id, id) WHERE state <> 'submitted';
-- At most one lease per annotator per project: a second tab or a racing claim gets the same one.
CREATE UNIQUE INDEX slots_one_lease_per_annotator ON slots (project_id, annotator_id) WHERE state = 'leased';
-- One submitted slot per annotator per item.
CREATE UNIQUE INDEX slots_one_per_annotator_item ON slots (item_id, annotator_id) WHERE annotator_id IS NOT NULL;

-- Everyone ever given an item, with the candidate order they were shown (random per annotator,
-- recorded so position bias can be measured): an annotator never gets the same item twice.
CREATE TABLE item_annotators (
    item_id       BIGINT NOT NULL REFERENCES items(id),
    annotator_id  BIGINT NOT NULL REFERENCES users(id),
    first_ms      BIGINT NOT NULL,
    display_order TEXT NOT NULL,
    PRIMARY KEY (item_id, annotator_id)
);

CREATE TABLE annotations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    submission_id   TEXT NOT NULL UNIQUE,
    request_hash    TEXT NOT NULL,
    project_id      BIGINT NOT NULL REFERENCES projects(id),
    item_id         BIGINT NOT NULL REFERENCES items(id),
    slot_id         BIGINT REFERENCES slots(id),
    annotator_id    BIGINT NOT NULL REFERENCES users(id),
    judgment_json   TEXT NOT NULL,
    display_order   TEXT NOT NULL,
    time_spent_ms   BIGINT NOT NULL,
    late            BIGINT NOT NULL DEFAULT 0,
    over_quota      BIGINT NOT NULL DEFAULT 0,
    created_ms      BIGINT NOT NULL,
    UNIQUE (item_id, annotator_id)
);
CREATE UNIQUE INDEX annotations_one_per_slot ON annotations (slot_id) WHERE slot_id IS NOT NULL;
CREATE INDEX annotations_project ON annotations (project_id, id);

CREATE TABLE skips (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id   BIGINT NOT NULL REFERENCES projects(id),
    item_id      BIGINT NOT NULL REFERENCES items(id),
    annotator_id BIGINT NOT NULL REFERENCES users(id),
    reason       TEXT NOT NULL,
    created_ms   BIGINT NOT NULL
);

CREATE TABLE drafts (
    item_id      BIGINT NOT NULL REFERENCES items(id),
    annotator_id BIGINT NOT NULL REFERENCES users(id),
    draft_json   TEXT NOT NULL,
    updated_ms   BIGINT NOT NULL,
    PRIMARY KEY (item_id, annotator_id)
);

-- Append-only: a trigger refuses UPDATE and DELETE.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       BIGINT NOT NULL,
    actor_id    BIGINT,
    action      TEXT NOT NULL,
    project_id  BIGINT,
    subject     TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
