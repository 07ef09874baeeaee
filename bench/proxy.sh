#!/usr/bin/env bash
# Proxy overhead on loopback: wrk against a local upstream (nginx) directly, through nginx's own
# proxy_pass, then through sidekey's `/v1/proxy/bench/…` with a session token (plain, scoped and counted,
# metered), in one run. nginx (one worker) and sidekey (one tokio worker) share core 0, as they would
# share a small box; wrk runs on core 1.
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
# POST answers a chat completion with its usage, which the metered rows read and settle.
# The same nginx worker also serves NGINX_PROXY_PORT, a plain `proxy_pass` to that upstream over pooled
# keep-alive connections: the baseline for what any reverse proxy costs, in the same run.
NGINX_PROXY_PORT=${NGINX_PROXY_PORT:-18492}
start_nginx "keepalive_requests 1000000; client_body_buffer_size 16k;
  upstream llm { server 127.0.0.1:$NGINX_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PROXY_PORT;
    location / { proxy_pass http://llm; proxy_http_version 1.1; proxy_set_header Connection \"\";
                 proxy_set_header Authorization \"Bearer sk-bench-not-a-real-key\"; } }" \
  "location / { default_type application/json;
     if (\$request_method = POST) { return 200 '{\"id\":\"c\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":250,\"completion_tokens\":10,\"total_tokens\":260}}'; }
     return 200 '{\"object\":\"list\",\"data\":[]}'; }"

cat >"$work/sidekey.toml" <<CONF
[[upstreams]]
name = "bench"
base_url = "http://127.0.0.1:$NGINX_PORT"
allowed_secret_key_ids = ["bench-key"]
routes = ["GET /v1/models", "POST /v1/chat/completions"]
models = ["gpt-4o-mini"]
usage = "openai"
# No [limits.ceiling]: a session that asks for no limit then has none (with a ceiling, every session would
# get it as its limit), so the plain row is unlimited and unmetered, and the others ask for their own.
CONF
# warn-level logs: the per-request "proxied" line would measure the terminal.
SIDEKEY_SECRET_BENCH_KEY=sk-bench-not-a-real-key SIDEKEY_LOG=warn TOKIO_WORKER_THREADS=1 \
  taskset -c $SERVER_CORE target/release/sidekey serve --config "$work/sidekey.toml" \
  --listen 127.0.0.1:$SIDEKEY_PORT >"$work/sidekey.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$SIDEKEY_PORT/healthz"
issue() { # body → token
  curl -fs -X POST "http://127.0.0.1:$SIDEKEY_PORT/v1/sessions" -H 'content-type: application/json' \
    -d "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])'
}
# Unscoped: the checks of every request (token, upstream, allowlist, path, the upstream's routes).
TOKEN=$(issue '{"secret_key_id":"bench-key"}')
# Scoped and counted: route, model (the body is read), the per-minute rate and max_requests.
SCOPED_TOKEN=$(issue '{"secret_key_id":"bench-key","scope":{"routes":["GET /v1/models","POST /v1/chat/completions"],"models":["gpt-4o-mini"]},"limits":{"max_requests":1000000000,"requests_per_minute":1000000000}}')
# Metered as well: each POST reserves tokens and settles with the usage in the answer.
METERED_TOKEN=$(issue '{"secret_key_id":"bench-key","scope":{"models":["gpt-4o-mini"]},"limits":{"max_requests":1000000000,"requests_per_minute":1000000000,"max_tokens":1000000000000}}')

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
direct_chat="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
nginx_proxied="http://127.0.0.1:$NGINX_PROXY_PORT/v1/models"
nginx_proxied_chat="http://127.0.0.1:$NGINX_PROXY_PORT/v1/chat/completions"
proxied_chat="http://127.0.0.1:$SIDEKEY_PORT/v1/proxy/bench/v1/chat/completions"
for c in $CONNECTIONS; do
  report "direct GET /v1/models" "$c" $(measure "$c" "$direct")
  report "nginx proxy_pass GET" "$c" $(measure "$c" "$nginx_proxied")
  report "sidekey GET /v1/proxy/bench/v1/models" "$c" $(measure "$c" "$proxied" -H "Authorization: Bearer $TOKEN")
  report "sidekey GET, scoped and counted" "$c" \
    $(measure "$c" "$proxied" -H "Authorization: Bearer $SCOPED_TOKEN")
  report "direct POST 1 KiB" "$c" $(measure "$c" "$direct_chat" -s "$work/post.lua")
  report "nginx proxy_pass POST 1 KiB" "$c" $(measure "$c" "$nginx_proxied_chat" -s "$work/post.lua")
  report "sidekey POST 1 KiB" "$c" \
    $(measure "$c" "$proxied_chat" -s "$work/post.lua" -H "Authorization: Bearer $TOKEN")
  report "sidekey POST 1 KiB, scoped and counted" "$c" \
    $(measure "$c" "$proxied_chat" -s "$work/post.lua" -H "Authorization: Bearer $SCOPED_TOKEN")
  report "sidekey POST 1 KiB, metered" "$c" \
    $(measure "$c" "$proxied_chat" -s "$work/post.lua" -H "Authorization: Bearer $METERED_TOKEN")
done
echo "sidekey RSS after the run: $(ps -o rss= -p "${pids[1]}") KiB"
