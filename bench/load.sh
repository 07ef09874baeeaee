#!/usr/bin/env bash
# Loopback HTTP load: sidekey (release build) against nginx answering `return 200` (the machine's ceiling),
# in one run. Each server is pinned to core 0 with one worker; wrk runs on core 1. Each row's ratio is to
# nginx measured just before it with the same wrk arguments. Two rows place the gap: hyper answering 200
# with no work (bench/ceiling, the HTTP library sidekey serves with) and sidekey's own GET /healthz
# (poem's routing and the middleware, no token; verify is answered before them).
#
#   bash bench/load.sh                    # 10 s per measurement
#   DURATION=30s CONNECTIONS="32 64" STORES="memory redis" bash bench/load.sh
#
# The Redis store uses REDIS_URL (default redis://127.0.0.1:6379, not pinned) under a fresh key prefix
# that the script deletes afterwards.
#
# Needs: wrk, nginx (Debian packages `wrk`, `nginx`; installed if missing and apt-get is usable), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-"32 64"}
SIDEKEY_PORT=${SIDEKEY_PORT:-18480}
NGINX_PORT=${NGINX_PORT:-18481}
HYPER_PORT=${HYPER_PORT:-18482}
ROTATING_TOKENS=${ROTATING_TOKENS:-10000}
STORES=${STORES:-"memory redis"}
SERVER_CORE=0
LOAD_CORE=1

# wrk and nginx, the work directory, the release build, wait_for and measure.
source bench/common.sh

start_nginx "" "location / { return 200; }"
cargo build --release -q --manifest-path bench/ceiling/Cargo.toml
taskset -c $SERVER_CORE bench/ceiling/target/release/hyper-ceiling 127.0.0.1:$HYPER_PORT &
hyper_pid=$!
pids+=($hyper_pid)
wait_for "http://127.0.0.1:$HYPER_PORT/"

# sidekey on the given store: one tokio worker on one core, warn-level logs (an audit line per issue
# would measure the terminal). Prints nothing; leaves its pid in $sidekey_pid.
start_sidekey() { # store-url prefix
  # wrk issues from one address far past the per-client issuance limit, which would answer 429s.
  printf '[http]\nissue_per_client_per_minute = 0\n' >"$work/sidekey.toml"
  SIDEKEY_SECRET_BENCH_KEY=sk-bench-not-a-real-key SIDEKEY_LOG=warn TOKIO_WORKER_THREADS=1 \
    SIDEKEY_STORE="$1" SIDEKEY_STORE_PREFIX="$2" \
    taskset -c $SERVER_CORE target/release/sidekey serve --config "$work/sidekey.toml" --listen 127.0.0.1:$SIDEKEY_PORT \
    >"$work/sidekey.log" 2>&1 &
  sidekey_pid=$!
  pids+=($sidekey_pid)
  wait_for "http://127.0.0.1:$SIDEKEY_PORT/healthz"
}

# Tokens: one for the single-token run, ROTATING_TOKENS for the rotating run (keep-alive, so this is quick).
issue_tokens() {
  python3 - "$SIDEKEY_PORT" "$ROTATING_TOKENS" "$work/tokens.txt" <<'PY'
import http.client, json, sys
port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
conn = http.client.HTTPConnection("127.0.0.1", port)
with open(path, "w") as out:
    for _ in range(count):
        conn.request("POST", "/v1/sessions", body='{"secret_key_id":"bench-key"}',
                     headers={"content-type": "application/json"})
        response = conn.getresponse()
        out.write(json.loads(response.read())["token"] + "\n")
PY
}

# The requests are formatted once, in init (where wrk has set the Host header): formatting one per
# request capped wrk itself at about 140k req/s, below both servers.
cat >"$work/rotate.lua" <<'LUA'
local requests = {}
init = function(args)
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    requests[#requests + 1] = wrk.format("GET", "/v1/auth/verify", { ["Authorization"] = "Bearer " .. line })
  end
end
local i = 0
request = function()
  i = (i % #requests) + 1
  return requests[i]
end
LUA
cat >"$work/issue.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"secret_key_id":"bench-key"}'
wrk.headers["Content-Type"] = "application/json"
LUA


# Every sidekey row is measured right after nginx answers the same wrk invocation (same headers, same
# Lua script, same method and body), and its ratio is to that nginx figure: wrk's own cost (a Lua
# request() per request when tokens rotate) weighs on both sides alike, and drift between rows cancels.
header='%-40s %5s %10s %8s %8s %7s %10s %9s %9s\n'
printf "$header" scenario conns req/s p50_ms p99_ms non2xx nginx_req/s rps/nginx p99/nginx
row() { # name connections req/s p50 p99 non2xx [nginx req/s nginx p99]
  local ratio="" p99_ratio=""
  if [ -n "${7:-}" ]; then
    ratio=$(awk -v a="$3" -v b="$7" 'BEGIN {printf "%.2f", a / b}')
    p99_ratio=$(awk -v a="$5" -v b="$8" 'BEGIN {printf "%.2f", a / b}')
  fi
  printf "$header" "$1" "$2" "$3" "$4" "$5" "${6:-0}" "${7:-}" "$ratio" "$p99_ratio"
}
paired() { # name connections port path [wrk args...]: nginx, then the server on port, same request
  local name=$1 c=$2 port=$3 path=$4
  shift 4
  local n_rps n_p50 n_p99 rps p50 p99 bad
  read -r n_rps n_p50 n_p99 _ < <(measure "$c" "http://127.0.0.1:$NGINX_PORT$path" "$@")
  read -r rps p50 p99 bad _ < <(measure "$c" "http://127.0.0.1:$port$path" "$@")
  row "$name" "$c" "$rps" "$p50" "$p99" "$bad" "$n_rps" "$n_p99"
}
for c in $CONNECTIONS; do
  row "nginx return 200" "$c" $(measure "$c" "http://127.0.0.1:$NGINX_PORT/")
  paired "hyper 200, no work (bench/ceiling)" "$c" "$HYPER_PORT" /
done
kill "$hyper_pid"; wait "$hyper_pid" 2>/dev/null || true
for store in $STORES; do
  case $store in
    memory) url=memory ;;
    redis) url=${REDIS_URL:-redis://127.0.0.1:6379} ;;
  esac
  prefix="bench-$(date +%s)-$RANDOM"
  start_sidekey "$url" "$prefix"
  issue_tokens
  TOKEN=$(head -n1 "$work/tokens.txt")
  for c in $CONNECTIONS; do
    [ "$store" = memory ] && paired "[$store] GET /healthz (no token)" "$c" "$SIDEKEY_PORT" /healthz
    paired "[$store] verify (one token)" "$c" "$SIDEKEY_PORT" /v1/auth/verify \
      -H "Authorization: Bearer $TOKEN"
    TOKENS_FILE="$work/tokens.txt" paired "[$store] verify ($ROTATING_TOKENS tokens)" "$c" "$SIDEKEY_PORT" / \
      -s "$work/rotate.lua"
    paired "[$store] issue (POST /v1/sessions)" "$c" "$SIDEKEY_PORT" /v1/sessions -s "$work/issue.lua"
  done
  echo "[$store] sidekey RSS after the run: $(ps -o rss= -p "$sidekey_pid") KiB"
  kill "$sidekey_pid"; wait "$sidekey_pid" 2>/dev/null || true
  if [ "$store" = redis ]; then
    # The run's sessions would otherwise live for an hour in a Redis that other runs share.
    redis-cli -u "$url" --scan --pattern "*$prefix*" | xargs -r -n 1000 redis-cli -u "$url" del >/dev/null
  fi
done
