-- Bytes read or written by a run (ingestion counts the data it loads).
ALTER TABLE runs ADD COLUMN bytes BIGINT;
