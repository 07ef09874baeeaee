#!/usr/bin/env bash
# The deployment examples' tools (`cargo test -p sidekey --test examples`, examples/README.md): Node to run
# the tests, Debian's nginx, systemd-analyze, and kubernetes-validate. Installs only what is missing.
set -euo pipefail

need_packages=()
command -v node >/dev/null 2>&1 || need_packages+=(nodejs npm)
[ -x /usr/sbin/nginx ] || need_packages+=(nginx-light)
command -v systemd-analyze >/dev/null 2>&1 || need_packages+=(systemd)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "== installing ${need_packages[*]}"
  # The nginx package would start a system nginx on port 80: the tests start their own, unprivileged.
  added_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && added_policy=1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >/dev/null
  [ -z "$added_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# The version whose schemas include the Kubernetes release the manifest is validated against (1.37).
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "== installing kubernetes-validate"
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
