-- The live access-control state: users, roles and their members, grants, row policies,
-- column masks and API tokens, plus the audit log. `access.yml` in the project declares
-- roles, grants, policies and masks and is applied here; users and tokens are created at
-- run time.

-- Bumped by every change to the tables above except `audit_log`, in the same transaction;
-- servers poll it to know when to reload. Always exactly one row.
CREATE TABLE access_epoch (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    version BIGINT  NOT NULL
);
INSERT INTO access_epoch (id, version) VALUES (1, 0);

CREATE TABLE users (
    name          TEXT        NOT NULL PRIMARY KEY,
    password_hash TEXT,                               -- argon2 PHC string; NULL = no password
    attributes    TEXT        NOT NULL DEFAULT '{}',  -- JSON object, string -> string
    superuser     BOOLEAN     NOT NULL DEFAULT FALSE,
    disabled      BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE roles (
    name       TEXT        NOT NULL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL
);

-- `member` is a user or a role name.
CREATE TABLE role_members (
    role   TEXT NOT NULL REFERENCES roles (name),
    member TEXT NOT NULL,
    PRIMARY KEY (role, member)
);
CREATE INDEX role_members_member ON role_members (member);

-- `columns` is a JSON array of column names, NULL for all columns; `columns_key` is the
-- same text, or '' for all columns, so the primary key also works with NULLs.
CREATE TABLE grants (
    privilege   TEXT        NOT NULL
                CHECK (privilege IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE', 'CREATE', 'USAGE', 'ALL')),
    object_kind TEXT        NOT NULL CHECK (object_kind IN ('namespace', 'table')),
    object      TEXT        NOT NULL,
    columns     TEXT,
    columns_key TEXT        NOT NULL DEFAULT '',
    grantee     TEXT        NOT NULL,
    granted_by  TEXT        NOT NULL,
    granted_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (grantee, object_kind, object, privilege, columns_key)
);

-- `applies_to` is a role or user name, or '*' for everyone.
CREATE TABLE row_policies (
    table_name TEXT        NOT NULL,
    name       TEXT        NOT NULL,
    predicate  TEXT        NOT NULL,
    applies_to TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (table_name, name)
);

-- `exempt` is a JSON array of role and user names who see clear values.
CREATE TABLE column_masks (
    table_name  TEXT        NOT NULL,
    column_name TEXT        NOT NULL,
    mask        TEXT        NOT NULL,
    exempt      TEXT        NOT NULL DEFAULT '[]',
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (table_name, column_name)
);

-- `token_hash` is the SHA-256 hex of the secret; the secret itself is never stored.
CREATE TABLE api_tokens (
    id           TEXT        NOT NULL PRIMARY KEY,  -- UUID, hyphenated lowercase
    user_name    TEXT        NOT NULL REFERENCES users (name),
    name         TEXT        NOT NULL,
    token_hash   TEXT        NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX api_tokens_user_name ON api_tokens (user_name);

-- Who ran what through which surface, and how it ended.
CREATE TABLE audit_log (
    id          BIGSERIAL   PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    principal   TEXT        NOT NULL,
    surface     TEXT        NOT NULL,
    statement   TEXT        NOT NULL,
    tables      TEXT        NOT NULL DEFAULT '[]',  -- JSON array of table names
    row_count   BIGINT,
    outcome     TEXT        NOT NULL CHECK (outcome IN ('ok', 'error', 'denied')),
    error       TEXT,
    duration_ms BIGINT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_principal ON audit_log (principal, id);
