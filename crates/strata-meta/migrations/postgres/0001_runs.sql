-- One row per invocation of a Strata command (`strata run`, `strata ingest`, ...).
CREATE TABLE runs (
    id          UUID        NOT NULL PRIMARY KEY,
    command     TEXT        NOT NULL,
    args        TEXT        NOT NULL,
    principal   TEXT        NOT NULL,
    environment TEXT,
    status      TEXT        NOT NULL
                CHECK (status IN ('running', 'success', 'failed', 'cancelled')),
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    duration_ms BIGINT,
    row_count   BIGINT,
    error       TEXT
);

CREATE INDEX runs_started_at ON runs (started_at);
CREATE INDEX runs_command_started_at ON runs (command, started_at);
