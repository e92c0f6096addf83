#!/usr/bin/env bash
# Warehouse benchmark: TPC-H on Strata vs raw DataFusion vs DuckDB, load speed, cold start,
# idle RSS and a sort that spills. Prints numbers; never fails on one. See bench/README.md.
#
#   bench/warehouse/run.sh                  # SF1, best of 3
#   SCALE=0.1 RUNS=1 bench/warehouse/run.sh # quick check
#
# Environment:
#   SCALE        TPC-H scale factor (default 1)
#   RUNS         repetitions per query, best one counts (default 3)
#   ROUNDS       passes over all engines (default 1); a query's time is its best over all
#                passes, so a burst of other load on the machine hurts no engine alone.
#                Even passes run the engines in reverse order.
#   STEPS        comma list of: load,strata,peers,startup,spill (default: all of them)
#   ONLY         only these queries, e.g. "1,6,18"
#   STRATA_BIN   use this binary instead of building one
#   SPILL_LIMIT  engine.memory_limit of the spill test (default 256MB)
#   SPILL_FACTOR table size / limit in the spill test (default 5)
#   QUERY_TIMEOUT seconds per Strata query process (default 600)
#   RESULTS      where JSON and report.md go (default ~/.cache/strata-bench/results/sf$SCALE-DATE)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
SCALE="${SCALE:-1}"
RUNS="${RUNS:-3}"
ROUNDS="${ROUNDS:-1}"
STEPS="${STEPS:-load,strata,peers,startup,spill}"
ONLY="${ONLY:-}"
CACHE="${STRATA_BENCH_CACHE:-$HOME/.cache/strata-bench}"
VENV="${STRATA_BENCH_VENV:-$HOME/.cache/strata-bench-venv}"
DATA="$CACHE/tpch-sf$SCALE"
WORK="$CACHE/work-sf$SCALE"
RESULTS="${RESULTS:-$CACHE/results/sf$SCALE-$(date +%Y%m%d-%H%M%S)}"
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
want = {"datafusion": "55.", "duckdb": "", "pyarrow": "", "tpchgen-cli": ""}
sys.exit(0 if all(m.version(k).startswith(v) for k, v in want.items()) else 1)
EOF
then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "datafusion==55.0.0" "duckdb==2.0.1" "pyarrow>=18" "tpchgen-cli==4.0.0"
fi

# --- Data ---------------------------------------------------------------------------------------
if [[ ! -f "$DATA/.complete" ]]; then
  log "Generating TPC-H SF$SCALE Parquet into $DATA"
  rm -rf "$DATA.tmp"
  "$VENV/bin/tpchgen-cli" parquet --scale-factor "$SCALE" --output-dir "$DATA.tmp" --quiet
  rm -rf "$DATA"
  mv "$DATA.tmp" "$DATA"
  touch "$DATA/.complete"
else
  log "Reusing TPC-H SF$SCALE Parquet in $DATA"
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

# --- Machine --------------------------------------------------------------------------------------
"$PY" - "$RESULTS/machine.json" "$SCALE" "$RUNS" "$BIN" <<'EOF'
import json, os, platform, subprocess, sys, datetime
import duckdb, datafusion, pyarrow
out, scale, runs, bin_ = sys.argv[1:5]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()[1].split()[1]
strata = subprocess.run([bin_, "--version"], capture_output=True, text=True).stdout.strip()
json.dump({
    "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    "scale": scale, "runs": int(runs), "cpu": cpu, "nproc": os.cpu_count(), "mem": mem,
    "kernel": platform.release(),
    "versions": {"strata": strata, "datafusion (Python)": datafusion.__version__,
                 "duckdb": duckdb.__version__, "pyarrow": pyarrow.__version__},
}, open(out, "w"), indent=1)
EOF

PROJECT="$WORK/tpch"
ONLY_ARGS=()
[[ -n "$ONLY" ]] && ONLY_ARGS=(--only "$ONLY")

# --- Load ---------------------------------------------------------------------------------------
if has_step load || [[ ! -f "$PROJECT/strata.yml" ]]; then
  log "Loading SF$SCALE into a fresh Strata project ($PROJECT)"
  "$PY" "$HERE/strata_bench.py" load --bin "$BIN" --project "$PROJECT" --data "$DATA" --fresh \
    --out "$RESULTS/load.json" || echo "load step failed (continuing)" >&2
fi

# --- Queries: Strata and the peers, ROUNDS times -------------------------------------------------
# engine.memory_limit of the project Strata runs with: the DataFusion control gets the same pool.
MEMLIMIT="$("$PY" - "$PROJECT/strata.yml" <<'EOF'
import re, sys
# engine.memory_limit of the top-level engine: block (not an environment's).
in_engine = False
for line in open(sys.argv[1]):
    if re.match(r"^\S", line):
        in_engine = line.startswith("engine:")
        continue
    m = re.match(r"^\s+memory_limit:\s*(\S+)", line)
    if in_engine and m and m.group(1).lower() not in ("none", "unlimited"):
        n = re.fullmatch(r"([\d.]+)\s*([KMGT]?)B?", m.group(1), re.I)
        print(int(float(n.group(1)) * 1024 ** "_KMGT".index(n.group(2).upper() or "_")))
        break
