# Shared by the bench scripts (sourced, not run): tools, a work directory cleaned up on exit, the release
# build, and wrk measurement. Expects SERVER_CORE, LOAD_CORE and DURATION to be set by the caller.

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

# Starts nginx pinned to SERVER_CORE on 127.0.0.1:$NGINX_PORT, with the given http-level directives and
# location block, and waits until it answers.
start_nginx() { # "http directives" "location block"
  cat >"$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  $1
  server {
    listen 127.0.0.1:$NGINX_PORT;
    $2
  }
}
CONF
  taskset -c "$SERVER_CORE" "$NGINX" -c "$work/nginx.conf" -p "$work" &
  pids+=($!)
  wait_for "http://127.0.0.1:$NGINX_PORT/"
}

wait_for() { # url
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "timed out waiting for $1" >&2; return 1
}

# Prints "req/s p50_ms p99_ms non2xx" from wrk's --latency output.
measure() { # connections url [wrk args...]
  local connections=$1 url=$2; shift 2
  taskset -c "$LOAD_CORE" wrk -t1 -c"$connections" -d"$DURATION" --latency "$@" "$url" >"$work/wrk.out" 2>&1
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
