#!/usr/bin/env bash
# Fuzzes the real binary against the document it serves: schemathesis with every check, the stateful
# phase included, once as a session holder and once as the admin. Zero failures or this fails.
#
#   tests/schemathesis/run.sh [path/to/sidekey]   (default: $CARGO_TARGET_DIR or target, debug/sidekey)
#
# The proxy routes are fuzzed too, against a local fake upstream that answers 200 (fake_upstream.py).
# Extra arguments for `schemathesis run` can be given in SCHEMATHESIS_ARGS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="${1:-${CARGO_TARGET_DIR:-$root/target}/debug/sidekey}"
[ -x "$binary" ] || { echo "no sidekey binary at $binary (cargo build -p sidekey)" >&2; exit 1; }
command -v st >/dev/null || { echo "schemathesis (st) is not installed: bash .ci/api-tools.sh" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The fake upstream, on a free port it prints.
python3 "$here/fake_upstream.py" >"$work/upstream.port" &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$work/upstream.port" ] && break; sleep 0.1; done
upstream_port="$(cat "$work/upstream.port")"

admin_token="fuzz-admin-token-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
cat >"$work/sidekey.toml" <<TOML
listen = "127.0.0.1:0"

[http]
# The fuzzer sends thousands of refused requests from one address: the failure and issuance limits
# would answer 429 to most of them and hide what it is looking for.
failed_requests_per_second = 0
issue_per_client_per_minute = 0

[admin]
token = "$admin_token"

[[upstreams]]
name = "openai"
base_url = "http://127.0.0.1:$upstream_port"
allowed_secret_key_ids = ["openai-*"]

[[upstreams]]
name = "chatkit"
base_url = "http://127.0.0.1:$upstream_port"
allowed_secret_key_ids = ["openai-*"]
TOML

SIDEKEY_SECRET_OPENAI_PROD="sk-fuzz-not-a-real-key" "$binary" serve --config "$work/sidekey.toml" \
  --log-format json 2>"$work/sidekey.log" >/dev/null &
pids+=($!)
addr=""
for _ in $(seq 1 100); do
  addr="$(grep -o '"addr":"[^"]*"' "$work/sidekey.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "sidekey did not start:" >&2; cat "$work/sidekey.log" >&2; exit 1; }
base="http://$addr"

issue() {
  curl -sf -X POST "$base/v1/sessions" -H 'content-type: application/json' \
    -d '{"secret_key_id":"openai-prod","ttl_seconds":3600}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

status=0
# The session holder's run leaves out `DELETE /v1/session`, which would revoke the token under it; that
# operation gets a run (and a token) of its own.
for role in session session-revoke admin; do
  case "$role" in
    session) credential="$(issue)" filter=(--exclude-operation-id revoke_session) ;;
    session-revoke) credential="$(issue)" filter=(--include-operation-id revoke_session) ;;
    admin) credential="$admin_token" filter=() ;;
  esac
  echo "== schemathesis as the $role"
  # From the temporary directory: schemathesis keeps its example cache (`.schemathesis/`) in the current one.
  # shellcheck disable=SC2086
  (cd "$work" && st --config-file "$here/schemathesis.toml" run "$base/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $credential" \
    "${filter[@]}" \
    --report junit --report-dir "$work/report-$role" \
    ${SCHEMATHESIS_ARGS:-}) || status=1
done
if grep -q '"level":"ERROR"' "$work/sidekey.log"; then
  echo "sidekey logged errors while fuzzed:" >&2
  grep '"level":"ERROR"' "$work/sidekey.log" | head -20 >&2
  status=1
fi
exit $status
