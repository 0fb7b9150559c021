#!/usr/bin/env bash
# The local stack: a real OpenBao dev server, the Auth0 emulator and secret-rotator, on
# loopback. Installs OpenBao and grpcurl into .tools/ when missing. Stops everything it started
# on Ctrl-C or `kill <pid of this script>`.
#
# Ports (override with env): BAO_PORT=8200 EMULATOR_PORT=4010 ROTATOR_PORT=50051 ADMIN_PORT=9090
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

BAO_PORT="${BAO_PORT:-8200}"
EMULATOR_PORT="${EMULATOR_PORT:-4010}"
ROTATOR_PORT="${ROTATOR_PORT:-50051}"
ADMIN_PORT="${ADMIN_PORT:-9090}"
state="$root/.stack"
rm -rf "$state" && mkdir -p "$state/home"

scripts/tools.sh
echo "dev: building secret-rotator and the Auth0 emulator" >&2
cargo build --locked --quiet --features emulator --bins

# Throwaway credentials for this run only.
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
vault_token="dev-$(random_hex 16)"
# For the commands in the README (bao kv get ...); gone with the rest at the next start.
(umask 077 && printf '%s\n' "$vault_token" >"$state/vault-token")
m2m_secret="$(random_hex 32)"
m2m_id="Dm0M2MService0000000000000000001"
demo_client="Dm0WebApp4Rotation00000000000001"

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

HOME="$state/home" .tools/bin/bao server -dev -dev-root-token-id="$vault_token" \
  -dev-listen-address="127.0.0.1:$BAO_PORT" >"$state/openbao.log" 2>&1 &
pids+=($!)

EMULATOR_SERVICE_CLIENT_SECRET="$m2m_secret" target/debug/auth0-emulator \
  --listen "127.0.0.1:$EMULATOR_PORT" --service-client-id "$m2m_id" >"$state/emulator.log" 2>&1 &
pids+=($!)

# Wait (bounded) for both before starting the service.
for _ in $(seq 1 100); do
  if curl -fs "http://127.0.0.1:$BAO_PORT/v1/sys/health" >/dev/null 2>&1 \
    && curl -fs "http://127.0.0.1:$EMULATOR_PORT/__emulator/stats" >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done

env -u AUTH0_MANAGEMENT_TOKEN \
  ROTATOR_INSECURE=true \
  ROTATOR_LISTEN_ADDR="127.0.0.1:$ROTATOR_PORT" \
  ROTATOR_ADMIN_ADDR="127.0.0.1:$ADMIN_PORT" \
  AUTH0_DOMAIN="emulator.auth0.local" \
  AUTH0_BASE_URL="http://127.0.0.1:$EMULATOR_PORT" \
  AUTH0_CLIENT_ID="$m2m_id" \
  AUTH0_CLIENT_SECRET="$m2m_secret" \
  VAULT_ADDR="http://127.0.0.1:$BAO_PORT" \
  VAULT_TOKEN="$vault_token" \
  ROTATOR_LOG_FORMAT="${ROTATOR_LOG_FORMAT:-text}" \
  target/debug/secret-rotator serve >"$state/secret-rotator.log" 2>&1 &
# The service's own pid (a pipeline's $! would be its last command), so that stopping this
# script, by Ctrl-C or by `kill <pid>`, stops the service too.
service=$!
pids+=($service)
tail -n +1 -f "$state/secret-rotator.log" >&2 &
pids+=($!)

serving=""
for _ in $(seq 1 300); do
  # A service that stops while starting (a bad setting, a broken schedule file) is reported at
  # once, with its last line.
  if ! kill -0 "$service" 2>/dev/null; then
    status=0
    wait "$service" || status=$?
    echo "dev: secret-rotator exited with status $status while starting: $(tail -n 1 "$state/secret-rotator.log")" >&2
    exit 1
  fi
  if .tools/bin/grpcurl -plaintext "127.0.0.1:$ROTATOR_PORT" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING; then
    serving=yes
    break
  fi
  sleep 0.1
done
if [ -z "$serving" ]; then
  echo "dev: secret-rotator did not become SERVING; see $state/*.log" >&2
  exit 1
fi

cat <<MSG

secret-rotator is SERVING on 127.0.0.1:$ROTATOR_PORT (OpenBao on :$BAO_PORT, Auth0 emulator on :$EMULATOR_PORT).
Logs: $state/. Ctrl-C (or kill $$) stops everything; its state is in memory and gone at the next start.

Rotate a seeded client:
  .tools/bin/grpcurl -plaintext -d '{"client_id": "$demo_client", "reason": "trying it out"}' 127.0.0.1:$ROTATOR_PORT secretrotator.v1.SecretRotationService/RotateSecret

What Vault now holds:
  BAO_ADDR=http://127.0.0.1:$BAO_PORT BAO_TOKEN=\$(cat .stack/vault-token) .tools/bin/bao kv get secret/auth0/clients/$demo_client

Then a staged rotation (zero downtime: the next secret waits in Vault as next_client_secret for 2
minutes, then the service promotes it; CompleteRotation with its rotation id does it at once):
  staged=\$(.tools/bin/grpcurl -plaintext -d '{"client_id": "$demo_client", "strategy": "ROTATION_STRATEGY_STAGED", "distribute_for": "120s"}' 127.0.0.1:$ROTATOR_PORT secretrotator.v1.SecretRotationService/RotateSecret)
  rotation_id=\$(printf '%s' "\$staged" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rotationId"])')
  .tools/bin/grpcurl -plaintext -d "{\\"client_id\\": \\"$demo_client\\", \\"rotation_id\\": \\"\$rotation_id\\"}" 127.0.0.1:$ROTATOR_PORT secretrotator.v1.SecretRotationService/CompleteRotation

Its last rotation, a staged one and any rotation still open:
  .tools/bin/grpcurl -plaintext -d '{"client_id": "$demo_client"}' 127.0.0.1:$ROTATOR_PORT secretrotator.v1.SecretRotationService/GetRotationStatus

Its rotations, newest first, and how each ended:
  .tools/bin/grpcurl -plaintext -d '{"client_id": "$demo_client"}' 127.0.0.1:$ROTATOR_PORT secretrotator.v1.SecretRotationService/ListRotations

Metrics and readiness:
  curl -s http://127.0.0.1:$ADMIN_PORT/metrics; curl -s http://127.0.0.1:$ADMIN_PORT/readyz

The secret the emulator (Auth0) now accepts:
  curl -s http://127.0.0.1:$EMULATOR_PORT/__emulator/clients/$demo_client

Other seeded clients: Dm0WebApp4Rotation00000000000002, tpc_rhQfCQohbSxytKPKF987fE,
Dm0PrivateKeyJwt0000000000000001 (private_key_jwt: RotateSecret rotates its key).
MSG

wait
