#!/usr/bin/env bash
# Generates a TypeScript client from the committed document (openapi-typescript), type-checks the
# walkthrough against it (tsc --noEmit), then runs it against SIDEKEY_URL. Dependencies: `npm ci` here
# (.ci/api-tools.sh does it). The generated code goes to a temporary directory, never into the tree.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
[ -x "$here/node_modules/.bin/tsc" ] || { echo "run npm ci in $here first (bash .ci/api-tools.sh)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/walkthrough.ts" "$here/tsconfig.json" "$work/"
ln -s "$here/node_modules" "$work/node_modules"
echo '{"type": "module"}' >"$work/package.json"
"$here/node_modules/.bin/openapi-typescript" "$root/openapi/openapi.json" -o "$work/schema.d.ts" >/dev/null
(cd "$work" && "$here/node_modules/.bin/tsc" --noEmit -p tsconfig.json)
# Type-checked; now emitted (ES modules) and run.
(cd "$work" && "$here/node_modules/.bin/tsc" -p tsconfig.json --outDir out)
node "$work/out/walkthrough.js"
