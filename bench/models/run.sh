#!/usr/bin/env bash
# Modeling benchmark: Strata's dbt-compatible layer against dbt-core (< 1.12) + dbt-duckdb on
# the same generated projects, in one run: parse + compile of 500 / 2,000 / 10,000-model
# projects, `build` of a 500-model project over generated data, a 200-deep chain of views,
# and a ~40-model marts project over TPC-H SF1. Prints tables and ratios; never fails on a
# number. See bench/README.md ("Modeling").
#
#   bench/models/run.sh                                   # everything, full sizes
#   SIZES=500 STEPS=compile,run RUNS=3 bench/models/run.sh   # quick check
#   STEPS=compile SIZES=10000 DBT_RUNS=1 bench/models/run.sh
#   STRATA_BIN=/path/to/strata bench/models/run.sh        # an existing binary
#
# Environment:
#   STEPS        comma list of: compile,run,chain,tpch (default: all of them)
#   TOOLS        strata,dbt (default both). With one tool and the RESULTS folder of an
#                earlier run, the other tool's numbers there are kept (e.g. rerun Strata
#                after a change without paying for dbt again); TOOLS=dbt needs no binary.
#   SIZES        model counts of the parse/compile projects (default 500,2000,10000)
#   RUNS         warm `strata compile` / `strata ls` repetitions (default 5)
#   DBT_RUNS     repetitions of `dbt parse` and `dbt compile` (default 2)
#   DBT_REPEAT_LIMIT  a dbt command whose first run took longer than this many seconds is
#                not repeated (default 300)
#   BUILD_RUNS   repetitions of each `build` (default 2; the runs alternate tool order)
#   RUN_MODELS   models of the build project (default 500)
#   ROWS         rows of each generated source table (default 50000; 10 tables at 500 models)
#   CHAIN_DEPTH  views in the chain (default 200)
#   TPCH_SCALE   TPC-H scale of the marts project (default 1; Parquet from tpchgen-cli,
#                shared with bench/warehouse in ~/.cache/strata-bench/tpch-sf$TPCH_SCALE)
#   STRATA_BIN   use this binary instead of building one
#   KEEP         1 keeps the generated compile projects (they are deleted after each size)
#   RESULTS      where JSON and report.md go (default ~/.cache/strata-bench/results/models-DATE)
#
# Peers: dbt-core 1.11 with dbt-duckdb (DuckDB 2.0.1), installed from PyPI into the shared
# venv ~/.cache/strata-bench-venv. A step that fails for one tool is reported; the run goes on.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STEPS="${STEPS:-compile,run,chain,tpch}"
TOOLS="${TOOLS:-strata,dbt}"
SIZES="${SIZES:-500,2000,10000}"
RUNS="${RUNS:-5}"
DBT_RUNS="${DBT_RUNS:-2}"
DBT_REPEAT_LIMIT="${DBT_REPEAT_LIMIT:-300}"
BUILD_RUNS="${BUILD_RUNS:-2}"
RUN_MODELS="${RUN_MODELS:-500}"
ROWS="${ROWS:-50000}"
CHAIN_DEPTH="${CHAIN_DEPTH:-200}"
TPCH_SCALE="${TPCH_SCALE:-1}"
CACHE="${STRATA_BENCH_CACHE:-$HOME/.cache/strata-bench}"
VENV="${STRATA_BENCH_VENV:-$HOME/.cache/strata-bench-venv}"
WORK="$CACHE/work-models"
RESULTS="${RESULTS:-$CACHE/results/models-$(date +%Y%m%d-%H%M%S)}"
TPCH="$CACHE/tpch-sf$TPCH_SCALE"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"

has_step() { [[ ",$STEPS," == *",$1,"* ]]; }
log() { printf '\n== %s\n' "$*" >&2; }
mkdir -p "$CACHE" "$RESULTS" "$WORK"

