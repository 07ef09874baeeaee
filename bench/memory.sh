#!/usr/bin/env bash
# Start-up time, idle memory, and resident memory per live session (in-memory store), release build.
#
#   bash bench/memory.sh                       # start-up ×20, then 100k and 1M sessions
#   STARTS=50 SESSIONS="100000 1000000" bash bench/memory.sh
#   SHAPE=full SESSIONS=100000 bash bench/memory.sh   # each session at its largest: metadata at
#                                                     # session.max_metadata_bytes, scope and limits
#
# Start-up: from exec to the first 200 of /readyz, polled every millisecond (so up to 1 ms late).
# Idle memory: VmRSS one second after ready, nothing issued. Per session: sessions are issued with wrk
# (one thread, 64 connections, stopping at the count), then (VmRSS - idle VmRSS) / sessions_live.
#
# Needs: wrk (Debian package, installed if missing), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

STARTS=${STARTS:-20}
SESSIONS=${SESSIONS:-"100000 1000000"}
SIDEKEY_PORT=${SIDEKEY_PORT:-18470}
SERVER_CORE=0
LOAD_CORE=1
DURATION=1s # unused here; common.sh's measure() wants it set

source bench/common.sh

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

echo "start-up to ready (ms, $STARTS starts), and idle resident memory (KiB):"
python3 - "$STARTS" "$SIDEKEY_PORT" <<'PY'
import http.client, os, statistics, subprocess, sys, time
starts, port = int(sys.argv[1]), int(sys.argv[2])
env = dict(os.environ, SIDEKEY_SECRET_BENCH_KEY="sk-bench-not-a-real-key", SIDEKEY_LOG="warn")
times, idle = [], []
for _ in range(starts):
    began = time.monotonic()
    server = subprocess.Popen(["target/release/sidekey", "serve", "--listen", f"127.0.0.1:{port}"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        if time.monotonic() - began > 10:
            sys.exit("not ready within 10 s")
        time.sleep(0.001)
    times.append((time.monotonic() - began) * 1000)
    time.sleep(1)
    with open(f"/proc/{server.pid}/status") as status:
        idle.append(int(next(line for line in status if line.startswith("VmRSS:")).split()[1]))
    server.terminate()
    server.wait()
print(f"  start-up ms: median {statistics.median(times):.1f}  min {min(times):.1f}  max {max(times):.1f}")
print(f"  idle RSS KiB: median {statistics.median(idle):.0f}  min {min(idle)}  max {max(idle)}")
PY

# SHAPE=full: 8 metadata entries of 2 + 250 bytes (2016 of the 2048 bytes session.max_metadata_bytes
# allows by default), four scope rules and four limits: the most a session can hold.
if [ "${SHAPE:-bare}" = full ]; then
  ISSUE_BODY=$(python3 -c 'import json
print(json.dumps({"secret_key_id": "bench-key",
  "metadata": {f"k{i}": chr(97 + i) * 250 for i in range(8)},
  "scope": {"upstreams": ["bench"], "routes": ["POST /v1/chat/completions"], "models": ["gpt-4o-mini"],
            "origins": ["https://chat.example.com"]},
  "limits": {"max_requests": 1000, "requests_per_minute": 60, "max_tokens": 100000,
             "max_output_tokens_per_request": 2048}}))')
  cat >"$work/sidekey.toml" <<CONF
[http]
issue_per_client_per_minute = 0
[[upstreams]]
name = "bench"
base_url = "http://127.0.0.1:9"
allowed_secret_key_ids = ["bench-key"]
[limits.ceiling]
max_requests = 1000
requests_per_minute = 60
max_tokens = 100000
max_output_tokens_per_request = 2048
CONF
  CONFIG_ARGS=(--config "$work/sidekey.toml")
else
  ISSUE_BODY='{"secret_key_id":"bench-key"}'
  # One client issues every session: the per-client issuance limit would refuse most of them.
  printf '[http]\nissue_per_client_per_minute = 0\n' >"$work/sidekey.toml"
fi
CONFIG_ARGS=(--config "$work/sidekey.toml")

cat >"$work/issue_n.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$ISSUE_BODY]]
wrk.headers["Content-Type"] = "application/json"
local count, limit = 0, tonumber(os.getenv("ISSUE_COUNT"))
response = function(status, headers, body)
  count = count + 1
  if count >= limit then wrk.thread:stop() end
end
LUA

SIDEKEY_SECRET_BENCH_KEY=sk-bench-not-a-real-key SIDEKEY_LOG=warn \
  taskset -c $SERVER_CORE target/release/sidekey serve "${CONFIG_ARGS[@]}" --listen 127.0.0.1:$SIDEKEY_PORT >"$work/sidekey.log" 2>&1 &
pid=$!
pids+=($pid)
wait_for "http://127.0.0.1:$SIDEKEY_PORT/readyz"
sleep 1
idle=$(rss_kib $pid)
echo "resident memory per live session (SHAPE=${SHAPE:-bare}: $(printf %s "$ISSUE_BODY" | wc -c)-byte issuance body):"
live_sessions() { curl -fs "http://127.0.0.1:$SIDEKEY_PORT/metrics" | awk '/^sidekey_sessions_live / {print $2}'; }
issued=0
for target in $SESSIONS; do
  # wrk stops issuing at the count but runs out its duration: stop it once the store has them all.
  ISSUE_COUNT=$((target - issued)) taskset -c $LOAD_CORE wrk -t1 -c64 -d600s -s "$work/issue_n.lua" \
    "http://127.0.0.1:$SIDEKEY_PORT/v1/sessions" >/dev/null &
  load=$!
  until [ "$(live_sessions)" -ge "$target" ]; do sleep 0.2; done
  kill $load; wait $load 2>/dev/null || true
  live=$(live_sessions)
  issued=$live
  rss=$(rss_kib $pid)
  awk -v live="$live" -v rss="$rss" -v idle="$idle" 'BEGIN {
    printf "  %9d sessions: RSS %d KiB (idle %d KiB): %.0f bytes per session\n", live, rss, idle, (rss - idle) * 1024 / live }'
done
