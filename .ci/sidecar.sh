#!/usr/bin/env bash
# The memory-only sidecar: `cargo build -p sidekey --no-default-features` must build without Redis,
# PostgreSQL or JWT code, and its binary must serve the README's walkthrough.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== the memory-only sidecar (--no-default-features)"
if cargo tree -p sidekey --no-default-features -e normal --prefix none | grep -E '^(redis|tokio-postgres|jsonwebtoken) '; then
  echo "the memory-only build depends on the crates listed above" >&2
  exit 1
fi
cargo build -q -p sidekey --no-default-features
work=$(mktemp -d)
cp target/debug/sidekey "$work/sidekey"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
SIDEKEY_SECRET_OPENAI_PROD=sk-sidecar-walkthrough SIDEKEY_LISTEN=127.0.0.1:0 SIDEKEY_LOG_FORMAT=json \
  "$work/sidekey" serve 2>"$work/log" &
pid=$!
for _ in $(seq 1 100); do grep -q '"sidekey is listening"' "$work/log" && break; sleep 0.1; done
addr=$(grep -o '"addr":"[^"]*"' "$work/log" | head -1 | cut -d'"' -f4)
issued=$(curl -fsS -X POST "http://$addr/v1/sessions" -H 'content-type: application/json' \
  -d '{"secret_key_id": "openai-prod", "ttl_seconds": 900, "metadata": {"app": "chat"}}')
token=$(printf '%s' "$issued" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
curl -fsS -o /dev/null "http://$addr/v1/auth/verify" -H "authorization: Bearer $token"
curl -fsS -o /dev/null -X POST "http://$addr/v1/session/refresh" -H "authorization: Bearer $token"
curl -fsS -o /dev/null -X DELETE "http://$addr/v1/session" -H "authorization: Bearer $token"
status=$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/v1/auth/verify" -H "authorization: Bearer $token")
[ "$status" = 401 ] || { echo "a revoked token verified ($status)" >&2; exit 1; }
if grep -q sk-sidecar-walkthrough "$work/log"; then echo "the real key reached the log" >&2; exit 1; fi
echo "the sidecar served the walkthrough (issue, verify, refresh, revoke, 401)"
