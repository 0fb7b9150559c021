#!/usr/bin/env bash
# The rotation benchmark (benches/rotation/): the release service against the floor, the durable
# floor and a Python peer (requests + hvac), at concurrency 1, 16 and 64, plus the reconciler's
# idle cost; real OpenBao and the Auth0 emulator. Writes docs/performance.md.
#   scripts/bench.sh           full run (about fifteen minutes after the release build)
#   scripts/bench.sh --short   small counts, prints the table only
#   scripts/bench.sh --smoke   --short on the debug build the tests already made: what CI runs,
#                              so that the benchmark cannot rot; its figures mean nothing
# Other options (--count N, --only PART, --profile FILE) are described in benches/rotation/main.rs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/tools.sh bench
mkdir -p "${HOME:-/tmp}"
profile=()
args=()
for arg in "$@"; do
  if [ "$arg" = "--smoke" ]; then
    profile=(--profile dev)
    args+=(--short)
  else
    args+=("$arg")
  fi
done
exec cargo bench --locked --features emulator "${profile[@]}" --bench rotation -- "${args[@]}"
