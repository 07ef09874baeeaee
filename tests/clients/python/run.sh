#!/usr/bin/env bash
# Generates a Python client from the committed document (openapi-python-client, pinned in
# .ci/api-tools.sh) into a temporary directory and runs the README walkthrough with it against
# SIDEKEY_URL. Generation takes about a second, so nothing generated is committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
command -v openapi-python-client >/dev/null || { echo "openapi-python-client is not installed (bash .ci/api-tools.sh)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
openapi-python-client generate --path "$root/openapi/openapi.json" --output-path "$work/sidekey_client" \
  --meta none >"$work/generate.log" 2>&1 || { cat "$work/generate.log" >&2; exit 1; }
PYTHONPATH="$work" python3 "$here/walkthrough.py"
