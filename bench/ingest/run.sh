#!/usr/bin/env bash
# Ingestion benchmark: Strata's batch extraction of a database table into the lake against
# peer tools (ConnectorX, ADBC, Polars, dlt, DuckDB, Sling) and PostgreSQL's binary COPY
# ceiling on the same tables, in one run. Prints a table and ratios; never fails on a number.
# See bench/README.md ("Ingestion").
#
#   bench/ingest/run.sh                    # 5 M rows in PostgreSQL (+ 1 M in MariaDB)
#   ROWS=200000 MYSQL_ROWS=0 bench/ingest/run.sh   # quick check
#   TABLES=lineitem MYSQL_ROWS=0 bench/ingest/run.sh   # TPC-H SF1 lineitem (6.0 M rows)
#   TABLES=orders,lineitem,wide bench/ingest/run.sh
#
# Environment:
#   TABLES       PostgreSQL datasets, comma list (default orders):
#                  orders    bench_ingest.orders, ROWS rows generated server-side
#                  lineitem  TPC-H lineitem at SF1 (6,001,215 rows): Parquet from tpchgen-cli
#                            (reused from bench/warehouse's ~/.cache/strata-bench/tpch-sf1 if
#                            there, else generated for lineitem alone), loaded with COPY
#                  wide      bench_ingest.wide, WIDE_ROWS rows x 30 columns, 22 of them text
#   ROWS         rows of the PostgreSQL orders table (default 5000000)
#   WIDE_ROWS    rows of the wide table (default 1000000)
#   MYSQL_ROWS   rows of the MariaDB/MySQL table; 0 skips MySQL (default 1000000)
#   PG_URL       default postgres://postgres@127.0.0.1:5432/test
#   MYSQL_URL    default mysql://root@127.0.0.1:3306/test
#   TOOLS        PostgreSQL tools, comma list (default: all of them, see below)
#   MYSQL_TOOLS  MySQL tools (default strata,connectorx,dlt)
#   RUNS         runs per tool, the best counts (default 1); even runs go in reverse order
#   STRATA_BIN   use this binary instead of building one
#   RESULTS      where JSON and report.md go (default ~/.cache/strata-bench/results/ingest-DATE)
#
# Tools: strata (parallel_reads: auto), strata-1 (one connection), strata-2, strata-4,
# connectorx (one connection), connectorx-4 (4 range partitions), adbc, polars, dlt (pyarrow
# backend, Delta), dlt-parquet, dlt-cx (connectorx backend, Delta), dlt-cx-parquet, duckdb
# (postgres_scanner), sling, copy-binary (the ceiling: psql's binary COPY into /dev/null).
# A peer that cannot be installed or run is reported as skipped or failed; the run goes on.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
ROWS="${ROWS:-5000000}"
WIDE_ROWS="${WIDE_ROWS:-1000000}"
TABLES="${TABLES:-orders}"
MYSQL_ROWS="${MYSQL_ROWS:-1000000}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
MYSQL_URL="${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
TOOLS="${TOOLS:-copy-binary,strata,strata-1,connectorx,connectorx-4,adbc,polars,dlt,dlt-cx,duckdb,sling}"
MYSQL_TOOLS="${MYSQL_TOOLS:-strata,connectorx,dlt}"
RUNS="${RUNS:-1}"
CACHE="${STRATA_BENCH_CACHE:-$HOME/.cache/strata-bench}"
VENV="${STRATA_BENCH_VENV:-$HOME/.cache/strata-bench-venv}"
WORK="$CACHE/work-ingest"
RESULTS="${RESULTS:-$CACHE/results/ingest-$(date +%Y%m%d-%H%M%S)}"
# DuckDB with its postgres_scanner extension from PyPI, kept apart from the venv's own DuckDB
# (the extension must match DuckDB's version exactly; INSTALL postgres would download it).
DUCKDB_VERSION=1.5.5
DUCKDB_DIR="$CACHE/duckdb-postgres-$DUCKDB_VERSION"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"

log() { printf '\n== %s\n' "$*" >&2; }
mkdir -p "$CACHE" "$RESULTS" "$WORK"

# --- Python tools -------------------------------------------------------------------------------
log "Python environment ($VENV)"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as m
for k in ("connectorx", "dlt", "polars", "pyarrow", "deltalake", "sqlalchemy", "psycopg2-binary", "pymysql", "psutil"):
    m.version(k)
EOF
then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    connectorx "dlt[parquet,deltalake]" polars "pyarrow>=18" deltalake sqlalchemy psycopg2-binary pymysql psutil
fi
if [[ ! -f "$DUCKDB_DIR/.complete" ]]; then
  rm -rf "$DUCKDB_DIR"
  if "$VENV/bin/pip" install --quiet --disable-pip-version-check --target "$DUCKDB_DIR" \
    "duckdb==$DUCKDB_VERSION" "duckdb-extension-postgres-scanner==$DUCKDB_VERSION"; then
    touch "$DUCKDB_DIR/.complete"
  else
    echo "DuckDB's postgres_scanner package could not be installed; the duckdb run is skipped" >&2
  fi
fi
DUCKDB_PATH=""
[[ -f "$DUCKDB_DIR/.complete" ]] && DUCKDB_PATH="$DUCKDB_DIR"
# Optional peers: ADBC's PostgreSQL driver and Sling's binary (the PyPI package that ships it;
# the `sling` wrapper package would download a binary at first run). A failed install only
# skips that peer.
if ! "$PY" -c "import adbc_driver_postgresql.dbapi" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check adbc-driver-postgresql \
    || echo "adbc-driver-postgresql could not be installed; the adbc run is skipped" >&2
