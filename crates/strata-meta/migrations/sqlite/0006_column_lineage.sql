-- The current column-level lineage of each model: one row per (output column, upstream
-- column, kind), replaced whenever the model builds. `column_name` is NULL for columns a
-- model's filters and joins read (kind `filtered_by`).
CREATE TABLE column_lineage (
    node            TEXT    NOT NULL,
    position        INTEGER NOT NULL,
    column_name     TEXT,
    upstream_node   TEXT    NOT NULL,
    upstream_column TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    run_id          TEXT,
    recorded_at     TEXT    NOT NULL
) STRICT;
CREATE INDEX column_lineage_node ON column_lineage (node, position);
CREATE INDEX column_lineage_upstream ON column_lineage (upstream_node, upstream_column);
