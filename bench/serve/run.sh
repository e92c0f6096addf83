#!/usr/bin/env bash
# Serving benchmark: TPC-H `orders` fetched, aggregated and looked up through Strata's
# Postgres protocol, Flight SQL and REST API, and through PostgreSQL itself, in one run.
# Prints a table and ratios; never fails on a number. See bench/README.md ("Serving").
#
#   bench/serve/run.sh                      # SF1: 1.5 M orders
#   SCALE=0.1 RUNS=1 bench/serve/run.sh     # quick check
#
# Environment:
#   SCALE       TPC-H scale factor of `orders` (default 1)
#   RUNS        repetitions of each fetch/aggregate, the best counts (default 3)
#   SECONDS_PER_LOOKUP  seconds each point-lookup concurrency level runs (default 5)
#   CLIENTS     point-lookup concurrency levels (default 1,8,32)
#   PG_URL      default postgres://postgres@127.0.0.1:5432/test
#   STRATA_BIN  use this binary instead of building one
#   RESULTS     where JSON and report.md go (default ~/.cache/strata-bench/results/serve-DATE)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SCALE="${SCALE:-1}"
RUNS="${RUNS:-3}"
CACHE="${STRATA_BENCH_CACHE:-$HOME/.cache/strata-bench}"
VENV="${STRATA_BENCH_VENV:-$HOME/.cache/strata-bench-venv}"
DATA="$CACHE/tpch-orders-sf$SCALE"
WORK="$CACHE/work-serve-sf$SCALE"
RESULTS="${RESULTS:-$CACHE/results/serve-$(date +%Y%m%d-%H%M%S)}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432/test}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"

log() { printf '\n== %s\n' "$*" >&2; }
mkdir -p "$CACHE" "$RESULTS" "$WORK"

log "Python environment ($VENV)"
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
if ! "$PY" -c "import pyarrow, psycopg, adbc_driver_flightsql, adbc_driver_postgresql, tpchgen_cli" 2>/dev/null \
   && ! { "$PY" -c "import pyarrow, psycopg, adbc_driver_flightsql, adbc_driver_postgresql" 2>/dev/null && [[ -x "$VENV/bin/tpchgen-cli" ]]; }; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "pyarrow>=18" "tpchgen-cli==4.0.0" "psycopg[binary]>=3.2" \
    adbc-driver-manager adbc-driver-flightsql adbc-driver-postgresql
fi

# Load generators written in C, so the client is not what is measured: pgbench (shipped
# with PostgreSQL) for Postgres-protocol lookups, wrk for REST lookups.
if ! command -v wrk >/dev/null 2>&1; then
  log "Installing wrk"
  if ! { apt-get install -y -q wrk >/dev/null 2>&1 \
         || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wrk >/dev/null 2>&1; }; }; then
    echo "wrk could not be installed: REST lookups run from Python threads" >&2
  fi
fi

if [[ -f "$CACHE/tpch-sf$SCALE/orders.parquet" ]]; then
  ORDERS="$CACHE/tpch-sf$SCALE/orders.parquet"
  log "Reusing $ORDERS"
else
  if [[ ! -f "$DATA/orders.parquet" ]]; then
    log "Generating TPC-H SF$SCALE orders into $DATA"
    rm -rf "$DATA.tmp"
    "$VENV/bin/tpchgen-cli" parquet --scale-factor "$SCALE" --tables orders --output-dir "$DATA.tmp" --quiet
    rm -rf "$DATA" && mv "$DATA.tmp" "$DATA"
  fi
  ORDERS="$DATA/orders.parquet"
fi

if [[ -n "${STRATA_BIN:-}" ]]; then
  BIN="$STRATA_BIN"
else
  log "Building strata (release) into $CARGO_TARGET_DIR"
  (cd "$ROOT" && cargo build --release -p strata --quiet)
  BIN="$CARGO_TARGET_DIR/release/strata"
fi

"$PY" "$HERE/serve_bench.py" --bin "$BIN" --orders "$ORDERS" --work "$WORK" --pg "$PG_URL" \
  --runs "$RUNS" --seconds "${SECONDS_PER_LOOKUP:-5}" --clients "${CLIENTS:-1,8,32}" \
  --out "$RESULTS"
