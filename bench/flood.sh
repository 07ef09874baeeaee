#!/usr/bin/env bash
# A flood of invalid tokens and oversize bodies from one client address, against a user's valid verifies
# from another: how much the flood slows the valid requests, with the failed-request limit on (the
# default, 20/s with a burst of 100) and off (rate 0), in one run.
#
#   bash bench/flood.sh                      # 10 s per measurement
#   DURATION=30s bash bench/flood.sh
#
# sidekey (release, one tokio worker) is pinned to core 0; both wrk processes run on core 1. The valid
# client uses 8 connections; the flood 64, alternating an unknown token (401) and a 64 KiB body (413).
# Client addresses come from `X-Forwarded-For` (loopback is a trusted proxy), so one machine plays both.
#
# Needs: wrk (Debian package, installed if missing), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
SIDEKEY_PORT=${SIDEKEY_PORT:-18460}
SERVER_CORE=0
LOAD_CORE=1

source bench/common.sh

cat >"$work/flood.lua" <<'LUA'
local body = string.rep("x", 64 * 1024)
local i = 0
request = function()
  i = i + 1
  if i % 2 == 0 then
    return wrk.format("GET", "/v1/auth/verify", {
      ["Authorization"] = "Bearer skt_0000000000000000000000000000000000000000000aaaaaa",
      ["X-Forwarded-For"] = "192.0.2.66" })
  end
  return wrk.format("POST", "/v1/sessions",
    { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = "192.0.2.66" }, body)
end
LUA

printf '%-34s %12s %9s %9s %8s\n' "valid verify (8 conns)" req/s p50_ms p99_ms non2xx
for rate in 20 0; do
  cat >"$work/sidekey.toml" <<TOML
[http]
trusted_proxies = ["127.0.0.1/32"]
failed_requests_per_second = $rate
TOML
  SIDEKEY_SECRET_BENCH_KEY=sk-bench-not-a-real-key SIDEKEY_LOG=warn TOKIO_WORKER_THREADS=1 \
    taskset -c $SERVER_CORE target/release/sidekey serve --config "$work/sidekey.toml" \
    --listen 127.0.0.1:$SIDEKEY_PORT >"$work/sidekey.log" 2>&1 &
  pid=$!
  pids+=($pid)
  wait_for "http://127.0.0.1:$SIDEKEY_PORT/readyz"
  TOKEN=$(curl -fs -X POST -H 'content-type: application/json' -d '{"secret_key_id":"bench-key"}' \
    "http://127.0.0.1:$SIDEKEY_PORT/v1/sessions" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  label="limit $rate/s"; [ "$rate" = 0 ] && label="limit off"
  valid() { measure 8 "http://127.0.0.1:$SIDEKEY_PORT/v1/auth/verify" \
    -H "Authorization: Bearer $TOKEN" -H "X-Forwarded-For: 198.51.100.10"; }
  printf '%-34s %12s %9s %9s %8s\n' "[$label] no flood" $(valid)
  taskset -c $LOAD_CORE wrk -t1 -c64 -d"$DURATION" -s "$work/flood.lua" \
    "http://127.0.0.1:$SIDEKEY_PORT" >"$work/flood.out" 2>&1 &
  flood=$!
  sleep 1
  printf '%-34s %12s %9s %9s %8s\n' "[$label] under the flood" $(valid)
  wait $flood || true
  flood_rps=$(awk '/Requests\/sec/ {print $2}' "$work/flood.out")
  echo "  the flood itself: $flood_rps req/s answered ($(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$work/flood.out" || echo 'all 2xx?'))"
  kill $pid; wait $pid 2>/dev/null || true
done
