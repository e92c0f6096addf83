-- One row per invocation of a Strata command (`strata run`, `strata ingest`, ...).
-- Timestamps are RFC 3339 UTC text with exactly six fractional digits
-- (`2025-01-02T03:04:05.123456Z`), so text order is time order.
CREATE TABLE runs (
    id          TEXT    NOT NULL PRIMARY KEY,  -- UUID, hyphenated lowercase
    command     TEXT    NOT NULL,
    args        TEXT    NOT NULL,
    principal   TEXT    NOT NULL,
    environment TEXT,
    status      TEXT    NOT NULL
                CHECK (status IN ('running', 'success', 'failed', 'cancelled')),
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER,
    row_count   INTEGER,
    error       TEXT
) STRICT;

CREATE INDEX runs_started_at ON runs (started_at);
CREATE INDEX runs_command_started_at ON runs (command, started_at);
