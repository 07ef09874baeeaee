#!/usr/bin/env bash
# CI: what the frontend suites need (bin/tests/frontend.rs runs them within `cargo test --workspace`):
# Node.js and npm, Debian's Chromium for the browser tests, and each suite's npm tree. Installs only
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v node >/dev/null 2>&1 || need_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || need_packages+=(npm)
[ -x /usr/bin/chromium ] || need_packages+=(chromium)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "== installing ${need_packages[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

# Small trees from the lockfiles: the openai SDK (both suites) and playwright-core (the browser tests;
# it downloads no browser).
for suite in clients/js examples/browser-chat; do
  if [ ! -d "$suite/node_modules" ]; then
    echo "== npm ci in $suite"
    npm ci --prefix "$suite" --no-audit --no-fund --loglevel=error
  fi
done
