-- One row per node (model, test, seed, snapshot) of a modeling run, in the order they ended.
CREATE TABLE node_results (
    run_id       TEXT    NOT NULL REFERENCES runs (id),
    position     INTEGER NOT NULL,
    unique_id    TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    row_count    INTEGER,
    failures     INTEGER,
    execution_ms INTEGER NOT NULL,
    message      TEXT,
    PRIMARY KEY (run_id, position)
) STRICT;