# --- Python tools -------------------------------------------------------------------------------
log "Python environment ($VENV)"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as m, sys
v = m.version("dbt-core").split(".")
m.version("dbt-duckdb"); m.version("duckdb"); m.version("pyarrow")
sys.exit(0 if (int(v[0]), int(v[1])) < (1, 12) else 1)
EOF
then
  # duckdb pinned as in bench/warehouse (the venv is shared).
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "dbt-core>=1.10,<1.12" "dbt-duckdb>=1.9,<1.12" "duckdb==2.0.1" "pyarrow>=18"
fi
if has_step tpch && [[ ! -f "$TPCH/.complete" ]]; then
  if [[ ! -x "$VENV/bin/tpchgen-cli" ]]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "tpchgen-cli==4.0.0" \
      || echo "tpchgen-cli could not be installed; the tpch step is skipped" >&2
  fi
  if [[ -x "$VENV/bin/tpchgen-cli" ]]; then
    log "Generating TPC-H SF$TPCH_SCALE Parquet into $TPCH"
    rm -rf "$TPCH.tmp"
    "$VENV/bin/tpchgen-cli" parquet --scale-factor "$TPCH_SCALE" --output-dir "$TPCH.tmp" --quiet \
      && rm -rf "$TPCH" && mv "$TPCH.tmp" "$TPCH" && touch "$TPCH/.complete" \
      || echo "tpchgen-cli failed; the tpch step is skipped" >&2
  fi
fi

# --- Strata binary --------------------------------------------------------------------------------
if [[ -n "${STRATA_BIN:-}" ]]; then
  BIN="$STRATA_BIN"
elif [[ ",$TOOLS," != *",strata,"* ]]; then
  BIN="$CARGO_TARGET_DIR/release/strata" # only named in machine.json
else
  log "Building strata (release) into $CARGO_TARGET_DIR"
  (cd "$ROOT" && cargo build --release -p strata --quiet) || {
    echo "building strata failed; STRATA_BIN=/path/to/strata runs an existing binary" >&2
    exit 1
  }
  BIN="$CARGO_TARGET_DIR/release/strata"
fi
[[ ",$TOOLS," != *",strata,"* ]] || "$BIN" --version >/dev/null
"$PY" "$HERE/models_bench.py" machine --bin "$BIN" --out "$RESULTS/machine.json"

# --- Steps --------------------------------------------------------------------------------------
if has_step compile; then
  log "Parse + compile: $SIZES models"
  "$PY" "$HERE/models_bench.py" compile --bin "$BIN" --work "$WORK" --sizes "$SIZES" \
    --tools "$TOOLS" --runs "$RUNS" --dbt-runs "$DBT_RUNS" --dbt-repeat-limit "$DBT_REPEAT_LIMIT" \
    ${KEEP:+--keep} --out "$RESULTS/compile.json" || echo "compile step failed (continuing)" >&2
fi
if has_step run; then
  log "Build: $RUN_MODELS generated table models over $ROWS-row sources"
  "$PY" "$HERE/models_bench.py" run --bin "$BIN" --work "$WORK" --models "$RUN_MODELS" \
    --rows "$ROWS" --tools "$TOOLS" --runs "$BUILD_RUNS" --out "$RESULTS/run.json" || echo "run step failed (continuing)" >&2
fi
if has_step chain; then
  log "Build: a chain of $CHAIN_DEPTH views, then a query of the last one"
  "$PY" "$HERE/models_bench.py" chain --bin "$BIN" --work "$WORK" --depth "$CHAIN_DEPTH" \
    --rows "$ROWS" --tools "$TOOLS" --runs "$BUILD_RUNS" --out "$RESULTS/chain.json" || echo "chain step failed (continuing)" >&2
fi
if has_step tpch; then
  if [[ -f "$TPCH/.complete" ]]; then
    log "Build: TPC-H SF$TPCH_SCALE marts project"
    "$PY" "$HERE/models_bench.py" tpch --bin "$BIN" --work "$WORK" --data "$TPCH" \
      --tools "$TOOLS" --runs "$BUILD_RUNS" --out "$RESULTS/tpch.json" || echo "tpch step failed (continuing)" >&2
  else
    echo "no TPC-H Parquet in $TPCH; the tpch step is skipped" >&2
  fi
fi

# --- Report -------------------------------------------------------------------------------------
log "Report ($RESULTS/report.md)"
"$PY" "$HERE/models_bench.py" report "$RESULTS" | tee "$RESULTS/report.md"
