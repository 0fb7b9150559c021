#!/usr/bin/env bash
# Checks the local stack as a new user meets it (CI runs this): scripts/dev.sh comes up
# SERVING, the commands it prints and the README's commands work as printed, and `kill <pid>`
# of the script stops every process it started. Uses its own ports so that it never meets a
# stack already running (the README's are rewritten to them, and nothing else).
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
staged="$(grep -A4 '^Then a staged rotation' "$out" | tail -3)"
(eval "$staged") | grep -q '"outcome": "promoted"\|"rotationId"' || fail "the printed staged rotation failed: $staged"

# Every sh block of the README but the first (the set-up commands), in order, in one shell that
# stops at the first failure.
readme="$(mktemp)"
python3 - "$ROTATOR_PORT" "$BAO_PORT" "$EMULATOR_PORT" >"$readme" <<'PY'
import re, sys
rotator, bao, emulator = sys.argv[1:]
blocks = re.findall(r"```sh\n(.*?)```", open("README.md").read(), re.S)[1:]
print("set -euo pipefail")
print(f"export ROTATOR_SERVER=http://127.0.0.1:{rotator}")
for block in blocks:
    print(block.replace("127.0.0.1:50051", f"127.0.0.1:{rotator}")
               .replace("127.0.0.1:8200", f"127.0.0.1:{bao}")
               .replace("127.0.0.1:4010", f"127.0.0.1:{emulator}"))
PY
ran="$(bash "$readme" 2>&1)" || fail "a README command failed: $ran"
for expected in '"rotationId"' 'client_secret' '"lastRotation"' '"outcome": "ok"' 'SERVING' '"access_token"'; do
  grep -q "$expected" <<<"$ran" || fail "the README's commands did not show $expected: $ran"
done
rm -f "$readme"

kill "$dev"
stopped=""
for _ in $(seq 1 40); do
  if ! curl -fs "http://127.0.0.1:$BAO_PORT/v1/sys/health" >/dev/null 2>&1 \
    && ! curl -fs "http://127.0.0.1:$EMULATOR_PORT/__emulator/stats" >/dev/null 2>&1 \
    && ! (exec 3<>"/dev/tcp/127.0.0.1/$ROTATOR_PORT") 2>/dev/null; then
    stopped=yes
    break
  fi
  sleep 0.25
done
[ -n "$stopped" ] || fail "after kill $dev, something it started is still listening"

# A service that cannot start (here a broken schedule file: it exits with status 2 at once) is
# reported by scripts/dev.sh at once, with the service's last line, not after polling for 30 s.
broken="$(mktemp)"
printf '[[rule]]\nlabel = "broken"\nmax_age = "soon"\n' >"$broken"
started=$SECONDS
if ROTATOR_SCHEDULE_FILE="$broken" scripts/dev.sh >"$out" 2>&1; then
  fail "scripts/dev.sh came up with a broken schedule file"
fi
grep -q "secret-rotator exited with status 2 while starting: .*max_age" "$out" \
  || fail "scripts/dev.sh did not report the service's exit and its reason"
took=$((SECONDS - started))
[ "$took" -lt 20 ] || fail "scripts/dev.sh took ${took}s to report a service that exited at once"
rm -f "$broken" "$out"
echo "dev-check: scripts/dev.sh came up, its printed commands and the README's work, kill <pid> stopped everything, and a service that cannot start is reported at once"
