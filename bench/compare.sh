#!/usr/bin/env bash
# warren next to the classic chain (hared -> mosquitto -> mqttwarn), in one command: builds the
# release binaries, makes a virtual environment with hared and mqttwarn from PyPI (once, in
# $BENCH_DIR/venv), and runs bench/compare.py with the arguments given (e.g. --rounds 5, or
# --smoke for a quick check). Needs mosquitto, mosquitto_pub (Debian: mosquitto,
# mosquitto-clients), gcc and python3-venv. Results: bench/results/compare-<date>-<time>/.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-/tmp/warren-bench}
VENV=${VENV:-$BENCH_DIR/venv}
mkdir -p "$BENCH_DIR"
cargo build --release -p warren-edge -p warren-hub
[[ -x $VENV/bin/pip ]] || python3 -m venv "$VENV"
for tool in hared==1.3 mqttwarn==0.36.1; do
  [[ -x $VENV/bin/${tool%%==*} ]] || "$VENV/bin/pip" install --quiet --disable-pip-version-check "$tool"
done
exec python3 bench/compare.py --venv "$VENV" "$@"
