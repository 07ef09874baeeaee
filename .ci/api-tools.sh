#!/usr/bin/env bash
# The OpenAPI tools, pinned: schemathesis (the fuzzer), openapi-python-client, and the TypeScript client's
# npm packages (tests/clients/typescript/package-lock.json). Installed only when missing.
#
#   bash .ci/api-tools.sh install   before `cargo test --workspace` (bin/tests/api_clients.rs needs them)
#   bash .ci/api-tools.sh fuzz      after it: schemathesis against the debug binary it built
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
OPENAPI_PYTHON_CLIENT_VERSION=0.29.1

pip_pinned() {
  local package=$1 version=$2
  if [ "$(python3 -m pip show "$package" 2>/dev/null | sed -n 's/^Version: //p')" != "$version" ]; then
    echo "== installing $package $version"
    python3 -m pip install --quiet --disable-pip-version-check "$package==$version"
  fi
}

case "${1:-install}" in
  install)
    pip_pinned schemathesis "$SCHEMATHESIS_VERSION"
    pip_pinned openapi-python-client "$OPENAPI_PYTHON_CLIENT_VERSION"
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
      echo "== installing nodejs and npm"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    if [ ! -x tests/clients/typescript/node_modules/.bin/tsc ]; then
      echo "== installing the TypeScript client's npm packages"
      (cd tests/clients/typescript && npm ci --no-audit --no-fund --silent)
    fi
    ;;
  fuzz)
    echo "== schemathesis against the served OpenAPI document (session holder, admin)"
    bash tests/schemathesis/run.sh "${CARGO_TARGET_DIR:-target}/debug/sidekey"
    ;;
  *)
    echo "usage: $0 install|fuzz" >&2
    exit 2
    ;;
esac
