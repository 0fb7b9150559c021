#!/usr/bin/env bash
# Checks the local stack as a new user meets it (CI runs this): scripts/dev.sh comes up
# SERVING, the commands it prints work as printed, and `kill <pid>` of the script stops every
# process it started. Uses its own ports so that it never meets a stack already running.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export BAO_PORT=18200 EMULATOR_PORT=14010 ROTATOR_PORT=15051 ADMIN_PORT=19090
out="$(mktemp)"
scripts/dev.sh >"$out" 2>&1 &
dev=$!
fail() { echo "dev-check: $*" >&2; cat "$out" >&2; kill "$dev" 2>/dev/null || true; exit 1; }

for _ in $(seq 1 600); do
  grep -q "is SERVING on" "$out" && break
  kill -0 "$dev" 2>/dev/null || fail "scripts/dev.sh exited before SERVING"
  sleep 0.5
done
grep -q "is SERVING on" "$out" || fail "no SERVING within 5 minutes"

# The commands it printed, run exactly as printed (indented lines after "Rotate a seeded
# client:" and "What Vault now holds:").
rotate="$(grep -A1 '^Rotate a seeded client:' "$out" | tail -1)"
vault="$(grep -A1 '^What Vault now holds:' "$out" | tail -1)"
status="$(grep -A1 '^Its last rotation' "$out" | tail -1)"
history="$(grep -A1 '^Its rotations, newest first' "$out" | tail -1)"
eval "$rotate" | grep -q '"rotationId"' || fail "the printed rotation failed: $rotate"
eval "$vault" | grep -q 'client_secret' || fail "the printed bao command failed: $vault"
eval "$status" | grep -q '"lastRotation"' || fail "the printed status failed: $status"
eval "$history" | grep -q '"outcome": "ok"' || fail "the printed history failed: $history"

kill "$dev"
for _ in $(seq 1 40); do
  if ! curl -fs "http://127.0.0.1:$BAO_PORT/v1/sys/health" >/dev/null 2>&1 \
    && ! curl -fs "http://127.0.0.1:$EMULATOR_PORT/__emulator/stats" >/dev/null 2>&1 \
    && ! (exec 3<>"/dev/tcp/127.0.0.1/$ROTATOR_PORT") 2>/dev/null; then
    echo "dev-check: scripts/dev.sh came up, its printed commands work, and kill <pid> stopped everything"
    rm -f "$out"
    exit 0
  fi
  sleep 0.25
done
fail "after kill $dev, something it started is still listening"
