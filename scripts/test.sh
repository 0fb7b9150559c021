#!/usr/bin/env bash
# Runs every test: the alert rules (promtool), unit tests and the end-to-end suite (real
# OpenBao, the Auth0 emulator, the service, the real grpcurl). Installs what the tests need into .tools/ first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/tools.sh
# HOME must exist for OpenBao's dev mode.
mkdir -p "${HOME:-/tmp}"
# The shipped alert rules against the series they must and must not page on.
.tools/bin/promtool check rules deploy/prometheus/rules.yaml >/dev/null
.tools/bin/promtool test rules deploy/prometheus/rules.test.yaml
# --tests: every test target, no doctests (there are none), so the run ends on the e2e summary.
exec cargo test --locked --features emulator --tests "$@"
