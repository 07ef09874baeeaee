// Runs every example test: `SIDEKEY_BIN=target/debug/sidekey node examples/test/run.mjs`.
// (`cargo test -p sidekey --test examples` does the same with the binary it builds.)

import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
// Only the tests: `node --test DIR` on Node 20 would also run support.mjs as a test file.
const files = readdirSync(here)
  .filter((name) => name.endsWith(".test.mjs"))
  .map((name) => join(here, name));
const result = spawnSync(process.execPath, ["--test", "--test-timeout=120000", ...files], { stdio: "inherit" });
process.exit(result.status ?? 1);
