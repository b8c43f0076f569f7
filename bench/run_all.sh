#!/usr/bin/env bash
# Runs every benchmark with its defaults, one after the other (about 20 minutes on the 2-core
# dev VM), logging to $OUT (default /tmp/warren-bench/results). Needs root for
# `sysctl -w net.core.rmem_max` (the scripts go on without it, with more kernel drops).
#   cargo build --release -p hare -p warren-edge -p warren-hub && bench/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/warren-bench/results}
mkdir -p "$OUT"
export BIN=${BIN:-$PWD/target/release}
git rev-parse --short HEAD > "$OUT/commit" 2>/dev/null || true
bench/hare_vs_c.sh                                           2>&1 | tee "$OUT/1-hare.txt"
bench/edge_ingest.py                                         2>&1 | tee "$OUT/2a-ingest-10s.txt"
bench/edge_ingest.py --skip-burst --duration 60 --rates 25000,27500,30000 --bisect 0 \
                                                             2>&1 | tee "$OUT/2b-ingest-60s.txt"
bench/edge_forward.py                                        2>&1 | tee "$OUT/3a-forward.txt"
bench/edge_forward.py --window 4000                          2>&1 | tee "$OUT/3b-forward-w4000.txt"
bench/rss.py --part edge                                     2>&1 | tee "$OUT/4a-rss-edge.txt"
bench/rss.py --part hub                                      2>&1 | tee "$OUT/4b-rss-hub-mtls.txt"
bench/rss.py --part hub --via local                          2>&1 | tee "$OUT/4c-rss-hub-local.txt"
grep -h "RESULT\|sustained\|Summary\|times faster\|Time (mean\|instructions\|stripped\|bytes" "$OUT"/*.txt
