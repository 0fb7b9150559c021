#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end suite (real OpenBao, the Auth0 emulator,
# the service, the real grpcurl). Installs what the tests need into .tools/ first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/tools.sh
# HOME must exist for OpenBao's dev mode.
mkdir -p "${HOME:-/tmp}"
# --tests: every test target, no doctests (there are none), so the run ends on the e2e summary.
exec cargo test --locked --features emulator --tests "$@"
