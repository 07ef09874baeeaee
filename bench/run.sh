#!/usr/bin/env bash
# Every HTTP-level figure of docs/BENCHMARKS.md in one run, each sidekey figure next to its baseline:
#   load.sh    verify (one token, 10,000 rotating tokens) and issue, memory and Redis stores, against
#              nginx `return 200`, with the ratio;
#   proxy.sh   the proxy's added latency against calling the upstream directly;
#   memory.sh  start-up to ready, idle memory, resident memory per live session at 100k and 1M;
#   flood.sh   valid verifies under a flood of invalid tokens and oversize bodies, limit on and off.
#
#   bash bench/run.sh                 # about 10 minutes with the defaults
#   DURATION=30s bash bench/run.sh    # longer measurements (each script reads DURATION)
#
# Code-path figures come from criterion instead: `cargo bench -p sidekey-local --bench verify_path`.
# Needs: wrk and nginx (Debian packages, installed if missing), python3, curl; Redis at REDIS_URL
# (default redis://127.0.0.1:6379) for the Redis rows.
set -euo pipefail
cd "$(dirname "$0")"
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(uname -r), $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
for script in load proxy memory flood; do
  echo
  echo "## bench/$script.sh"
  bash "$script.sh"
done
