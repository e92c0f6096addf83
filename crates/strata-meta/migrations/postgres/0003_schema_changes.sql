-- Every change of a source's columns that ingestion met, and what it did about it.
CREATE TABLE schema_changes (
    id          BIGSERIAL   PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    run_id      TEXT,
    source      TEXT        NOT NULL,
    stream      TEXT        NOT NULL,
    table_name  TEXT        NOT NULL,
    column_name TEXT        NOT NULL,
    change      TEXT        NOT NULL
                CHECK (change IN ('added', 'removed', 'widened', 'incompatible')),
    from_type   TEXT,
    to_type     TEXT,
    action      TEXT        NOT NULL
);

CREATE INDEX schema_changes_at ON schema_changes (at);