fi
if ! "$PY" -c "import sling_linux_amd64" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check sling-linux-amd64 \
    || echo "sling-linux-amd64 could not be installed; the sling run is skipped" >&2
fi

# --- TPC-H lineitem Parquet (only when TABLES has lineitem) ---------------------------------------
LINEITEM_PARQUET=""
if [[ ",$TABLES," == *",lineitem,"* ]]; then
  for f in "$CACHE/tpch-sf1/lineitem.parquet" "$CACHE/tpch-lineitem-sf1/lineitem.parquet"; do
    if [[ -f "$f" && -f "$(dirname "$f")/.complete" ]]; then LINEITEM_PARQUET="$f"; break; fi
  done
  if [[ -z "$LINEITEM_PARQUET" ]]; then
    log "Generating TPC-H SF1 lineitem Parquet into $CACHE/tpch-lineitem-sf1"
    if [[ -x "$VENV/bin/tpchgen-cli" ]] || "$VENV/bin/pip" install --quiet --disable-pip-version-check "tpchgen-cli==4.0.0"; then
      rm -rf "$CACHE/tpch-lineitem-sf1" "$CACHE/tpch-lineitem-sf1.tmp"
      if "$VENV/bin/tpchgen-cli" parquet --scale-factor 1 --tables lineitem \
        --output-dir "$CACHE/tpch-lineitem-sf1.tmp" --quiet; then
        mv "$CACHE/tpch-lineitem-sf1.tmp" "$CACHE/tpch-lineitem-sf1"
        touch "$CACHE/tpch-lineitem-sf1/.complete"
        LINEITEM_PARQUET="$CACHE/tpch-lineitem-sf1/lineitem.parquet"
      fi
    fi
    [[ -n "$LINEITEM_PARQUET" ]] || echo "no TPC-H lineitem Parquet (tpchgen-cli failed); lineitem is skipped" >&2
  fi
fi

# --- Strata binary --------------------------------------------------------------------------------
if [[ -n "${STRATA_BIN:-}" ]]; then
  BIN="$STRATA_BIN"
else
  log "Building strata (release) into $CARGO_TARGET_DIR"
  (cd "$ROOT" && cargo build --release -p strata --quiet) || {
    echo "building strata failed; STRATA_BIN=/path/to/strata runs an existing binary" >&2
    exit 1
  }
  BIN="$CARGO_TARGET_DIR/release/strata"
fi
"$BIN" --version >/dev/null
"$PY" "$HERE/ingest_bench.py" machine --bin "$BIN" --duckdb-path "$DUCKDB_PATH" --out "$RESULTS/machine.json"

# --- PostgreSQL -----------------------------------------------------------------------------------
for DS in ${TABLES//,/ }; do
  case "$DS" in
    orders) GEN=(--rows "$ROWS"); OUT=postgres ;;  # postgres.json, as before datasets existed
    wide) GEN=(--dataset wide --rows "$WIDE_ROWS"); OUT="postgres-wide" ;;
    lineitem)
      if [[ -z "$LINEITEM_PARQUET" ]]; then echo "lineitem skipped: no Parquet" >&2; continue; fi
      GEN=(--dataset lineitem --parquet "$LINEITEM_PARQUET"); OUT="postgres-lineitem" ;;
    *) echo "unknown dataset $DS in TABLES (orders, lineitem, wide); skipped" >&2; continue ;;
  esac
  log "PostgreSQL: dataset $DS"
  if "$PY" "$HERE/ingest_bench.py" gen --pg "$PG_URL" "${GEN[@]}" --out "$RESULTS/$OUT-table.json"; then
    "$PY" "$HERE/ingest_bench.py" run --bin "$BIN" --db postgres --uri "$PG_URL" --tools "$TOOLS" \
      --expected "$RESULTS/$OUT-table.json" --work "$WORK" --rounds "$RUNS" \
      --duckdb-path "$DUCKDB_PATH" --out "$RESULTS/$OUT.json" || echo "PostgreSQL runs failed (continuing)" >&2
  else
    echo "PostgreSQL dataset $DS could not be prepared at $PG_URL; skipped" >&2
  fi
done

# --- MariaDB / MySQL -----------------------------------------------------------------------------
if ((MYSQL_ROWS > 0)); then
  log "MariaDB/MySQL: $MYSQL_ROWS rows in bench_ingest.orders"
  if "$PY" "$HERE/ingest_bench.py" gen --mysql "$MYSQL_URL" --rows "$MYSQL_ROWS" --out "$RESULTS/mysql-table.json"; then
    # The stream reads database bench_ingest: the URL's database is only the connection's.
    "$PY" "$HERE/ingest_bench.py" run --bin "$BIN" --db mysql --uri "$MYSQL_URL" --tools "$MYSQL_TOOLS" \
      --expected "$RESULTS/mysql-table.json" --work "$WORK" --rounds "$RUNS" \
      --out "$RESULTS/mysql.json" || echo "MySQL runs failed (continuing)" >&2
  else
    echo "MySQL is not reachable at $MYSQL_URL; skipped" >&2
  fi
fi

# --- Report -------------------------------------------------------------------------------------
log "Report ($RESULTS/report.md)"
"$PY" "$HERE/ingest_bench.py" report "$RESULTS"