EOF
)"
if has_step peers; then
  "$PY" "$HERE/strata_bench.py" lakefiles --project "$PROJECT" --out-dir "$WORK/lakefiles" >/dev/null \
    || echo "could not list the lake's files (continuing)" >&2
fi

run_strata() {
  log "Strata: $RUNS runs of each query, per process and in one process"
  "$PY" "$HERE/strata_bench.py" queries --bin "$BIN" --project "$PROJECT" --runs "$RUNS" \
    --timeout "${QUERY_TIMEOUT:-600}" "${ONLY_ARGS[@]}" --out "$RESULTS/strata$1.json" \
    || echo "strata step failed (continuing)" >&2
}
run_datafusion() {
  log "Raw DataFusion with Strata's settings (memory pool: ${MEMLIMIT:-unbounded} bytes)"
  "$PY" "$HERE/peers.py" --engine datafusion --data "$DATA" --runs "$RUNS" "${ONLY_ARGS[@]}" \
    ${MEMLIMIT:+--memory-limit "$MEMLIMIT"} --out "$RESULTS/datafusion$1.json" || true
}
run_datafusion_lake() {
  [[ -d "$WORK/lakefiles" ]] || return 0
  log "Raw DataFusion with Strata's settings over the lake's own Parquet files"
  "$PY" "$HERE/peers.py" --engine datafusion --label datafusion-lake --layout lake \
    --data "$WORK/lakefiles" --runs "$RUNS" "${ONLY_ARGS[@]}" ${MEMLIMIT:+--memory-limit "$MEMLIMIT"} \
    --out "$RESULTS/datafusion-lake$1.json" || true
  # Delta's table provider (deltalake 1.1 `DeltaScanConfig`) scans with Parquet filter
  # pushdown on, whatever the session says; this run isolates that choice.
  log "Raw DataFusion over the lake's files with parquet.pushdown_filters=true (as Delta's scan)"
  "$PY" "$HERE/peers.py" --engine datafusion --label datafusion-lake-pushdown \
    --layout lake --data "$WORK/lakefiles" --runs "$RUNS" "${ONLY_ARGS[@]}" \
    ${MEMLIMIT:+--memory-limit "$MEMLIMIT"} --set datafusion.execution.parquet.pushdown_filters=true \
    --out "$RESULTS/datafusion-lake-pushdown$1.json" || true
}
run_datafusion_default() {
  log "Raw DataFusion with its defaults"
  "$PY" "$HERE/peers.py" --engine datafusion-default --data "$DATA" --runs "$RUNS" "${ONLY_ARGS[@]}" \
    --out "$RESULTS/datafusion-default$1.json" || true
}
run_duckdb() {
  log "DuckDB"
  "$PY" "$HERE/peers.py" --engine duckdb --data "$DATA" --runs "$RUNS" "${ONLY_ARGS[@]}" \
    --out "$RESULTS/duckdb$1.json" || true
}

ENGINES=()
if has_step strata; then ENGINES+=(run_strata); fi
if has_step peers; then ENGINES+=(run_datafusion run_datafusion_lake run_datafusion_default run_duckdb); fi
for ((round = 1; round <= ROUNDS; round++)); do
  suffix=""
  if ((ROUNDS > 1)); then
    suffix=".r$round"
    log "Round $round of $ROUNDS"
  fi
  order=("${ENGINES[@]}")
  if ((round % 2 == 0)); then # even rounds run the engines in reverse order
    order=()
    for ((i = ${#ENGINES[@]} - 1; i >= 0; i--)); do order+=("${ENGINES[$i]}"); done
  fi
  for fn in "${order[@]}"; do "$fn" "$suffix"; done
done

# --- Startup and idle RSS -----------------------------------------------------------------------
if has_step startup; then
  log "Cold start and idle RSS"
  "$PY" "$HERE/strata_bench.py" startup --bin "$BIN" --project "$PROJECT" -n 10 \
    --out "$RESULTS/startup.json" || true
fi

# --- Spill --------------------------------------------------------------------------------------
if has_step spill; then
  log "Sort of a table ${SPILL_FACTOR:-5}x engine.memory_limit=${SPILL_LIMIT:-256MB}"
  "$PY" "$HERE/strata_bench.py" spill --bin "$BIN" --dir "$WORK/spill" \
    --limit "${SPILL_LIMIT:-256MB}" --factor "${SPILL_FACTOR:-5}" --out "$RESULTS/spill.json" || true
fi

# --- Report -------------------------------------------------------------------------------------
log "Report ($RESULTS/report.md)"
"$PY" "$HERE/report.py" "$RESULTS"
