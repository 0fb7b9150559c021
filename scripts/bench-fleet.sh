#!/usr/bin/env bash
# The fleet benchmark (benches/fleet/): 10,000 clients on an Essentials tenant's two buckets, a
# schedule over every client; a wave of 1,000 due at once, then the cost at rest with one
# replica and three, and the scheduler's memory. About 20 minutes after the release build.
#   scripts/bench-fleet.sh           full run
#   scripts/bench-fleet.sh --short   300 clients, a wave of 30, on the debug build: what CI
#                                    runs, so that the benchmark cannot rot; its figures mean little
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/tools.sh bench
profile=()
for arg in "$@"; do
  if [ "$arg" = "--short" ]; then
    profile=(--profile dev)
  fi
done
exec cargo bench --locked --features emulator "${profile[@]}" --bench fleet -- "$@"
