#!/usr/bin/env bash
# The garbage property tests at length, in release: the frame decoder and the params reader on
# arbitrary bytes and JSON (UNIT_CASES cases each, default 10000), the router's bounded
# near-match search, then the real binary: every declared command sent arbitrary params in
# CASES pipelined batches (default 1500, one request per command each: 73 commands today, so
# 109,500 requests) and CASES raw garbage connections. CI runs the same tests with
# PROPTEST_CASES=128.
#
#   scripts/garbage.sh [CASES] [UNIT_CASES]
#
# Fails unless the end-to-end tests saw at least 100,000 cases (requests plus raw connections).
# A failure prints proptest's minimal case and the tail of the host's log.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES="${1:-1500}"
UNIT_CASES="${2:-10000}"
MIN_E2E=100000
log="$(mktemp -t garbage.XXXXXX.log)"
start=$(date +%s)

echo "== protocol and router: PROPTEST_CASES=$UNIT_CASES"
PROPTEST_CASES="$UNIT_CASES" cargo test --release -p daemonhost-protocol --test garbage
PROPTEST_CASES="$UNIT_CASES" cargo test --release -p daemonhost-protocol --lib a_begun_frame
PROPTEST_CASES="$UNIT_CASES" cargo test --release -p daemonhost-runtime --lib router::tests::the_bounded

echo "== the real binary: PROPTEST_CASES=$CASES"
PROPTEST_CASES="$CASES" cargo test --release -p daemonhost --test e2e garbage:: -- --nocapture 2>&1 |
    tee "$log"

end=$(date +%s)
requests=$(sed -n 's/^garbage: commands: [0-9]* cases, \([0-9]*\) requests.*/\1/p' "$log")
answers=$(sed -n 's/^garbage: commands: .* requests to [0-9]* commands, \([0-9]*\) answers.*/\1/p' "$log")
raw=$(sed -n 's/^garbage: raw: \([0-9]*\) cases.*/\1/p' "$log")
raw_answers=$(sed -n 's/^garbage: raw: .* sent, \([0-9]*\) answers.*/\1/p' "$log")
total=$(( ${requests:-0} + ${raw:-0} ))
echo
echo "== summary"
grep '^garbage:' "$log"
echo "end-to-end cases: $total (${requests:-?} requests, ${answers:-?} answers; ${raw:-?} raw connections, ${raw_answers:-?} answers)"
echo "wall time: $(( end - start )) s (build included)"
rm -f "$log"
if (( total < MIN_E2E )); then
    echo "error: fewer than $MIN_E2E end-to-end cases; raise CASES" >&2
    exit 1
fi
