#!/usr/bin/env bash
# WebSocket relay: round-trip latency per message (a 250-byte Realtime-style event) direct to an echo
# upstream and through sidekey's `/v1/proxy/realtime/…` (token as a subprotocol), and sidekey's resident
# memory per idle relayed socket (both its connections: client and upstream). The echo upstream (Python
# `websockets`) and sidekey (one tokio worker) share core 0; the client runs on core 1.
#
#   bash bench/websocket.sh                      # 5000 round trips each way, 2000 idle sockets
#   MESSAGES=20000 SOCKETS=5000 bash bench/websocket.sh
#
# Needs: python3 with `websockets` (python3 -m pip install websockets), curl, a release build
# (`cargo build --release -p sidekey`; CARGO_TARGET_DIR is honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

MESSAGES=${MESSAGES:-5000}
SOCKETS=${SOCKETS:-2000}
SIDEKEY_PORT=${SIDEKEY_PORT:-18590}
ECHO_PORT=${ECHO_PORT:-18591}
BIN=${CARGO_TARGET_DIR:-target}/release/sidekey
ulimit -n "$(ulimit -Hn)" || true

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p sidekey
taskset -c 0 python3 bench/websocket.py echo "$ECHO_PORT" &
pids+=($!)
cat >"$work/sidekey.toml" <<CONF
[[upstreams]]
name = "realtime"
base_url = "http://127.0.0.1:$ECHO_PORT"
allowed_secret_key_ids = ["bench-key"]
routes = ["GET /v1/realtime"]
CONF
SIDEKEY_SECRET_BENCH_KEY=sk-bench-not-a-real-key SIDEKEY_LOG=warn TOKIO_WORKER_THREADS=1 \
  taskset -c 0 "$BIN" serve --config "$work/sidekey.toml" --listen 127.0.0.1:$SIDEKEY_PORT \
  >"$work/sidekey.log" 2>&1 &
sidekey_pid=$!
pids+=($sidekey_pid)
for _ in $(seq 1 200); do curl -fs -o /dev/null "http://127.0.0.1:$SIDEKEY_PORT/healthz" && break; sleep 0.05; done
TOKEN=$(curl -fs -X POST "http://127.0.0.1:$SIDEKEY_PORT/v1/sessions" -H 'content-type: application/json' \
  -d '{"secret_key_id":"bench-key"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')
taskset -c 1 python3 bench/websocket.py measure "ws://127.0.0.1:$ECHO_PORT/v1/realtime" \
  "ws://127.0.0.1:$SIDEKEY_PORT/v1/proxy/realtime/v1/realtime" "$TOKEN" "$sidekey_pid" "$MESSAGES" "$SOCKETS"
