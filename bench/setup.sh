#!/usr/bin/env bash
# Installs what the benchmarks need outside .venv. Keep additive: each tool guarded by its own check.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# bench/failover.py: HAProxy (the Debian package) for the side-by-side failover timing.
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  apt_install haproxy
fi

# bench/api.py: wrk (the Debian package), an efficient C load generator for the REST API figures.
if ! command -v wrk >/dev/null; then
  apt_install wrk
fi
