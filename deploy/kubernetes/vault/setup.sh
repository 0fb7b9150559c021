#!/usr/bin/env bash
# The Vault side, run once by a Vault administrator (VAULT_ADDR and VAULT_TOKEN set): the
# policy above and a Kubernetes-auth role that gives it to the service's service account only.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vault policy write secret-rotator "$here/secret-rotator.hcl"
vault write auth/kubernetes/role/secret-rotator \
  bound_service_account_names=secret-rotator \
  bound_service_account_namespaces=secret-rotator \
  token_policies=secret-rotator \
  token_ttl=1h token_max_ttl=24h
