#!/usr/bin/env bash
# Proxy overhead on loopback: wrk against a local upstream (nginx) directly, then through sidekey's
# `/v1/proxy/bench/…` with a session token, in one run. nginx (one worker) and sidekey (one tokio worker)
# share core 0, as they would share a small box; wrk runs on core 1.
#
#   bash bench/proxy.sh                         # 10 s per measurement, 1, 32 and 64 connections
#   DURATION=30s CONNECTIONS="1 64" bash bench/proxy.sh
#
# Needs: wrk, nginx (Debian packages `wrk`, `nginx`; installed if missing and apt-get is usable), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"1 32 64"}
SIDEKEY_PORT=${SIDEKEY_PORT:-18490}
NGINX_PORT=${NGINX_PORT:-18491}
SERVER_CORE=0
LOAD_CORE=1

# wrk and nginx, the work directory, the release build, wait_for and measure.
source bench/common.sh

# The upstream: a small JSON answer to any method, as an LLM API's cheapest call (`GET /v1/models`).
start_nginx "keepalive_requests 1000000; client_body_buffer_size 16k;" \
  "location / { default_type application/json; return 200 '{\"object\":\"list\",\"data\":[]}'; }"

cat >"$work/sidekey.toml" <<CONF
[[upstreams]]
name = "bench"
base_url = "http://127.0.0.1:$NGINX_PORT"
allowed_secret_key_ids = ["bench-key"]
CONF
# warn-level logs: the per-request "proxied" line would measure the terminal.
SIDEKEY_SECRET_BENCH_KEY=sk-bench-not-a-real-key SIDEKEY_LOG=warn TOKIO_WORKER_THREADS=1 \
  taskset -c $SERVER_CORE target/release/sidekey serve --config "$work/sidekey.toml" \
  --listen 127.0.0.1:$SIDEKEY_PORT >"$work/sidekey.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$SIDEKEY_PORT/healthz"
TOKEN=$(curl -fs -X POST "http://127.0.0.1:$SIDEKEY_PORT/v1/sessions" -H 'content-type: application/json' \
  -d '{"secret_key_id":"bench-key"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')

# A chat completion request of about 1 KiB.
python3 - "$work/post.lua" <<'PY'
import json, sys
messages = [{"role": "user", "content": "Summarise the following paragraph. " + "lorem ipsum " * 70}]
body = json.dumps({"model": "gpt-4o-mini", "messages": messages})
with open(sys.argv[1], "w") as out:
    out.write('wrk.method = "POST"\n')
    out.write("wrk.body = " + json.dumps(body) + "\n")
    out.write('wrk.headers["Content-Type"] = "application/json"\n')
PY


printf '%-36s %5s %10s %9s %9s %8s\n' scenario conns req/s p50_ms p99_ms non2xx
report() { # name connections result...
  printf '%-36s %5s %10s %9s %9s %8s\n' "$1" "$2" $3 $4 $5 "${6:-0}"
}
direct="http://127.0.0.1:$NGINX_PORT/v1/models"
proxied="http://127.0.0.1:$SIDEKEY_PORT/v1/proxy/bench/v1/models"
for c in $CONNECTIONS; do
  report "direct GET /v1/models" "$c" $(measure "$c" "$direct")
  report "sidekey GET /v1/proxy/bench/v1/models" "$c" $(measure "$c" "$proxied" -H "Authorization: Bearer $TOKEN")
  report "direct POST 1 KiB" "$c" $(measure "$c" "$direct" -s "$work/post.lua")
  report "sidekey POST 1 KiB" "$c" \
    $(measure "$c" "$proxied" -s "$work/post.lua" -H "Authorization: Bearer $TOKEN")
done
echo "sidekey RSS after the run: $(ps -o rss= -p "${pids[1]}") KiB"
