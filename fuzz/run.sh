#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20) with libFuzzer through cargo-fuzz, one worker,
# and fails if any target crashes. Installs cargo-fuzz when it is missing.
#
#   bash fuzz/run.sh          # 20 s per target (what CI runs)
#   bash fuzz/run.sh 600      # the 10-minute run recorded in docs/BENCHMARKS.md
#
# The machine has only a stable toolchain; cargo-fuzz needs `-Zsanitizer`, so RUSTC_BOOTSTRAP=1 lets
# stable rustc take the flag. Corpora grow in fuzz/corpus/<target> (not committed), starting from the
# committed fuzz/seeds/<target>; a crash leaves its input in fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET=${1:-20}
TARGETS=${TARGETS:-"token_parse json_bodies bridge_protocol usage_parsers"}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz >/dev/null
fi

cargo fuzz build -O >/dev/null
status=0
for target in $TARGETS; do
  mkdir -p "corpus/$target" "seeds/$target"
  log=$(mktemp)
  if cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    corp=$(grep -o 'corp: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    echo "$target: ${SECONDS_PER_TARGET} s, $runs runs, cov $cov, corpus $corp, no crash"
  else
    echo "$target: FAILED" >&2
    tail -40 "$log" >&2
    status=1
  fi
  rm -f "$log"
done
exit $status
