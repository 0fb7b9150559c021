#!/usr/bin/env bash
# The batch benchmark (benches/batch/): RotateSecrets over 200 clients at the emulator's
# burst 10 / 5 per second, one replica and two; prints the makespan against the bound, 429s,
# rotations lost or doubled. About two minutes after the release build.
#   scripts/bench-batch.sh           full run
#   scripts/bench-batch.sh --smoke   20 clients on the debug build: what CI runs, so that the
#                                    benchmark cannot rot; its figures mean little
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/tools.sh bench
profile=()
for arg in "$@"; do
  if [ "$arg" = "--smoke" ]; then
    profile=(--profile dev)
  fi
done
exec cargo bench --locked --features emulator "${profile[@]}" --bench batch -- "$@"
