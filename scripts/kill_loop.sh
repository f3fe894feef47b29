#!/usr/bin/env bash
# The kill loop at length: the host and its workers SIGKILLed at random moments under mixed load,
# CYCLES times (default 200), then every acknowledged write checked, no clientMessageId doubled,
# every persona restored. CI runs the same test with 20 cycles.
#
#   scripts/kill_loop.sh [CYCLES] [SEED]
#
# The seed (printed) replays the same kill moments.
set -euo pipefail
cd "$(dirname "$0")/.."
export DAEMONHOST_KILL_CYCLES="${1:-200}"
export DAEMONHOST_KILL_SEED="${2:-$(date +%s)}"
exec cargo test --release -p daemonhost --test e2e sigkill_loop -- --nocapture
