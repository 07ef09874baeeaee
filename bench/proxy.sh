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

need() { command -v "$1" >/dev/null 2>&1 || { [ -x "/usr/sbin/$1" ] && return 0; }; }
if ! need wrk || ! need nginx; then
  echo "installing wrk and nginx (Debian packages)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid" 2>/dev/null)" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p sidekey

wait_for() { # url
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "timed out waiting for $1" >&2; return 1
}

# The upstream: a small JSON answer to any method, as an LLM API's cheapest call (`GET /v1/models`).
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_buffer_size 16k;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { default_type application/json; return 200 '{"object":"list","data":[]}'; }
  }
}
CONF
taskset -c $SERVER_CORE "$NGINX" -c "$work/nginx.conf" -p "$work" &
pids+=($!)
wait_for "http://127.0.0.1:$NGINX_PORT/"

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

# Prints "req/s p50_ms p99_ms non2xx" from wrk's --latency output.
measure() { # connections url [wrk args...]
  local connections=$1 url=$2; shift 2
  taskset -c $LOAD_CORE wrk -t1 -c"$connections" -d"$DURATION" --latency "$@" "$url" >"$work/wrk.out" 2>&1
  python3 - "$work/wrk.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    m = re.search(r"^\s*" + label + r"%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errors = re.search(r"Socket errors:.*", text)
print(f"{rps:.0f} {ms('50'):.3f} {ms('99'):.3f} {bad.group(1) if bad else 0}{' ' + errors.group(0) if errors else ''}")
PY
}

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
