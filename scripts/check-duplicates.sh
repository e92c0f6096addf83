#!/usr/bin/env bash
# Fails when the dependency tree holds two versions of a crate that must be unique:
# two arrows (or datafusions, object_stores, sqlparsers) do not interoperate.
set -euo pipefail
dups=$(cargo tree --workspace -d --depth 0 -e normal,build 2>/dev/null \
  | grep -E '^(arrow|arrow-[a-z-]+|parquet|datafusion|datafusion-[a-z-]+|object_store|sqlparser|deltalake-core|libsqlite3-sys) v' || true)
if [ -n "$dups" ]; then
  echo "duplicate versions of crates that must be unique:" >&2
  echo "$dups" >&2
  exit 1
fi
echo "dependency guard: one arrow, datafusion, object_store, sqlparser in the tree"
