#!/usr/bin/env bash
# Side-by-side benchmark of daemonhost's runtime against raw tokio, ractor, kameo and actix
# (bench/peers). Builds bench/peers in release outside the repo, runs ROUNDS rounds, each
# library x scenario in its own process, the library order rotated every round, then prints a
# markdown table of the medians with daemonhost's ratio to raw.
#
#   scripts/bench_peers.sh                 # 5 rounds, full counts (run it on a quiet machine)
#   ROUNDS=1 PEERS_N=20000 scripts/bench_peers.sh    # a quick smoke run
#
# Env: ROUNDS (default 5); PEERS_N (requests per ask scenario, default 200000; every other
# count scales with it); PEERS_TARGET_DIR (default ${CARGO_TARGET_DIR:-~/.cache/daemonhost-target}/peers);
# PEERS_OUT (the JSON lines of every run; default a new file under /tmp); PEERS_BASE_BIN (a
# `peers` binary built from another commit: its daemonhost runs too, as `daemonhost-base`, for an
# A/B of two commits in the same rounds).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
TARGET_DIR="${PEERS_TARGET_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/daemonhost-target}/peers}"
OUT="${PEERS_OUT:-$(mktemp /tmp/peers-XXXXXX.jsonl)}"
LIBS=(raw daemonhost ractor kameo actix)
BASE="${PEERS_BASE_BIN:-}"
if [[ -n "$BASE" ]]; then
    [[ -x "$BASE" ]] || { echo "bench_peers: PEERS_BASE_BIN is not an executable: $BASE" >&2; exit 1; }
    LIBS+=(daemonhost-base)
fi
SCENARIOS=(ask-seq ask-pipe ask-fan8 startup15 idle10k)

echo "== build bench/peers (release, target dir $TARGET_DIR)" >&2
CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet --manifest-path bench/peers/Cargo.toml
bin="$TARGET_DIR/release/peers"

: >"$OUT"
failed=0
for ((round = 1; round <= ROUNDS; round++)); do
    # Rotate the library order so no library always runs first (or right after the build).
    shift_by=$(((round - 1) % ${#LIBS[@]}))
    order=("${LIBS[@]:shift_by}" "${LIBS[@]:0:shift_by}")
    echo "== round $round/$ROUNDS: ${order[*]}" >&2
    for scenario in "${SCENARIOS[@]}"; do
        for lib in "${order[@]}"; do
            run=("$bin" "$lib")
            if [[ "$lib" == daemonhost-base ]]; then run=("$BASE" daemonhost); fi
            if line="$(timeout 600 "${run[@]}" "$scenario")"; then
                if [[ "$lib" == daemonhost-base ]]; then
                    line="${line/\"lib\":\"daemonhost\"/\"lib\":\"daemonhost-base\"}"
                fi
                echo "$line" | tee -a "$OUT" >&2
            else
                echo "!! $lib $scenario failed (exit $?)" >&2
                failed=$((failed + 1))
            fi
        done
    done
done

echo "== runs: $OUT" >&2
python3 scripts/peers_table.py "$OUT"
if ((failed > 0)); then
    echo "!! $failed run(s) failed" >&2
    exit 1
fi
