#!/usr/bin/env bash
# Figure 1: hare's start-to-exit cost next to a minimal C sender (socket + sendto of the same
# legacy JSON), both sending one datagram to 127.0.0.1:9 (discard; nothing listens, so the
# kernel drops it). Reports hyperfine means, callgrind instruction counts (this VM has no
# hardware counters for `perf stat -e instructions`), and binary sizes before/after strip.
#
#   bench/hare_vs_c.sh                       # uses target/release/hare
#   HARE=target/x86_64-unknown-linux-gnu/release/hare bench/hare_vs_c.sh   # the static build
#
# Env: HARE (hare binary), SEND_C (C source, default bench/send.c), RUNS (500), WARMUP (50),
#      OUT (result dir, default /tmp/warren-bench/hare).
set -euo pipefail
cd "$(dirname "$0")/.."
HARE=${HARE:-target/release/hare}
SEND_C=${SEND_C:-bench/send.c}
RUNS=${RUNS:-500}
WARMUP=${WARMUP:-50}
OUT=${OUT:-/tmp/warren-bench/hare}
mkdir -p "$OUT"
SEND="$OUT/send"
gcc -O2 -o "$SEND" "$SEND_C"

export PAM_TYPE=open_session PAM_USER=dan PAM_SERVICE=sshd PAM_RHOST=192.0.2.10 PAM_TTY=ssh

echo "== hyperfine ($RUNS runs, $WARMUP warm-up) =="
hyperfine -N --warmup "$WARMUP" --runs "$RUNS" \
    --export-json "$OUT/hyperfine.json" \
    "$HARE --config /dev/null 127.0.0.1:9" \
    "$SEND 127.0.0.1 9"

echo "== instructions (valgrind --tool=callgrind, user space incl. the dynamic loader) =="
for cmd in "$HARE --config /dev/null 127.0.0.1:9" "$SEND 127.0.0.1 9"; do
    # shellcheck disable=SC2086
    ir=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null $cmd 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    printf '%-60s %12s instructions\n' "$cmd" "$ir"
done

echo "== sizes (bytes): as built / stripped copy =="
for b in "$HARE" "$SEND"; do
    cp "$b" "$OUT/stripped"
    strip "$OUT/stripped"
    printf '%-60s %10s %10s  (%s)\n' "$b" "$(stat -c %s "$b")" "$(stat -c %s "$OUT/stripped")" \
        "$(file -b "$b" | grep -o 'statically linked\|dynamically linked')"
done
rm -f "$OUT/stripped"
