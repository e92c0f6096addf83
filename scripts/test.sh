#!/usr/bin/env bash
# Runs Strata's whole test suite: services, formatting, lints, the dependency guard and
# every test (unit, integration against real services, SQL logic, CLI end to end).
#
#   scripts/test.sh            # everything
#   scripts/test.sh -E 'package(strata-lake)'   # extra arguments go to cargo nextest
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
started=$(date +%s)

step() { echo; echo "==> $*"; }

step "services"
scripts/services.sh

step "python test clients"
VENV="${STRATA_VENV:-$HOME/.cache/strata-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
req_hash=$(sha256sum scripts/requirements-test.txt | cut -c1-16)
if [ ! -f "$VENV/.req-$req_hash" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r scripts/requirements-test.txt
  touch "$VENV/.req-$req_hash"
fi
export STRATA_PYTHON="$VENV/bin/python"

step "S3-compatible server (moto) on loopback"
moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"${TMPDIR:-/tmp}/strata-moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
  curl -s "http://127.0.0.1:$moto_port/" >/dev/null 2>&1 && break
  sleep 0.5
done
export STRATA_IT_S3_ENDPOINT="http://127.0.0.1:$moto_port"
export STRATA_IT_POSTGRES="postgres://postgres@127.0.0.1:5432/test"
export STRATA_IT_MYSQL="mysql://root@127.0.0.1:3306/test"
export STRATA_IT_REDIS="redis://127.0.0.1:6379"

step "format"
cargo fmt --all -- --check

step "dependency guard"
scripts/check-duplicates.sh

step "clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "tests"
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
cargo nextest run --workspace --no-fail-fast --cargo-quiet
echo "test.sh: done in $(( $(date +%s) - started ))s"
