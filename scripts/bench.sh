#!/usr/bin/env bash
# The rotation benchmark (benches/rotation/): the release service against the floor, the durable
# floor and a Python peer (requests + hvac), at concurrency 1, 16 and 64, plus the reconciler's
# idle cost; real OpenBao and the Auth0 emulator. Writes docs/performance.md.
#   scripts/bench.sh           full run (a few minutes)
#   scripts/bench.sh --short   small counts, prints the table only (CI runs this so it cannot rot)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/tools.sh bench
mkdir -p "${HOME:-/tmp}"
exec cargo bench --locked --features emulator --bench rotation -- "$@"
